"""Inference-time speed-ups for a CPU: fold frozen batch norms into the convolutions before them, keep
feature maps channels-last, and pool the RoIs on every CPU thread.

FrozenBatchNorm2d is a fixed per-channel affine map, so conv -> bn equals one conv with scaled weights and a
shifted bias; on a CPU the separate elementwise pass costs about as much as a depthwise convolution.
oneDNN's convolutions (depthwise ones above all) run faster on NHWC tensors than on NCHW ones.
torchvision's CPU `roi_align` runs on one thread whatever `torch.get_num_threads()` says, and it was about a
third of a spread's time on 2 cores (session 14's profile); each box is pooled on its own, so splitting the
boxes between threads gives the same numbers sooner.
The first two change only floating-point rounding, the third nothing; folding drops the batch-norm parameters
from the state dict, so apply them to a model that will only be run, never trained or saved."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor, nn
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops.misc import FrozenBatchNorm2d


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


class ThreadedRoIPool(nn.Module):
    """`pool` (a RoI pooler: features, per-image boxes, image sizes -> one row per box, in order) run on
    `workers` threads, each pooling a contiguous share of the boxes. A pooler whose rows depend only on
    their own box (MultiScaleRoIAlign picks each box's level from its size; ContextRoIPool) gives the same
    rows as one call; torch's operators release the GIL, so the threads run at once."""

    def __init__(self, pool: nn.Module, workers: int) -> None:
        super().__init__()
        if workers < 2:
            raise ValueError(f"threading needs at least 2 workers, got {workers}")
        self.pool = pool
        self.workers = workers
        self._executor: ThreadPoolExecutor | None = None

    def forward(
        self, features: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> Tensor:
        total = sum(len(b) for b in boxes)
        if self.training or total < 2 * self.workers:
            return self.pool(features, boxes, image_shapes)
        # A share keeps every image's place in the list (the pooler reads batch indices from it); the
        # other images get no boxes. Shares run image by image, so their rows concatenate in order.
        # torchvision's CPU roi_align makes its input contiguous: with channels-last maps every thread
        # would copy every level on every call. One copy here, shared by the threads, costs less.
        features = {name: level.contiguous() for name, level in features.items()}
        shares = []
        for i, image_boxes in enumerate(boxes):
            for part in image_boxes.tensor_split(self.workers):
                if len(part):
                    shares.append([part if j == i else b[:0] for j, b in enumerate(boxes)])
        if self._executor is None:
            self.pool(features, shares[0], image_shapes)  # set up any lazy state (level scales) first
            self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="roi-pool")
        rows = self._executor.map(lambda share: self.pool(features, share, image_shapes), shares)
        return torch.cat(list(rows))


def thread_roi_pooling(model: nn.Module, workers: int) -> int:
    """Wrap every RoI heads' pooler (the cascade's stages share one) in ThreadedRoIPool; returns how many."""
    wrapped: dict[int, ThreadedRoIPool] = {}
    for module in model.modules():
        if isinstance(module, RoIHeads) and not isinstance(module.box_roi_pool, ThreadedRoIPool):
            pool = module.box_roi_pool
            if id(pool) not in wrapped:
                wrapped[id(pool)] = ThreadedRoIPool(pool, workers)
            module.box_roi_pool = wrapped[id(pool)]
    return len(wrapped)


def optimise_for_inference(model: nn.Module, runtime: str = "torch") -> nn.Module:
    """Fold frozen batch norms, make every convolution channels-last and, with more than one CPU thread,
    pool RoIs on all of them; with `runtime` 'auto' or 'onnx', run the backbone in ONNX Runtime
    (onnx_backbone.py); in place; returns `model`."""
    from deepace.models.onnx_backbone import use_onnx_backbone

    fold_frozen_batchnorm(model)
    use_onnx_backbone(model, runtime)
    if torch.get_num_threads() > 1:
        thread_roi_pooling(model, torch.get_num_threads())
    return model.to(memory_format=torch.channels_last)
