"""Fast R-CNN box heads. `ConvBoxPredictor` is DeepACE's convolutional head (paper §2.1); `fc` heads are
torchvision's TwoMLPHead + FastRCNNPredictor (plain Faster R-CNN, the baseline of the paper's Table 3)."""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

from deepace.models.context import ContextTwoMLPHead
from deepace.models.low_rank import LowRankLinear


class ConvBoxPredictor(nn.Module):
    """Parallel classification and regression branches on a C×7×7 RoI feature.

    How we read §2.1:
    - classification: 3×3 conv stride 3 (7×7 -> 2×2), then 2×2 conv stride 1 (-> 1×1), "with identical
      channels and only fuse those channels at the end": both convolutions are depthwise (groups = C, C in
      and out), and a final linear layer fuses the channels into class scores. `depthwise=False` makes
      them ordinary C->C convolutions.
    - regression: four 3×3 stride-1 convolutions (padding 1, so "identical feature map sizes") with
      128, 32, 8 and 1 output channels; the 1×7×7 map is flattened and a linear layer gives the deltas.
    """

    def __init__(self, in_channels: int, num_classes: int, roi_size: int = 7, depthwise: bool = True) -> None:
        super().__init__()
        if roi_size != 7:
            raise ValueError("the paper's classification branch (3×3/3 then 2×2) expects 7×7 RoI features")
        groups = in_channels if depthwise else 1
        self.cls_branch = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, 3, stride=3, groups=groups),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, in_channels, 2, stride=1, groups=groups),
            nn.ReLU(inplace=True),
            nn.Flatten(),
        )
        self.cls_score = nn.Linear(in_channels, num_classes)
        reg_layers: list[nn.Module] = []
        channels = [in_channels, 128, 32, 8, 1]
        for i, (c_in, c_out) in enumerate(zip(channels, channels[1:], strict=False)):
            reg_layers.append(nn.Conv2d(c_in, c_out, 3, stride=1, padding=1))
            if i < len(channels) - 2:
                reg_layers.append(nn.ReLU(inplace=True))
        self.reg_branch = nn.Sequential(*reg_layers, nn.Flatten())
        self.bbox_pred = nn.Linear(roi_size * roi_size, num_classes * 4)
        for layer in (self.cls_score, self.bbox_pred):
            nn.init.normal_(layer.weight, std=0.01 if layer is self.cls_score else 0.001)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.cls_score(self.cls_branch(x)), self.bbox_pred(self.reg_branch(x))


def build_box_head(
    kind: str,
    in_channels: int,
    num_classes: int,
    roi_size: int = 7,
    depthwise: bool = True,
    representation_size: int = 1024,
    context: bool = False,
    fc6_rank: int | None = None,
) -> tuple[nn.Module, nn.Module]:
    """(box_head, box_predictor) for torchvision's RoIHeads; with `context` the fc head also reads the
    context half of a ContextRoIPool's features (context.py); with `fc6_rank` its first layer is a
    LowRankLinear of that rank (low_rank.py)."""
    if context and kind != "fc":
        raise ValueError("RoI context (model.roi_context) needs the fc box head")
    if fc6_rank is not None and kind != "fc":
        raise ValueError("a low-rank first layer (model.fc6_rank) needs the fc box head")
    if kind == "conv":
        return nn.Identity(), ConvBoxPredictor(in_channels, num_classes, roi_size, depthwise)
    if kind == "fc":
        head = (
            ContextTwoMLPHead(in_channels, roi_size, representation_size)
            if context
            else TwoMLPHead(in_channels * roi_size * roi_size, representation_size)
        )
        if fc6_rank is not None:
            head.fc6 = LowRankLinear(head.fc6.in_features, representation_size, fc6_rank)
        return head, FastRCNNPredictor(representation_size, num_classes)
    raise ValueError(f"unknown box head {kind!r} (conv | fc)")
