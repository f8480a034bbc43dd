"""Torch dataset over ImageRecords: the paper's pre-processing and its only augmentation, flips (§3.2); an
optional augment (copy_paste.py) for the head-only fine-tunes' cached views."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from deepace.data.images import load_image_and_stain, paper_preprocess, rescale_gray
from deepace.data.karyotype import karyotype_class
from deepace.data.records import ImageRecord
from deepace.models.transform import gray_to_tensor

if TYPE_CHECKING:  # copy_paste reads images through this module
    from deepace.data.copy_paste import Augment


def prepare_image_and_stain(
    path,
    stain: str = "auto",
    preprocess_threshold: int | None = 200,  # noqa: ANN001
    levels: tuple[float, float] | None = None,
    denoise_above: float | None = None,
) -> tuple[np.ndarray, str]:
    """Read an image as a brightfield-looking (H, W) uint8 array, denoised if noisier than `denoise_above`
    (`ModelConfig.denoise_above`), its grey `levels` set (`ModelConfig.brightfield_levels`), with the paper's
    thresholding; also the stain it was read as."""
    gray, stain_used = load_image_and_stain(path, stain=stain, levels=levels, denoise_above=denoise_above)
    return paper_preprocess(gray, preprocess_threshold), stain_used


class DetectionDataset(Dataset):
    """Images as the network sees them in training, each resized by `stain_scale(stain it was read as)`
    (`ModelConfig.stain_scale`: fluorescence spreads are enlarged to bring chromosomes to G-band size)."""

    def __init__(
        self,
        records: list[ImageRecord],
        preprocess_threshold: int | None = 200,
        stain: str = "auto",
        stain_scale: Callable[[str], float] | None = None,
        levels: tuple[float, float] | None = None,
        denoise_above: float | None = None,
    ) -> None:
        self.records = records
        self.preprocess_threshold = preprocess_threshold
        self.levels = levels
        self.denoise_above = denoise_above
        self.stain = stain
        self.stain_scale = stain_scale

    def __len__(self) -> int:
        return len(self.records)

    def load(
        self, index: int, hflip: bool = False, vflip: bool = False, augment: Augment | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The record's image and targets; `augment` (e.g. copy_paste.paster) changes the prepared image,
        its boxes and their class names first, in the record's own pixels."""
        record = self.records[index]
        gray, stain = prepare_image_and_stain(
            record.path, self.stain, self.preprocess_threshold, self.levels, self.denoise_above
        )
        boxes = record.boxes.astype(np.float32, copy=True)
        names = list(record.labels or [""] * len(boxes))
        if augment is not None:
            gray, boxes, names = augment(gray, boxes, names)
        factor = self.stain_scale(stain) if self.stain_scale is not None else 1.0
        if factor != 1.0:
            h0, w0 = gray.shape
            gray = rescale_gray(gray, factor)
            boxes *= np.array([gray.shape[1] / w0, gray.shape[0] / h0] * 2, dtype=np.float32)
        gray, boxes = flip(gray, boxes, hflip, vflip)
        image = gray_to_tensor(gray)
        target = {
            "boxes": torch.from_numpy(boxes).float().reshape(-1, 4),
            "labels": torch.ones(len(boxes), dtype=torch.int64),
            # 1…24 per box, 0 unknown: read only by the heads' karyotype term (model.karyotype_weight)
            "chromosome_class": torch.tensor(
                [karyotype_class(str(name)) for name in names], dtype=torch.int64
            ).reshape(-1),
        }
        return image, target

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        return self.load(index)


def flip(
    gray: np.ndarray, boxes: np.ndarray, horizontal: bool, vertical: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The image mirrored left-right and/or upside down (contiguous), and a copy of its boxes moved along."""
    h, w = gray.shape
    boxes = boxes.astype(np.float32, copy=True)
    if horizontal:
        gray = gray[:, ::-1]
        boxes[:, [0, 2]] = w - boxes[:, [2, 0]]
    if vertical:
        gray = gray[::-1, :]
        boxes[:, [1, 3]] = h - boxes[:, [3, 1]]
    return np.ascontiguousarray(gray), boxes
