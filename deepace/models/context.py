"""RoI context: each box head also reads its box's surroundings (not in the paper).

Why: most false boxes lie inside one chromosome's box (one arm of a bent chromosome) or across two
touching ones, and the largest kind of miss is a chromosome whose box the heads scored like such a
fragment (BENCHMARKS.md, "Where the errors are", session 7). Whether a box holds a whole chromosome or a
piece of one is decided by what lies just outside it: an arm continues past its box's end, a chromosome
ends there. A 7×7 RoI feature of the box alone sees this only through the receptive field at its edges.

`ContextRoIPool` pools each box twice, as it is and enlarged by `scale` about its centre, and concatenates the
two, flattened; `ContextTwoMLPHead` is torchvision's TwoMLPHead whose first layer also reads the
context pooled on a 3×3 grid (with scale 2 its centre cell is about the box, the ring around it the
surroundings), through its own linear map. The coarse grid keeps the map small: 1.2 M weights per
head stage instead of 6.4 M at 7×7, so the shipped file stays under its 60 MB. The map starts at zero, so a
trained model given context starts out predicting exactly what it did without it, and fine-tuning learns
what the surroundings add.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.faster_rcnn import TwoMLPHead

CONTEXT_GRID = 3  # the context pooler's output size, K; the head's fc6_context reads C×K×K features

__all__ = ["ContextRoIPool", "ContextTwoMLPHead", "enlarge_boxes"]


def enlarge_boxes(boxes: Tensor, scale: float) -> Tensor:
    """(x1, y1, x2, y2) boxes scaled by `scale` about their centres."""
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) * (scale / 2)
    return torch.cat([centres - half, centres + half], dim=1)


class ContextRoIPool(nn.Module):
    """Each box's own features from `pool` (e.g. MultiScaleRoIAlign, C×S×S) and its surroundings' from
    `context_pool` (C×K×K, K small) over the box enlarged by `scale`, flattened and concatenated: (N,
    C·S² + C·K²). The enlarged box is pooled on the pyramid level its own size selects, usually a coarser
    one. The context is pooled straight to K×K (3×3 with 4×4 samples per bin in `DeepACE`: 144 samples
    per box, against 196 for a 7×7 grid averaged down, which session 9's fine-tune was trained with)."""

    def __init__(self, pool: nn.Module, context_pool: nn.Module, scale: float) -> None:
        super().__init__()
        if scale <= 1.0:
            raise ValueError(f"the context box must be larger than the box, got scale {scale}")
        self.pool = pool
        self.context_pool = context_pool
        self.scale = scale

    def forward(
        self, features: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> Tensor:
        own = self.pool(features, boxes, image_shapes)
        context = self.context_pool(features, [enlarge_boxes(b, self.scale) for b in boxes], image_shapes)
        return torch.cat([own.flatten(start_dim=1), context.flatten(start_dim=1)], dim=1)


class ContextTwoMLPHead(TwoMLPHead):
    """TwoMLPHead on the box's own C×S×S features (`fc6`, `fc7` as in torchvision, so a trained head's
    weights load unchanged) plus `fc6_context`, a zero-initialised linear map of the C×K×K context
    features (ContextRoIPool's second part), added before fc6's activation."""

    def __init__(
        self, channels: int, roi_size: int, representation_size: int, context_size: int = CONTEXT_GRID
    ) -> None:
        super().__init__(channels * roi_size * roi_size, representation_size)
        self.fc6_context = nn.Linear(channels * context_size * context_size, representation_size)
        nn.init.zeros_(self.fc6_context.weight)
        nn.init.zeros_(self.fc6_context.bias)

    def forward(self, x: Tensor) -> Tensor:
        own, context = x[:, : self.fc6.in_features], x[:, self.fc6.in_features :]
        return F.relu(self.fc7(F.relu(self.fc6(own) + self.fc6_context(context))))
