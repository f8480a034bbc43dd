"""Soft-NMS (Bodla et al., ICCV 2017): decay the scores of overlapping boxes instead of deleting them.

torchvision has hard NMS only. The paper (§2.1, §3.2) uses Soft-NMS after the RPN and NMS + Soft-NMS after
Fast R-CNN so that a chromosome hidden behind its neighbour is not deleted outright.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
from torchvision.ops import box_iou

SoftNMSMethod = Literal["linear", "gaussian"]


def soft_nms(
    boxes: Tensor,
    scores: Tensor,
    method: SoftNMSMethod = "gaussian",
    iou_threshold: float = 0.5,
    sigma: float = 0.5,
    score_threshold: float = 1e-3,
    max_output: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Return (indices kept, in picking order; their decayed scores).

    linear:   s_i <- s_i * (1 - IoU(M, b_i))   when IoU(M, b_i) >= iou_threshold
    gaussian: s_i <- s_i * exp(-IoU(M, b_i)^2 / sigma)
    Boxes whose decayed score falls below score_threshold are dropped. The IoU matrix is computed once;
    each pick is one vectorised update, so the loop runs at most `max_output` times.
    """
    if method not in ("linear", "gaussian"):
        raise ValueError(f"unknown Soft-NMS method {method!r}")
    n = boxes.shape[0]
    if n == 0:
        return boxes.new_zeros((0,), dtype=torch.long), scores.new_zeros((0,))
    ious = box_iou(boxes, boxes)
    current = scores.clone()
    alive = torch.ones(n, dtype=torch.bool, device=boxes.device)
    keep: list[int] = []
    kept_scores: list[Tensor] = []
    limit = n if max_output is None else min(n, max_output)
    neg_inf = torch.tensor(float("-inf"), device=scores.device, dtype=scores.dtype)
    while len(keep) < limit:
        masked = torch.where(alive, current, neg_inf)
        best = int(torch.argmax(masked))
        if not bool(alive[best]) or float(current[best]) < score_threshold:
            break
        keep.append(best)
        kept_scores.append(current[best])
        alive[best] = False
        iou = ious[best]
        if method == "linear":
            decay = torch.where(iou >= iou_threshold, 1.0 - iou, torch.ones_like(iou))
        else:
            decay = torch.exp(-(iou * iou) / sigma)
        current = torch.where(alive, current * decay, current)
        alive &= current >= score_threshold
    if not keep:
        return boxes.new_zeros((0,), dtype=torch.long), scores.new_zeros((0,))
    return torch.tensor(keep, dtype=torch.long, device=boxes.device), torch.stack(kept_scores)
