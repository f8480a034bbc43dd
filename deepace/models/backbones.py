"""Stride-16 feature extractors for the Faster R-CNN detector.

Every backbone takes a ``(B, 3, H, W)`` float tensor of RGB in [0, 1] normalised with the torchvision
ImageNet mean/std (what ``torchvision.models.detection``'s transform does by default) and returns a
``(B, out_channels, ceil(H/16), ceil(W/16))``-ish map (``floor`` for the VGG max-pools).

=============  ============  ==============================================================  ======
name           out_channels  layers                                                          stages
=============  ============  ==============================================================  ======
vgg16          512           torchvision ``vgg16().features[:30]``: conv1_1 .. conv5_3 + ReLU  5
mobilenet_v2   320           ``mobilenet_v2().features[:18]``, stride-32 stage dilated         5
resnet18       256           ``resnet18()`` conv1 .. layer3                                    4
=============  ============  ==============================================================  ======

``trainable_layers`` counts trainable stages from the output end (torchvision's convention); the rest
are frozen (``requires_grad=False``). Default: 3 for vgg16 / mobilenet_v2 and 2 for resnet18 when
``weights`` are given, i.e. VGG conv1_x and conv2_x frozen as in the Faster R-CNN paper (Ren et al.),
ResNet stem + layer1 frozen as torchvision does; all stages trainable for a random init.
MobileNetV2 and ResNet use ``FrozenBatchNorm2d``: batches are 1-2 images, too few for batch statistics.

Weights files (nothing is ever downloaded): a torchvision state dict ``.pth``/``.pt`` (keys
``features.N.*`` or ``N.*`` for VGG/MobileNet, the plain resnet keys for ResNet; classifier/fc and
unused layers are ignored) or, for vgg16, an ``.onnx`` file holding the Keras ImageNet conv base
(see :mod:`deepace.models.onnx_vgg`; its caffe preprocessing is folded into conv1_1).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn
from torchvision.models import mobilenet_v2, resnet18
from torchvision.models.vgg import cfgs, make_layers
from torchvision.ops import FrozenBatchNorm2d

from deepace.models.onnx_vgg import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Backbone",
    "BackboneWeightsError",
    "available_backbones",
    "build_backbone",
]

OUTPUT_STRIDE = 16


class BackboneWeightsError(ValueError):
    """A weights file does not fit the requested backbone."""


class Backbone(nn.Sequential):
    """An ``nn.Sequential`` feature extractor with ``out_channels`` and ``stride`` attributes."""

    def __init__(
        self,
        layers: OrderedDict[str, nn.Module],
        out_channels: int,
        stages: list[list[str]],
        stride8: tuple[str, int],
        stride4: tuple[str, int],
    ):
        super().__init__(layers)
        self.out_channels = out_channels
        self.stride = OUTPUT_STRIDE
        self.stages = stages  # child names per stage, input end first; used for freezing
        # (child whose output is the last stride-8 map, its channels): the finer level of the pyramid.
        self.stride8_layer, self.stride8_channels = stride8
        self.stride4_layer, self.stride4_channels = stride4  # the last stride-4 map, likewise

    def freeze(self, trainable_layers: int) -> None:
        """Make the last ``trainable_layers`` stages trainable and freeze the others."""
        if not 0 <= trainable_layers <= len(self.stages):
            raise ValueError(f"trainable_layers must be in [0, {len(self.stages)}], got {trainable_layers}")
        first_trainable = len(self.stages) - trainable_layers
        for index, stage in enumerate(self.stages):
            for name in stage:
                getattr(self, name).requires_grad_(index >= first_trainable)


# ---------------------------------------------------------------------------------------------- builders


def _vgg16() -> Backbone:
    # torchvision's vgg16().features without building (and initialising) the 120M-parameter classifier.
    features = make_layers(cfgs["D"], batch_norm=False)[:30]  # up to the ReLU after conv5_3; no pool5
    for m in features.modules():
        if isinstance(m, nn.Conv2d):  # same init as torchvision.models.VGG
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    layers = OrderedDict((str(i), m) for i, m in enumerate(features))
    # Stages end at the max-pools (indices 4, 9, 16, 23); stage 5 is conv5_x.
    bounds = [0, 5, 10, 17, 24, 30]
    stages = [[str(i) for i in range(a, b)] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    # Pyramid taps: conv4_3 + ReLU (stride 8), conv3_3 + ReLU (stride 4).
    return Backbone(layers, out_channels=512, stages=stages, stride8=("22", 512), stride4=("15", 256))


def _dilate_mobilenet_stage(features: nn.Sequential, first: int) -> None:
    """Make block ``first`` stride 1 and dilate the depthwise 3x3 convs after it (ResNet's
    replace_stride_with_dilation scheme), so the output stays on the stride-16 grid with the same
    receptive fields as the ImageNet-trained stride-32 stage."""
    for i, block in enumerate(features[first:]):
        for m in block.modules():
            if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
                if i == 0:
                    m.stride = (1, 1)
                else:
                    m.dilation, m.padding = (2, 2), (2, 2)


def _mobilenet_v2() -> Backbone:
    # Stop at the 320-channel block: the final 1x1 conv to 1280 channels would add ~0.8 GMAC at
    # 704x704 and make the RPN's 3x3 conv (in = out channels) 16x more expensive, for no gain in
    # localisation. The stride-32 stage (blocks 14-17) is dilated to keep output stride 16.
    features = mobilenet_v2(weights=None, norm_layer=FrozenBatchNorm2d).features[:18]
    _dilate_mobilenet_stage(features, first=14)
    layers = OrderedDict((str(i), m) for i, m in enumerate(features))
    # Stages start where the resolution halves: stem+block1 (s2), 24ch (s4), 32ch (s8), 64/96ch (s16),
    # 160/320ch (dilated).
    bounds = [0, 2, 4, 7, 14, 18]
    stages = [[str(i) for i in range(a, b)] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return Backbone(layers, out_channels=320, stages=stages, stride8=("6", 32), stride4=("3", 24))


def _resnet18() -> Backbone:
    net = resnet18(weights=None, norm_layer=FrozenBatchNorm2d)
    names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3"]
    layers = OrderedDict((n, getattr(net, n)) for n in names)
    stages = [["conv1", "bn1"], ["layer1"], ["layer2"], ["layer3"]]
    return Backbone(layers, out_channels=256, stages=stages, stride8=("layer2", 128), stride4=("layer1", 64))


_BUILDERS: dict[str, tuple[Callable[[], Backbone], int]] = {
    # name: (builder, default trainable stages when pretrained weights are loaded)
    "vgg16": (_vgg16, 3),
    "mobilenet_v2": (_mobilenet_v2, 3),
    "resnet18": (_resnet18, 2),
}


def available_backbones() -> list[str]:
    return sorted(_BUILDERS)


# ---------------------------------------------------------------------------------------------- weights


def _read_state_dict(path: Path, name: str) -> Mapping[str, torch.Tensor]:
    if path.suffix.lower() == ".onnx":
        if name != "vgg16":
            raise BackboneWeightsError(f"ONNX weights are only supported for vgg16, not {name}: {path}")
        from deepace.models.onnx_vgg import vgg16_state_dict_from_onnx

        return vgg16_state_dict_from_onnx(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling failure means "not a state dict"
        raise BackboneWeightsError(f"cannot read {path} as a PyTorch state dict: {exc}") from exc
    for key in ("state_dict", "model"):  # common checkpoint wrappers
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping):
        raise BackboneWeightsError(f"{path} does not hold a state dict (got {type(state).__name__})")
    return state


def _normalise_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip ``module.`` (DataParallel) and ``features.`` (torchvision VGG/MobileNet) prefixes."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if not isinstance(value, torch.Tensor):
            continue
        out[key.removeprefix("features.")] = value
    return out


def _load_weights(backbone: Backbone, name: str, path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{name} weights file not found: {path}")
    state = _normalise_keys(_read_state_dict(path, name))
    own = backbone.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        shown = ", ".join(missing[:12]) + (f", ... ({len(missing)} in all)" if len(missing) > 12 else "")
        raise BackboneWeightsError(f"{path} does not fit backbone {name!r}: missing keys {shown}")
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in own.items()
        if state[k].shape != v.shape
    ]
    if wrong:
        raise BackboneWeightsError(
            f"{path} does not fit backbone {name!r}: shape mismatch " + "; ".join(wrong[:6])
        )
    backbone.load_state_dict({k: state[k] for k in own}, strict=True)


# ---------------------------------------------------------------------------------------------- public


def build_backbone(
    name: str,
    weights: str | Path | None = None,
    trainable_layers: int | None = None,
    load_weights: bool = True,
) -> Backbone:
    """Build a stride-16 backbone (``vgg16``, ``mobilenet_v2`` or ``resnet18``), optionally loading
    ImageNet ``weights`` from a local file, and freeze all but ``trainable_layers`` stages.

    ``load_weights=False`` builds the backbone of a model whose trained weights come next (fine-tuning,
    inference): nothing is read, but the stages frozen are those of an ImageNet start when ``weights`` is
    given, so a fine-tune keeps the frozen stages of the run it continues.
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown backbone {name!r}; choose one of {available_backbones()}")
    builder, default_trainable = _BUILDERS[name]
    backbone = builder()
    if weights is not None and load_weights:
        _load_weights(backbone, name, Path(weights))
    if trainable_layers is None:
        trainable_layers = default_trainable if weights is not None else len(backbone.stages)
    backbone.freeze(trainable_layers)
    return backbone
