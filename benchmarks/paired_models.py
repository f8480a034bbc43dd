"""Two models' predictions on the same annotated cells, compared cell by cell.

    python benchmarks/paired_models.py --gt ~/deepace-runs/data/taichung/val.json \\
        --pred old.pred.json --pred new.pred.json

Each model counts at its own threshold (the one in its prediction file, or --thresholds). Box errors (false
plus missed boxes, the paper's matching rule) per cell at each IoU, with the Wilcoxon signed-rank test of
the per-cell differences; exact counts, with the sign test on the cells only one model counts exactly; and
exact counts with each model's threshold tuned on these cells, and tuned on one half of the cells and
scored on the other (two folds), since a threshold tuned on the cells it is scored on flatters a model.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.stats import binomtest, wilcoxon

from deepace.data.coco import read_coco
from deepace.data.predictions import ImagePrediction, read_predictions
from deepace.data.records import ImageRecord
from deepace.metrics import expected_counts
from deepace.metrics.detection import counted_box_errors
from deepace.metrics.threshold import tune_score_threshold


def aligned(records: Sequence[ImageRecord], predictions: Sequence[ImagePrediction]) -> list[ImagePrediction]:
    """The predictions in the records' order (matched by image path)."""
    by_image = {Path(p.image): p for p in predictions}
    return [by_image[Path(r.path)] for r in records]


def box_errors(
    records: Sequence[ImageRecord], predictions: Sequence[ImagePrediction], threshold: float, iou: float
) -> np.ndarray:
    """Per cell, false plus missed boxes among the detections scoring at least `threshold`."""
    return np.array(
        [
            counted_box_errors(record.boxes, pred.boxes, pred.scores, threshold, iou)
            for record, pred in zip(records, predictions, strict=True)
        ]
    )


def exact_cells(
    predictions: Sequence[ImagePrediction], expected: Sequence[int], threshold: float
) -> np.ndarray:
    return np.array(
        [
            int((np.asarray(p.scores) >= threshold).sum()) == e
            for p, e in zip(predictions, expected, strict=True)
        ]
    )


def two_fold_exact(predictions: Sequence[ImagePrediction], expected: Sequence[int]) -> float:
    """Exact-count share (%) with the threshold tuned on the even cells and scored on the odd ones, and
    the other way round."""
    scores = [np.asarray(p.scores) for p in predictions]
    expected = np.asarray(expected)
    hits: list[bool] = []
    for fold in (0, 1):
        tune = [i for i in range(len(scores)) if i % 2 == fold]
        test = [i for i in range(len(scores)) if i % 2 != fold]
        threshold, _ = tune_score_threshold([scores[i] for i in tune], expected[tune])
        hits += [int((scores[i] >= threshold).sum()) == expected[i] for i in test]
    return float(np.mean(hits) * 100)


def compare(
    records: Sequence[ImageRecord],
    first: Sequence[ImagePrediction],
    second: Sequence[ImagePrediction],
    thresholds: tuple[float, float],
    ious: Sequence[float] = (0.5, 0.7, 0.85),
) -> dict:
    expected = expected_counts(records)
    result: dict = {"box_errors": {}}
    for iou in ious:
        a = box_errors(records, first, thresholds[0], iou)
        b = box_errors(records, second, thresholds[1], iou)
        differ = bool((a != b).any())
        result["box_errors"][iou] = {
            "first": int(a.sum()),
            "second": int(b.sum()),
            "fewer_in_second": int((b < a).sum()),
            "more_in_second": int((b > a).sum()),
            "p": float(wilcoxon(a, b).pvalue) if differ else 1.0,
        }
    a, b = exact_cells(first, expected, thresholds[0]), exact_cells(second, expected, thresholds[1])
    only_first, only_second = int((a & ~b).sum()), int((b & ~a).sum())
    discordant = only_first + only_second
    result["exact"] = {
        "first": float(a.mean() * 100),
        "second": float(b.mean() * 100),
        "only_first": only_first,
        "only_second": only_second,
        "p": float(binomtest(only_second, discordant).pvalue) if discordant else 1.0,
    }
    result["tuned_on_these_cells"] = [
        tune_score_threshold([np.asarray(p.scores) for p in preds], expected) for preds in (first, second)
    ]
    result["two_fold_exact"] = [two_fold_exact(preds, expected) for preds in (first, second)]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gt", type=Path, required=True)
    parser.add_argument("--pred", type=Path, action="append", required=True, help="twice: first, second")
    parser.add_argument("--thresholds", type=float, nargs=2, default=None)
    args = parser.parse_args()
    if len(args.pred) != 2:
        parser.error("give --pred twice")
    records = read_coco(args.gt)
    first, second = (aligned(records, read_predictions(p)) for p in args.pred)
    thresholds = (
        tuple(args.thresholds) if args.thresholds else (first[0].score_threshold, second[0].score_threshold)
    )
    r = compare(records, first, second, thresholds)
    print(f"{len(records)} cells; thresholds {thresholds[0]:.3f} (first), {thresholds[1]:.3f} (second)")
    for iou, e in r["box_errors"].items():
        print(
            f"box errors at IoU {iou}: {e['first']} → {e['second']}; fewer in {e['fewer_in_second']} cells, "
            f"more in {e['more_in_second']}; Wilcoxon p {e['p']:.2g}"
        )
    e = r["exact"]
    print(
        f"exact {e['first']:.1f}% → {e['second']:.1f}%; only the first {e['only_first']} cells, "
        f"only the second {e['only_second']}; sign test p {e['p']:.3f}"
    )
    (t1, x1), (t2, x2) = r["tuned_on_these_cells"]
    print(f"thresholds tuned on these cells: {t1:.3f} → {x1:.1f}%, {t2:.3f} → {x2:.1f}%")
    print(
        f"two folds (tuned on one half, scored on the other): {r['two_fold_exact'][0]:.1f}% → "
        f"{r['two_fold_exact'][1]:.1f}%"
    )


if __name__ == "__main__":
    main()
