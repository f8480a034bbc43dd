"""Repulsion terms of the Fast R-CNN loss (paper §2.3).

B = a positive proposal's predicted box, G = its target ground truth, R = the ground truth with the highest
IoU with the proposal after G. Only B carries a gradient; G and R are data.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

RepulsionKind = Literal["none", "repgt", "tnrl"]
_EPS = 1e-6


def _area(boxes: Tensor) -> Tensor:
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def intersection_area(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise intersection area of two (N, 4) box sets."""
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:], b[:, 2:])
    wh = (rb - lt).clamp(min=0)
    return wh[:, 0] * wh[:, 1]


def paired_iou(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise IoU of two (N, 4) box sets."""
    inter = intersection_area(a, b)
    return inter / (_area(a) + _area(b) - inter).clamp(min=_EPS)


def iog(a: Tensor, b: Tensor) -> Tensor:
    """IoG(A, B) = area(A ∩ B) / area(B), row-wise."""
    return intersection_area(a, b) / _area(b).clamp(min=_EPS)


def smooth_ln(x: Tensor, sigma: float = 1.0) -> Tensor:
    """Wang et al.'s Smooth_ln: -ln(1 - x) for x <= sigma, linear beyond. With sigma = 1 (the paper's value)
    it is -ln(1 - x) everywhere, so x is kept just below 1 to stay finite."""
    x = x.clamp(min=0.0, max=1.0 - _EPS)
    if sigma >= 1.0:
        return -torch.log1p(-x)
    linear = (x - sigma) / (1.0 - sigma) - torch.log(torch.tensor(1.0 - sigma, dtype=x.dtype))
    return torch.where(x <= sigma, -torch.log1p(-x), linear)


def truncated_normalized_overlap(pred: Tensor, target: Tensor, repulsion: Tensor) -> Tensor:
    """Eq. 4: (area(B∩R) - area(G∩R)) / (area(R) - area(G∩R)), truncated below at 0 (eq. 3).

    Defined as 0 when G contains R (the denominator vanishes): B can then only be pushed off R by leaving G.
    """
    g_and_r = intersection_area(target, repulsion).detach()
    denominator = _area(repulsion).detach() - g_and_r
    numerator = intersection_area(pred, repulsion) - g_and_r
    safe = denominator > _EPS
    ratio = numerator / torch.where(safe, denominator, torch.ones_like(denominator))
    return torch.where(safe, ratio.clamp(min=0.0), torch.zeros_like(ratio))


def repulsion_terms(
    kind: RepulsionKind, pred: Tensor, target: Tensor, repulsion: Tensor, sigma: float = 1.0
) -> Tensor:
    """Per-proposal repulsion values (before averaging over the positive proposals)."""
    target, repulsion = target.detach(), repulsion.detach()
    if kind == "repgt":
        return smooth_ln(iog(pred, repulsion), sigma)  # eq. 2
    if kind == "tnrl":
        return smooth_ln(truncated_normalized_overlap(pred, target, repulsion), sigma)  # eq. 3
    raise ValueError(f"unknown repulsion kind {kind!r}")
