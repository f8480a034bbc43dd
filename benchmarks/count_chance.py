"""Which cells to check first: the model's chance that a count is exact (deepace/metrics/count_chance.py)
against the number of flagged boxes (scores in [t − 0.1, t + 0.1), what `deepace count` and the review
page flag), as the area under the ROC curve with which each ranks the exactly counted cells first.

    python benchmarks/count_chance.py --gt ~/deepace-runs/data/taichung/val.json \
        --pred ~/deepace-runs/eval36/taichung.pred.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from deepace.data.coco import read_coco
from deepace.data.predictions import match_predictions, read_predictions
from deepace.metrics import calibration, expected_counts
from deepace.metrics.count_chance import ranking_auc

FLAG_MARGIN = 0.1


def flagged(scores: np.ndarray, threshold: float) -> int:
    """Boxes in the band [t − m, t + m) that `deepace count` and the review page flag (as
    metrics.review.reviewed_count bounds it, in float32)."""
    low, high = np.float32(max(0.0, threshold - FLAG_MARGIN)), np.float32(threshold + FLAG_MARGIN)
    return int(((scores >= low) & (scores < high)).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gt", type=Path, required=True)
    parser.add_argument("--pred", type=Path, required=True)
    args = parser.parse_args()
    records = read_coco(args.gt, check_images=False)
    matched, _ = match_predictions(records, read_predictions(args.pred))
    cells = [(p, e) for p, e in zip(matched, expected_counts(records), strict=True) if p is not None]
    right = [p.count == e for p, e in cells]
    flags = [flagged(p.scores, p.score_threshold) for p, _ in cells]
    chances = [p.exact_chance for p, _ in cells]
    table = calibration(chances, right)
    print(f"{len(cells)} cells, {sum(right)} counted exactly")
    print(f"AUC, the model's chance: {ranking_auc(chances, right):.3f}")
    print(f"AUC, fewer flagged boxes: {ranking_auc([-f for f in flags], right):.3f}")
    print(f"mean chance {table['mean_chance']:.1f}% against {table['exact']:.1f}% exact")
    for band in table["bands"]:
        exact = "-" if band["exact"] is None else f"{band['exact']:.1f}%"
        print(f"  chance {band['band'][0]:.0f}–{band['band'][1]:.0f}%: {band['cells']} cells, exact {exact}")
    order = np.argsort(-np.array(chances), kind="stable")
    top = np.zeros(len(cells), dtype=bool)
    top[order[: len(cells) // 4]] = True
    exact = np.array(right)
    surest, rest = exact[top].mean() * 100, exact[~top].mean() * 100
    print(f"the quarter it is surest of: exact {surest:.1f}%; the rest {rest:.1f}%")
    # a reviewer who checks only part of the cells: which share of the miscounted ones do they meet,
    # taking the least sure first (ties in the flag count broken by the image order)
    wrong = ~exact
    for share in (0.25, 0.5):
        k = int(round(len(cells) * share))
        by_chance = np.argsort(np.array(chances), kind="stable")[:k]
        by_flags = np.argsort(-np.array(flags), kind="stable")[:k]
        met_chance, met_flags = wrong[by_chance].sum() / wrong.sum(), wrong[by_flags].sum() / wrong.sum()
        print(
            f"checking the {share:.0%} least sure: {met_chance:.0%} of the miscounted cells by chance, "
            f"{met_flags:.0%} by flagged boxes, {share:.0%} at random"
        )
    no_flag = np.array(flags) == 0
    share = np.mean(np.array(right)[no_flag]) * 100 if no_flag.any() else float("nan")
    print(f"cells with no flagged box: {int(no_flag.sum())}, exact {share:.1f}%")


if __name__ == "__main__":
    main()
