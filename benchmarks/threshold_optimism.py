"""How optimistic is a count accuracy whose threshold was calibrated on the cells it is scored on?

The shipped model's counting thresholds are calibrated on the validation splits (`deepace export
--calibrate-on`), and BENCHMARKS.md quotes count accuracy on those same splits. Here each fold of the cells
is counted at the threshold that counts the *other* folds best (`tune_score_threshold`, the rule the
calibration uses), so no cell's count depends on its own ground truth; the in-sample figure is beside it.
Intervals are Wilson 95% (`count_accuracy`).

    python benchmarks/threshold_optimism.py --gt ~/deepace-runs/data/taichung/val.json \
        --pred ~/deepace-runs/eval_hfrep/taichung.pred.json --folds 2 --folds 10
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from deepace.data.coco import read_coco
from deepace.data.predictions import match_predictions, read_predictions
from deepace.metrics import count_accuracy, expected_counts
from deepace.metrics.threshold import tune_score_threshold


def cross_calibrated_counts(
    scores: list[np.ndarray], expected: list[int], folds: int, seed: int = 0
) -> tuple[list[int], list[float]]:
    """Each cell's count at the threshold tuned on the other folds (cells assigned to folds at random),
    and the threshold each fold got."""
    order = np.random.default_rng(seed).permutation(len(scores))
    fold_of = np.empty(len(scores), dtype=int)
    fold_of[order] = np.arange(len(scores)) % folds
    counts = [0] * len(scores)
    thresholds = []
    for k in range(folds):
        others = np.where(fold_of != k)[0]
        threshold, _ = tune_score_threshold([scores[i] for i in others], [expected[i] for i in others])
        thresholds.append(threshold)
        for i in np.where(fold_of == k)[0]:
            counts[i] = int((scores[i] >= threshold).sum())
    return counts, thresholds


def describe(name: str, counts: list[int], expected: list[int]) -> str:
    c = count_accuracy(counts, expected)
    lo, hi = c["exact_ci95"]
    lo1, hi1 = c["within1_ci95"]
    return (
        f"| {name} | {c['exact']:.1f}% [{lo:.1f}–{hi:.1f}] | {c['within1']:.1f}% [{lo1:.1f}–{hi1:.1f}] | "
        f"{c['mae']:.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gt", type=Path, required=True)
    parser.add_argument("--pred", type=Path, required=True)
    parser.add_argument("--folds", type=int, action="append", default=None)
    parser.add_argument("--repeats", type=int, default=5, help="random fold assignments per fold count")
    args = parser.parse_args()
    records = read_coco(args.gt)
    matched, problems = match_predictions(records, read_predictions(args.pred))
    if any(p is None for p in matched):
        raise SystemExit("\n".join(problems))
    scores = [np.asarray(p.scores) for p in matched]
    expected = [int(e) for e in expected_counts(records)]
    print(f"{args.gt}: {len(records)} cells")
    print("| threshold | exact [95%] | ±1 [95%] | MAE |")
    print("|---|---|---|---|")
    threshold, _ = tune_score_threshold(scores, expected)
    in_sample = [int((s >= threshold).sum()) for s in scores]
    print(describe(f"tuned on these cells ({threshold:g})", in_sample, expected))
    for folds in args.folds or [2]:
        for seed in range(args.repeats):
            counts, thresholds = cross_calibrated_counts(scores, expected, folds, seed)
            spread = f"{min(thresholds):g}–{max(thresholds):g}"
            print(describe(f"{folds}-fold, assignment {seed} (thresholds {spread})", counts, expected))


if __name__ == "__main__":
    main()
