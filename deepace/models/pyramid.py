"""Feature maps handed to the RPN and RoI heads: the backbone's single stride-16 map (the paper, §2.1), or a
two-level feature pyramid (Lin et al., CVPR 2017) over the backbone's finer maps.

Chromosomes in a ~1000-pixel spread are 30-130 pixels long and a few tens of pixels wide, so a stride-16
RoI of a short chromosome spans barely 2×2 cells. The pyramid's finer level, given the stride-16 semantics
by the top-down path, is what the RoI heads read for every box below 224 pixels (torchvision's
MultiScaleRoIAlign level mapping), i.e. for every chromosome. By default the levels are strides 8 and 16;
with ``finest_stride=4`` they are strides 4 and 8, and the stride-16 map only feeds the top-down path: a
chromosome ~15 pixels wide is then 4 cells wide instead of 2, which is where touching ones get apart.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork

from deepace.models.backbones import Backbone

FINEST_STRIDES = (4, 8)


class SingleMap(nn.Module):
    """The backbone's stride-16 map as torchvision's heads want it: an ordered dict of maps."""

    def __init__(self, body: Backbone) -> None:
        super().__init__()
        self.body = body
        self.out_channels = body.out_channels

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        return OrderedDict([("0", self.body(x))])


class TwoLevelPyramid(nn.Module):
    """{"0": P at `finest_stride`, "1": P at twice that}, both with `out_channels` channels."""

    def __init__(self, body: Backbone, out_channels: int = 128, finest_stride: int = 8) -> None:
        super().__init__()
        if finest_stride not in FINEST_STRIDES:
            raise ValueError(f"finest_stride must be one of {FINEST_STRIDES}, got {finest_stride}")
        self.body = body
        self.out_channels = out_channels
        taps = [(body.stride8_layer, body.stride8_channels)]
        if finest_stride == 4:
            taps.insert(0, (body.stride4_layer, body.stride4_channels))
        self.tap_layers = [name for name, _ in taps]
        self.fpn = FeaturePyramidNetwork([c for _, c in taps] + [body.out_channels], out_channels)

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        maps: OrderedDict[str, Tensor] = OrderedDict()
        for name, layer in self.body.named_children():
            x = layer(x)
            if name in self.tap_layers:
                maps[str(len(maps))] = x
        if len(maps) != len(self.tap_layers):
            raise RuntimeError(f"backbone lacks one of the layers {self.tap_layers}")
        maps[str(len(maps))] = x
        levels = self.fpn(maps)
        return OrderedDict((name, levels[name]) for name in ("0", "1"))
