"""Inference-time speed-ups for a CPU: fold frozen batch norms into the convolutions before them, keep
feature maps channels-last, pool the RoIs by sparse matrix products (matrix_roi_align.py) and run the
backbone in ONNX Runtime (onnx_backbone.py).

FrozenBatchNorm2d is a fixed per-channel affine map, so conv -> bn equals one conv with scaled weights and a
shifted bias; on a CPU the separate elementwise pass costs about as much as a depthwise convolution.
oneDNN's convolutions (depthwise ones above all) run faster on NHWC tensors than on NCHW ones.
All of them change only floating-point rounding; folding drops the batch-norm parameters from the state
dict, so apply them to a model that will only be run, never trained or saved."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.misc import FrozenBatchNorm2d

from deepace.models.matrix_roi_align import MatrixRoIAlign
from deepace.models.onnx_backbone import use_onnx_backbone


@torch.no_grad()
def fold_frozen_batchnorm(model: nn.Module) -> int:
    """Fold every FrozenBatchNorm2d that directly follows a Conv2d in an nn.Sequential; returns how many."""
    folded = 0
    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.named_children())
        for (_, conv), (bn_name, bn) in zip(children, children[1:], strict=False):
            if isinstance(conv, nn.Conv2d) and isinstance(bn, FrozenBatchNorm2d):
                scale = bn.weight * (bn.running_var + bn.eps).rsqrt()
                shift = bn.bias - bn.running_mean * scale
                conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
                bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
                conv.bias = nn.Parameter(bias * scale + shift, requires_grad=False)
                setattr(module, bn_name, nn.Identity())
                folded += 1
    return folded


def matrix_roi_pooling(model: nn.Module) -> int:
    """Replace every MultiScaleRoIAlign in `model` (the cascade's stages share one) by a MatrixRoIAlign
    that pools the same; returns how many."""
    replaced: dict[int, MatrixRoIAlign] = {}
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, MultiScaleRoIAlign) and not isinstance(child, MatrixRoIAlign):
                setattr(module, name, replaced.setdefault(id(child), MatrixRoIAlign.like(child)))
    return len(replaced)


def optimise_for_inference(model: nn.Module, runtime: str = "torch") -> nn.Module:
    """Fold frozen batch norms, make every convolution channels-last, pool RoIs by sparse matrix products
    and, with `runtime` 'auto' or 'onnx', run the backbone in ONNX Runtime (onnx_backbone.py); in place;
    returns `model`."""
    fold_frozen_batchnorm(model)
    use_onnx_backbone(model, runtime)
    matrix_roi_pooling(model)
    return model.to(memory_format=torch.channels_last)
