"""Measuring a detector: the paper's AP/WCR/AER table, count accuracy and COCO mAP."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from deepace.data.predictions import ImagePrediction, match_predictions
from deepace.data.records import ImageRecord
from deepace.metrics.coco_map import coco_map
from deepace.metrics.count_chance import calibration, exact_chance
from deepace.metrics.counting import count_accuracy, share_interval
from deepace.metrics.detection import (
    PAPER_IOU_THRESHOLDS,
    at_or_above,
    average_precision,
    box_iou,
    counted_box_errors,
    evaluate_detections,
    iou_key,
    match_image,
)
from deepace.metrics.review import review_effect

__all__ = [
    "PAPER_IOU_THRESHOLDS",
    "at_or_above",
    "average_precision",
    "box_iou",
    "calibration",
    "coco_map",
    "count_accuracy",
    "counted_box_errors",
    "evaluate_detections",
    "evaluate_records",
    "exact_chance",
    "expected_counts",
    "iou_key",
    "match_image",
    "review_effect",
    "share_interval",
]

# Half-widths of the band of flagged scores around the threshold that `evaluate_records` reports the
# effect of reviewing for; 0.1 is what `deepace count` and the review page flag.
REVIEW_MARGINS = (0.1, 0.2, 0.3)

# What evaluate_records reports of count_accuracy, in this order.
COUNT_KEYS = ("exact", "within1", "mae", "bias", "n", "exact_ci95", "within1_ci95")

_EMPTY_BOXES = np.zeros((0, 4), dtype=np.float32)
_EMPTY_SCORES = np.zeros((0,), dtype=np.float32)


def expected_counts(records: Sequence[ImageRecord]) -> list[int]:
    """The reference count per image: its expected_count, or the number of its boxes when absent."""
    return [rec.count if rec.expected_count is None else int(rec.expected_count) for rec in records]


def _warn(message: str) -> None:
    warnings.warn(message, stacklevel=3)


def best_count_threshold(
    gt_records: Sequence[ImageRecord], matched: Sequence[ImagePrediction | None]
) -> float:
    """The score threshold (0.05…0.95 in steps of 0.025) at which the predictions paired with the records
    (`match_predictions`) count them best (`tune_score_threshold`)."""
    from deepace.metrics.threshold import tune_score_threshold

    scores = [_EMPTY_SCORES if p is None else p.scores for p in matched]
    return tune_score_threshold(scores, expected_counts(gt_records))[0]


def _count_chance(
    matched: Sequence[ImagePrediction | None], counts: Sequence[int], expected: Sequence[int]
) -> dict[str, Any]:
    """metrics.count_chance.calibration over the cells that have a prediction."""
    cells = [(p, c, e) for p, c, e in zip(matched, counts, expected, strict=True) if p is not None]
    return calibration([exact_chance(p.scores, c) for p, c, _ in cells], [c == e for _, c, e in cells])


def evaluate_records(
    gt_records: Sequence[ImageRecord],
    predictions: Sequence[ImagePrediction],
    score_threshold: float | None = None,
    on_warning: Callable[[str], None] | None = None,
    tune_threshold: bool = False,
) -> dict[str, Any]:
    """Everything `deepace evaluate --json` prints, for ground-truth records and predictions.

    Predictions are paired with records by resolved path, else by file name; a record without a
    prediction counts as all missed (FN, predicted count 0). score_threshold=None uses each
    prediction's own threshold. The count is compared with expected_count, or the number of
    ground-truth boxes where it is absent. Warnings go to on_warning (default: warnings.warn).

    Returns {"by_iou": {"0.5": {"AP", "WCR", "AER", "FP", "FN"}, ...},
             "count": {"exact", "within1", "mae", "bias", "n", "exact_ci95", "within1_ci95"},
             "coco": {"mAP", "AP50"},
             "review": {"0.1": {"flagged_mean", "flagged_median", "exact", ...}, ...},
             "count_chance": {"mean_chance", "exact", "auc", "bands", "n"}}, percentages 0-100;
    "review" is the count accuracy once the boxes flagged in a band t ± m are checked (metrics.review);
    "count_chance" how the model's own chance that each count is exact (metrics.count_chance) compares with
    the cells counted exactly.
    With `tune_threshold`, everything is counted at `best_count_threshold` (instead of `score_threshold`),
    returned as "tuned_threshold".
    """
    report = on_warning or _warn
    matched, messages = match_predictions(gt_records, predictions)
    for message in messages:
        report(message)
    if tune_threshold:
        score_threshold = best_count_threshold(gt_records, matched)

    gts = [rec.boxes for rec in gt_records]
    preds = [(_EMPTY_BOXES, _EMPTY_SCORES) if p is None else (p.boxes, p.scores) for p in matched]
    thresholds = [
        score_threshold if score_threshold is not None else (p.score_threshold if p is not None else 0.5)
        for p in matched
    ]
    counts = [0 if p is None else p.count_at(t) for p, t in zip(matched, thresholds, strict=True)]
    expected = expected_counts(gt_records)
    accuracy = count_accuracy(counts, expected)
    result = {
        "by_iou": evaluate_detections(gts, preds, PAPER_IOU_THRESHOLDS, thresholds),
        "count": {key: accuracy[key] for key in COUNT_KEYS},
        "coco": coco_map(gts, preds),
        "review": review_effect(gts, preds, thresholds, expected, REVIEW_MARGINS),
        "count_chance": _count_chance(matched, counts, expected),
    }
    if tune_threshold:
        result["tuned_threshold"] = score_threshold
    return result
