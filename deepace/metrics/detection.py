"""Detection metrics of the DeepACE paper (Xiao et al. 2019, §3.1): AP, WCR and AER per IoU threshold.

Matching rule, as the paper states it (it is NOT the COCO/VOC "best free ground truth" rule):
predictions are taken in falling score order; each prediction looks only at the ground truth with
which it has the highest IoU (ties: the lowest ground-truth index). It is a true positive when that
IoU is strictly greater than the threshold and that ground truth is not yet taken; otherwise it is a
false positive -- even if another, free ground truth also overlaps it by more than the threshold.
A ground truth taken by no prediction is a false negative. IoU exactly equal to the threshold is
not a match ("an IoU greater than the threshold").

Because a prediction only ever claims its best-IoU ground truth, the greedy loop reduces to:
a prediction is a TP iff its best IoU > t and it is the first (in score order) such prediction for
that ground truth. That is what `match_image` computes, without a Python loop.

Boxes are (x1, y1, x2, y2) in continuous pixel coordinates (area = (x2 - x1) * (y2 - y1), no +1),
the same convention as pycocotools.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PAPER_IOU_THRESHOLDS: tuple[float, ...] = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85)
"""The rows of the paper's Table 3."""


def iou_key(threshold: float) -> str:
    """The dictionary key for an IoU threshold: 0.5 -> "0.5", 0.55 -> "0.55"."""
    return f"{threshold:g}"


def _as_boxes(boxes: np.ndarray) -> np.ndarray:
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def box_area(boxes: np.ndarray) -> np.ndarray:
    b = _as_boxes(boxes)
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def box_intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection areas of (N, 4) and (M, 4) xyxy boxes -> (N, M) float64."""
    a, b = _as_boxes(a), _as_boxes(b)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    return wh[..., 0] * wh[..., 1]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (N, 4) and (M, 4) xyxy boxes -> (N, M) float64. Degenerate pairs give 0."""
    a, b = _as_boxes(a), _as_boxes(b)
    inter = box_intersection(a, b)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    out = np.zeros_like(inter)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def match_image(
    gt_boxes: np.ndarray, pred_boxes: np.ndarray, pred_scores: np.ndarray, iou_threshold: float
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Match one image's predictions to its ground truth with the paper's rule (see module doc).

    Returns (tp_flags, scores, n_fp, n_fn): boolean TP flags and the scores, both in falling score
    order (a stable sort, so equal scores keep their input order), the number of false positives
    and the number of false negatives.
    """
    gt = _as_boxes(gt_boxes)
    boxes = _as_boxes(pred_boxes)
    scores = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
    if len(boxes) != len(scores):
        raise ValueError(f"{len(boxes)} predicted boxes but {len(scores)} scores")
    order = np.argsort(-scores, kind="stable")
    boxes, scores = boxes[order], scores[order]

    tp = np.zeros(len(boxes), dtype=bool)
    if len(gt) and len(boxes):
        iou = box_iou(boxes, gt)
        best_gt = iou.argmax(axis=1)
        best_iou = iou[np.arange(len(boxes)), best_gt]
        candidates = np.flatnonzero(best_iou > iou_threshold)
        # First candidate (in score order) for each ground truth takes it; later ones are duplicates.
        _, first = np.unique(best_gt[candidates], return_index=True)
        tp[candidates[first]] = True
    n_tp = int(tp.sum())
    return tp, scores, len(boxes) - n_tp, len(gt) - n_tp


def average_precision(tp_flags: np.ndarray, scores: np.ndarray, n_gt: int) -> float | None:
    """VOC all-point interpolated AP (fraction 0-1) over the pooled detections; None when n_gt == 0.

    Detections are ranked by falling score with a stable sort (equal scores keep their input order).
    """
    if n_gt <= 0:
        return None
    tp_flags = np.asarray(tp_flags, dtype=bool).reshape(-1)
    if tp_flags.size == 0:
        return 0.0
    order = np.argsort(-np.asarray(scores, dtype=np.float64).reshape(-1), kind="stable")
    tp = tp_flags[order].astype(np.float64)
    ctp = np.cumsum(tp)
    cfp = np.cumsum(1.0 - tp)
    recall = ctp / n_gt
    precision = ctp / (ctp + cfp)
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # precision envelope
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def at_or_above(scores: np.ndarray, score_threshold: float) -> np.ndarray:
    """scores >= threshold, compared in float32 as the model produces them (so a score written as 0.7
    counts at threshold 0.7 although float32(0.7) < 0.7 in float64)."""
    return np.asarray(scores, dtype=np.float32) >= np.float32(score_threshold)


def counted_box_errors(
    gt_boxes: np.ndarray,
    pred_boxes: np.ndarray,
    pred_scores: np.ndarray,
    score_threshold: float,
    iou_threshold: float,
) -> int:
    """One image's false plus missed boxes among the detections scoring >= score_threshold (`at_or_above`),
    matched by `match_image`: the image's share of AER's numerator, for paired comparisons per cell."""
    keep = at_or_above(pred_scores, score_threshold)
    _, _, n_fp, n_fn = match_image(
        gt_boxes, np.asarray(pred_boxes).reshape(-1, 4)[keep], np.asarray(pred_scores)[keep], iou_threshold
    )
    return n_fp + n_fn


def _percent(num: float, den: float) -> float | None:
    return None if den <= 0 else 100.0 * num / den


def _per_image_thresholds(score_threshold: float | Sequence[float], n_images: int) -> np.ndarray:
    thr = np.asarray(score_threshold, dtype=np.float64).reshape(-1)
    if thr.size == 1:
        return np.full(n_images, thr[0])
    if thr.size != n_images:
        raise ValueError(f"{thr.size} score thresholds for {n_images} images")
    return thr


def evaluate_detections(
    gts: Sequence[np.ndarray],
    preds: Sequence[tuple[np.ndarray, np.ndarray]],
    iou_thresholds: Sequence[float] = PAPER_IOU_THRESHOLDS,
    score_threshold: float | Sequence[float] = 0.5,
) -> dict[str, dict[str, float | int | None]]:
    """AP, WCR, AER, FP and FN per IoU threshold over a set of images.

    gts: per image, the (N, 4) ground-truth boxes; preds: per image, (boxes (M, 4), scores (M,)).
    AP uses all detections, whatever their score. WCR, AER, FP and FN use only the detections
    scoring >= score_threshold (the count the user sees; one threshold, or one per image; compared
    in float32, see `at_or_above`):
    AER = (all FP + all FN) / all ground truths, WCR = share of images with no FP and no FN.
    Percentages are 0-100; a value with nothing to divide by (no images, no ground truth) is None.

    Returns {iou_key(t): {"AP", "WCR", "AER", "FP", "FN"}} in threshold order.
    """
    if len(gts) != len(preds):
        raise ValueError(f"{len(gts)} ground-truth images but {len(preds)} prediction entries")
    thresholds = _per_image_thresholds(score_threshold, len(gts))
    n_gt = sum(len(_as_boxes(g)) for g in gts)
    out: dict[str, dict[str, float | int | None]] = {}
    for t in iou_thresholds:
        all_tp, all_scores = [], []
        fp_total = fn_total = all_right = 0
        for gt, (boxes, scores), s_thr in zip(gts, preds, thresholds, strict=True):
            tp, sorted_scores, _, _ = match_image(gt, boxes, scores, t)
            all_tp.append(tp)
            all_scores.append(sorted_scores)
            # Kept detections are a prefix of the score order, so their flags are unchanged.
            kept = tp[at_or_above(sorted_scores, s_thr)]
            fp = int(len(kept) - kept.sum())
            fn = int(len(_as_boxes(gt)) - kept.sum())
            fp_total += fp
            fn_total += fn
            all_right += fp == 0 and fn == 0
        ap = average_precision(
            np.concatenate(all_tp) if all_tp else np.zeros(0, bool),
            np.concatenate(all_scores) if all_scores else np.zeros(0),
            n_gt,
        )
        out[iou_key(t)] = {
            "AP": None if ap is None else 100.0 * ap,
            "WCR": _percent(all_right, len(gts)),
            "AER": _percent(fp_total + fn_total, n_gt),
            "FP": fp_total,
            "FN": fn_total,
        }
    return out
