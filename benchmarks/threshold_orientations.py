"""Counting thresholds tuned on the validation cells as they lie, or on all eight orientations of them?

The counting threshold of each stain is tuned for exact counts on the validation cells as they are
(`--calibrate-on`). A cell's count depends on its orientation (BENCHMARKS.md, "Session 38: counting in
several orientations"), so a threshold tuned on one orientation of 37 DAPI cells may fit that orientation's
luck. This script detects each cell in its eight orientations (deepace/views.py), keeps every box's score,
and compares, over random halvings of the cells, a threshold tuned on one half as the cells lie with one
tuned on all eight orientations of that half, both scored on the other half in every orientation (a cell
under the camera in any orientation) and as it lies.

    python benchmarks/threshold_orientations.py --coco ~/deepace-runs/data/mfish/val.json \
        --save ~/deepace-runs/thresholds38/mfish.npz
    python benchmarks/threshold_orientations.py --coco ... --load ~/deepace-runs/thresholds38/mfish.npz

A faint fluorescence image's second pass (deepace/faint.py) is chosen at the model's own threshold, as
`deepace count` does; only the counting threshold varies here.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from deepace.data.coco import read_coco
from deepace.metrics import expected_counts
from deepace.metrics.threshold import tune_score_threshold
from deepace.views import ORIENTATIONS, oriented

Scores = list[list[np.ndarray]]  # [cell][orientation] -> that reading's box scores


def exact_share(
    scores: Scores, truth: np.ndarray, threshold: float, orientations: range | list[int]
) -> float:
    """Exact counts at `threshold` in % over every (cell, orientation) reading given."""
    right = [
        int((cell[o] >= threshold).sum()) == t
        for cell, t in zip(scores, truth, strict=True)
        for o in orientations
    ]
    return float(np.mean(right) * 100)


def tuned(scores: Scores, truth: np.ndarray, orientations: range | list[int]) -> float:
    """The exact-count threshold (deepace.metrics.threshold) over these cells' readings in `orientations`."""
    readings = [cell[o] for cell in scores for o in orientations]
    counts = [int(t) for t in truth for _ in orientations]
    return tune_score_threshold(readings, counts)[0]


def halvings(scores: Scores, truth: np.ndarray, repeats: int, seed: int = 0) -> dict[str, list[float]]:
    """Over `repeats` random halvings: thresholds tuned on one half (as it lies / all orientations), and
    the exact share they give on the other half (every orientation / as it lies)."""
    rng = np.random.default_rng(seed)
    every = range(len(scores[0]))
    scored_on = {"all": every, "as_is": [0]}
    out: dict[str, list[float]] = defaultdict(list)
    for _ in range(repeats):
        order = rng.permutation(len(scores))
        tune, test = order[: len(order) // 2], order[len(order) // 2 :]
        tune_scores, test_scores = [scores[i] for i in tune], [scores[i] for i in test]
        for tuned_on, orientations in (("as_is", [0]), ("all", every)):
            threshold = tuned(tune_scores, truth[tune], orientations)
            out[f"t_{tuned_on}"].append(threshold)
            for name, scored in scored_on.items():
                out[f"{tuned_on}_on_{name}"].append(exact_share(test_scores, truth[test], threshold, scored))
    return out


def detect_all(coco: Path, weights: Path | None, threads: int) -> Scores:
    from deepace.inference import Detector

    detector = Detector.load(weights, num_threads=threads, optimise=True)
    scores: Scores = []
    for record in read_coco(coco, check_images=False):
        raw, stain = detector.read(record.path)
        scores.append([detector.detect_read(oriented(raw, t, m), stain).scores for t, m in ORIENTATIONS])
    return scores


def save(path: Path, scores: Scores) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = {f"c{c}_o{o}": s for c, cell in enumerate(scores) for o, s in enumerate(cell)}
    np.savez_compressed(path, n_cells=len(scores), n_orientations=len(scores[0]), **flat)


def load(path: Path) -> Scores:
    data = np.load(path)
    cells, orientations = int(data["n_cells"]), int(data["n_orientations"])
    return [[data[f"c{c}_o{o}"] for o in range(orientations)] for c in range(cells)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coco", type=Path, required=True)
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--save", type=Path, default=None)
    parser.add_argument("--load", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=500)
    args = parser.parse_args()
    truth = np.array(expected_counts(read_coco(args.coco, check_images=False)))
    if args.load:
        scores = load(args.load)
    else:
        tic = time.perf_counter()
        scores = detect_all(args.coco, args.weights, args.threads)
        print(f"{(time.perf_counter() - tic) / (len(scores) * len(ORIENTATIONS)):.3f} s per reading")
        if args.save:
            save(args.save, scores)
    every = range(len(ORIENTATIONS))
    t0, t8 = tuned(scores, truth, [0]), tuned(scores, truth, every)
    print(
        f"{len(scores)} cells; tuned on all of them as they lie: threshold {t0:.3f} "
        f"(exact {exact_share(scores, truth, t0, [0]):.1f}% as they lie, "
        f"{exact_share(scores, truth, t0, every):.1f}% over the eight orientations)"
    )
    print(
        f"tuned on all eight orientations: threshold {t8:.3f} "
        f"(exact {exact_share(scores, truth, t8, [0]):.1f}% as they lie, "
        f"{exact_share(scores, truth, t8, every):.1f}% over the eight orientations)"
    )
    runs = halvings(scores, truth, args.repeats)
    print(
        f"{args.repeats} random halvings (tuned on one half, scored on the other), "
        "medians [5th–95th percentile]:"
    )
    for key, label in (
        ("t_as_is", "threshold tuned as they lie"),
        ("t_all", "threshold tuned on all orientations"),
        ("as_is_on_all", "exact, tuned as they lie, other half in every orientation"),
        ("all_on_all", "exact, tuned on all orientations, other half in every orientation"),
        ("as_is_on_as_is", "exact, tuned as they lie, other half as it lies"),
        ("all_on_as_is", "exact, tuned on all orientations, other half as it lies"),
    ):
        v = np.array(runs[key])
        print(f"  {label}: {np.median(v):.3f} [{np.percentile(v, 5):.3f}–{np.percentile(v, 95):.3f}]")
    gain = np.array(runs["all_on_all"]) - np.array(runs["as_is_on_all"])
    print(
        f"  paired gain over every orientation (all − as they lie): mean {gain.mean():+.2f} points, "
        f"better in {(gain > 0).mean() * 100:.0f}% of halvings, worse in {(gain < 0).mean() * 100:.0f}%"
    )


if __name__ == "__main__":
    main()
