"""Resize by a fixed factor instead of to a fixed side length.

Chromosomes in a lab's images have a roughly constant size in pixels (fixed magnification) while the image
size follows the spread, so a fixed scale keeps them matched to the anchors (§2.1 chose anchors from the
box size distribution)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


class FixedScaleTransform(GeneralizedRCNNTransform):
    def __init__(self, scale: float = 1.0, size_divisible: int = 32) -> None:
        super().__init__(
            min_size=800,
            max_size=1333,
            image_mean=IMAGENET_MEAN,
            image_std=IMAGENET_STD,
            size_divisible=size_divisible,
        )
        self.scale = scale

    def resize(self, image: Tensor, target: dict[str, Tensor] | None = None):  # noqa: ANN201
        if self.scale == 1.0:
            return image, target
        h, w = image.shape[-2:]
        new_size = (max(1, round(h * self.scale)), max(1, round(w * self.scale)))
        image = F.interpolate(image[None], size=new_size, mode="bilinear", align_corners=False)[0]
        if target is not None and "boxes" in target:
            target = dict(target)
            target["boxes"] = resize_boxes(target["boxes"], (h, w), new_size)
        return image, target


def gray_to_tensor(gray) -> Tensor:  # noqa: ANN001
    """(H, W) uint8 -> (3, H, W) float in [0, 1]: the backbones are ImageNet RGB networks."""
    t = torch.from_numpy(np.array(gray, dtype=np.float32)).div_(255.0)
    return t.unsqueeze(0).expand(3, -1, -1)
