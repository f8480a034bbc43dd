"""Feature maps handed to the RPN and RoI heads: the backbone's single stride-16 map (the paper, §2.1), or a
two-level feature pyramid (Lin et al., CVPR 2017) over the stride-8 and stride-16 maps.

Chromosomes in a ~1000-pixel spread are 30-130 pixels long and a few tens of pixels wide, so a stride-16
RoI of a short chromosome spans barely 2×2 cells. The pyramid's stride-8 level, given the stride-16
semantics by the top-down path, is what the RoI heads read for every box below 224 pixels
(torchvision's MultiScaleRoIAlign level mapping), i.e. for every chromosome.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork

from deepace.models.backbones import Backbone


class SingleMap(nn.Module):
    """The backbone's stride-16 map as torchvision's heads want it: an ordered dict of maps."""

    def __init__(self, body: Backbone) -> None:
        super().__init__()
        self.body = body
        self.out_channels = body.out_channels

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        return OrderedDict([("0", self.body(x))])


class TwoLevelPyramid(nn.Module):
    """{"0": P3 (stride 8), "1": P4 (stride 16)}, both with `out_channels` channels."""

    def __init__(self, body: Backbone, out_channels: int = 128) -> None:
        super().__init__()
        self.body = body
        self.out_channels = out_channels
        self.fpn = FeaturePyramidNetwork([body.stride8_channels, body.out_channels], out_channels)

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        stride8 = None
        for name, layer in self.body.named_children():
            x = layer(x)
            if name == self.body.stride8_layer:
                stride8 = x
        if stride8 is None:
            raise RuntimeError(f"backbone has no layer {self.body.stride8_layer!r}")
        return self.fpn(OrderedDict([("0", stride8), ("1", x)]))
