"""Box pairs that suppression cannot keep apart, for checking an annotation set.

Hard NMS at IoU t keeps one of any two boxes overlapping above t, so a cell with such a pair is miscounted
by even a perfect detector (BENCHMARKS.md, "What suppression allows"). Pixel-identical boxes are the
extreme case: two chromosomes given one box, or one chromosome annotated twice.
"""

from __future__ import annotations

import numpy as np

from deepace.metrics.detection import box_iou


def identical_box_pairs(boxes: np.ndarray) -> int:
    """How many boxes repeat an earlier box exactly."""
    boxes = np.asarray(boxes).reshape(-1, 4)
    return len(boxes) - len(np.unique(boxes, axis=0))


def largest_pair_iou(boxes: np.ndarray) -> float:
    """The highest IoU between two different boxes (0 with fewer than two)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) < 2:
        return 0.0
    iou = box_iou(boxes, boxes)
    np.fill_diagonal(iou, 0.0)
    return float(iou.max())
