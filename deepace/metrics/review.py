"""What reviewing the flagged boxes buys: counts after a cytologist has checked the low-confidence ones.

`deepace count` and the review page flag each detection whose score lies in a band around the counting
threshold, [t − m, t + m). A reviewer who checks exactly those boxes keeps each one that is a chromosome
no higher-scored box has already claimed and deletes the others; the boxes above the band stay as they
are, and chromosomes with no box in or above the band stay missed. Which flagged boxes are chromosomes is
decided with the paper's matching at IoU 0.5 (metrics.detection.match_image), so this measures the model's
flags, not a reviewer's skill: how many boxes a cell asks to check, and how many cells are counted right
once they are checked.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from deepace.metrics.counting import count_accuracy
from deepace.metrics.detection import match_image


def reviewed_count(
    gt_boxes: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    score_threshold: float,
    margin: float,
    iou_threshold: float = 0.5,
) -> tuple[int, int]:
    """(count after the flagged boxes are checked, number of flagged boxes) for one cell."""
    low, high = max(0.0, score_threshold - margin), score_threshold + margin
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    considered = scores >= np.float32(low)
    tp, sorted_scores, _, _ = match_image(
        gt_boxes, np.asarray(boxes)[considered], scores[considered], iou_threshold
    )
    flagged = sorted_scores < np.float32(high)
    return int((~flagged).sum() + (flagged & tp).sum()), int(flagged.sum())


def review_effect(
    gt_boxes: Sequence[np.ndarray],
    predictions: Sequence[tuple[np.ndarray, np.ndarray]],
    score_thresholds: Sequence[float],
    expected: Sequence[int | None],
    margins: Sequence[float],
) -> dict[str, dict[str, float | None]]:
    """Per band half-width m: flagged boxes per cell (mean and median), count accuracy after review
    (`count_accuracy`'s exact, within1, mae, bias; m = 0 flags nothing: the model's own counts), and how
    often the model's own count is right on the cells with no flagged box and on the others
    ("unflagged_cells", "unflagged_exact", "unflagged_within1", "flagged_exact", "flagged_within1"): what
    a cell without flags tells the reviewer, whether or not they check anything."""
    own = [
        int((np.asarray(scores, dtype=np.float32) >= np.float32(threshold)).sum())
        for (_boxes, scores), threshold in zip(predictions, score_thresholds, strict=True)
    ]
    effect = {}
    for margin in margins:
        counts, flagged = [], []
        for gt, (boxes, scores), threshold in zip(gt_boxes, predictions, score_thresholds, strict=True):
            count, n_flagged = reviewed_count(gt, boxes, scores, threshold, margin)
            counts.append(count)
            flagged.append(n_flagged)
        accuracy = count_accuracy(counts, expected)
        unflagged = [n == 0 for n in flagged]
        quiet = count_accuracy(*_where(unflagged, own, expected))
        loud = count_accuracy(*_where([not u for u in unflagged], own, expected))
        effect[f"{margin:g}"] = {
            "flagged_mean": float(np.mean(flagged)) if flagged else None,
            "flagged_median": float(np.median(flagged)) if flagged else None,
            **{key: accuracy[key] for key in ("exact", "within1", "mae", "bias")},
            "unflagged_cells": quiet["n"],
            "unflagged_exact": quiet["exact"],
            "unflagged_within1": quiet["within1"],
            "flagged_exact": loud["exact"],
            "flagged_within1": loud["within1"],
        }
    return effect


def _where(
    mask: Sequence[bool], counts: Sequence[int], expected: Sequence[int | None]
) -> tuple[list[int], list[int | None]]:
    chosen = [i for i, keep in enumerate(mask) if keep]
    return [counts[i] for i in chosen], [expected[i] for i in chosen]
