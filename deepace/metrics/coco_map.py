"""COCO box mAP@[.5:.95] and AP50 through pycocotools, for one class ("chromosome").

The COCO matching rule differs from the paper's (a detection takes the best *free* ground truth
with IoU >= t); these numbers are for comparison with other detectors, not for Table 3.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

import numpy as np

DEFAULT_MAX_DETS = 300
"""Detections kept per image (COCO's own default is 100; a metaphase can hold 90+ chromosomes)."""


def _xywh(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)


def _gt_dataset(gts: Sequence[np.ndarray]) -> dict:
    images, annotations = [], []
    for img_id, gt in enumerate(gts, start=1):
        images.append({"id": img_id})
        for x, y, w, h in _xywh(gt):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": img_id,
                    "category_id": 1,
                    "bbox": [float(x), float(y), float(w), float(h)],
                    "area": float(w * h),
                    "iscrowd": 0,
                }
            )
    return {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "chromosome"}]}


def _detections(preds: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[dict]:
    dets = []
    for img_id, (boxes, scores) in enumerate(preds, start=1):
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        for (x, y, w, h), s in zip(_xywh(boxes), scores, strict=True):
            dets.append(
                {
                    "image_id": img_id,
                    "category_id": 1,
                    "bbox": [float(x), float(y), float(w), float(h)],
                    "score": float(s),
                }
            )
    return dets


def coco_map(
    gts: Sequence[np.ndarray],
    preds: Sequence[tuple[np.ndarray, np.ndarray]],
    max_dets: int = DEFAULT_MAX_DETS,
) -> dict[str, float | None]:
    """{"mAP": AP@[.5:.95], "AP50": AP@.5} in percent (0-100); None when there is no ground truth."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if len(gts) != len(preds):
        raise ValueError(f"{len(gts)} ground-truth images but {len(preds)} prediction entries")
    if sum(len(np.asarray(g).reshape(-1, 4)) for g in gts) == 0:
        return {"mAP": None, "AP50": None}
    dets = _detections(preds)
    if not dets:
        return {"mAP": 0.0, "AP50": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = _gt_dataset(gts)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dets)
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        ev.params.maxDets = [1, 10, max_dets]
        ev.evaluate()
        ev.accumulate()
    # Read the precision table directly: summarize() hard-codes maxDets=100 for its first number.
    precision = ev.eval["precision"][:, :, 0, 0, -1]  # [IoU, recall, class, area "all", max_dets]
    at50 = precision[np.isclose(ev.params.iouThrs, 0.5)]
    return {"mAP": _mean_valid(precision), "AP50": _mean_valid(at50)}


def _mean_valid(precision: np.ndarray) -> float:
    valid = precision[precision > -1]
    return float(valid.mean()) * 100.0 if valid.size else 0.0
