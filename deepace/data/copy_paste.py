"""Copy-paste augmentation for G-band spreads (not in the paper, whose only augmentation is flips, §3.2).

Why: nearly every counting error is in a cluster of touching or crossing chromosomes (BENCHMARKS.md, "Where
the errors are"), and a training cell holds only a few such clusters. Pasting real chromosomes cut from
other training cells onto a cell, many of them across a chromosome already there, makes more of them, with
exact boxes (Ghiasi et al., "Simple Copy-Paste is a Strong Data Augmentation Method for Instance
Segmentation", CVPR 2021, do the same with instance masks).

The pieces are chromosomes whose box touches no other box (so the crop holds that chromosome alone, on the
paper's white background: pixels > 200 are set to 255 before anything else). A piece is pasted
multiplicatively, `image · piece / 255`: in brightfield light the transmittances of two layers multiply, so
where two chromosomes cross the overlap is darker than either, as in a real spread, and the piece's white
background leaves the cell unchanged. Its box is the tight box of its pixels < 200.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from deepace.data.dataset import prepare_image_and_stain
from deepace.data.records import ImageRecord

CHROMOSOME_PIXEL = 200  # the paper's threshold: darker pixels are chromosome
Labelled = tuple[np.ndarray, np.ndarray, list[str]]  # a prepared image, its boxes, their class names
Augment = Callable[[np.ndarray, np.ndarray, list[str]], Labelled]


@dataclass
class ChromosomeBank:
    """Crops of isolated chromosomes (uint8, white background) and their class names ("" if unknown)."""

    pieces: list[np.ndarray] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    def add_from(self, gray: np.ndarray, record: ImageRecord, limit: int | None = None) -> None:
        """The isolated chromosomes of one prepared image (`isolated_boxes`), at most `limit` of them."""
        chosen = isolated_boxes(record.boxes)
        for i in chosen[:limit]:
            x1, y1, x2, y2 = np.round(record.boxes[i]).astype(int)
            x1, y1 = max(x1, 0), max(y1, 0)
            piece = gray[y1:y2, x1:x2]
            if piece.size and (piece < CHROMOSOME_PIXEL).any():
                self.pieces.append(piece.copy())
                self.names.append(record.labels[i] if record.labels else "")

    @classmethod
    def from_records(
        cls,
        records: Sequence[ImageRecord],
        preprocess_threshold: int | None = 200,
        per_cell: int = 8,
        levels: tuple[float, float] | None = None,
        denoise_above: float | None = None,
    ) -> ChromosomeBank:
        """The isolated chromosomes of `records`' images (read and prepared as for training, grey `levels`
        as `ModelConfig.brightfield_levels`, denoised as `ModelConfig.denoise_above`), at most `per_cell`
        from each."""
        bank = cls()
        for record in records:
            gray, _ = prepare_image_and_stain(
                record.path, "auto", preprocess_threshold, levels, denoise_above
            )
            bank.add_from(gray, record, limit=per_cell)
        return bank

    def __len__(self) -> int:
        return len(self.pieces)


def isolated_boxes(boxes: np.ndarray, margin: float = 2.0) -> list[int]:
    """Indices of the boxes that no other box touches (boxes grown by `margin` pixels do not intersect)."""
    if len(boxes) == 0:
        return []
    grown = boxes + np.array([-margin, -margin, margin, margin], dtype=np.float32)
    lt = np.maximum(grown[:, None, :2], grown[None, :, :2])
    rb = np.minimum(grown[:, None, 2:], grown[None, :, 2:])
    touching = ((rb - lt) > 0).all(axis=2)
    np.fill_diagonal(touching, False)
    return [int(i) for i in np.where(~touching.any(axis=1))[0]]


def ink_box(piece: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x1, y1, x2, y2) of the piece's chromosome pixels, or None if it has none."""
    ys, xs = np.where(piece < CHROMOSOME_PIXEL)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def paste_chromosomes(
    gray: np.ndarray,
    boxes: np.ndarray,
    names: Sequence[str],
    bank: ChromosomeBank,
    rng: np.random.Generator,
    count: int = 4,
    across_share: float = 0.7,
) -> Labelled:
    """`count` chromosomes from `bank` pasted onto the prepared image `gray` (each turned by a random
    multiple of 90° and mirrored at random); a share `across_share` of them centred on a random point of a
    chromosome's box already there (so they cross or touch it), the others anywhere in the cell's extent.
    Returns the new image and the boxes and names with the pasted ones appended; the old boxes stay."""
    out = gray.astype(np.float32)
    height, width = gray.shape
    new_boxes, new_names = [np.asarray(boxes, dtype=np.float32).reshape(-1, 4)], list(names)
    if len(bank) == 0:
        return gray.copy(), new_boxes[0].copy(), new_names
    extent = _cell_extent(boxes, width, height)
    for _ in range(count):
        k = int(rng.integers(len(bank)))
        piece = np.rot90(bank.pieces[k], int(rng.integers(4)))
        if rng.random() < 0.5:
            piece = piece[:, ::-1]
        ph, pw = piece.shape
        if ph >= height or pw >= width:
            continue
        if len(boxes) and rng.random() < across_share:
            x1, y1, x2, y2 = boxes[int(rng.integers(len(boxes)))]
            cx, cy = rng.uniform(x1, x2), rng.uniform(y1, y2)
        else:
            cx, cy = rng.uniform(extent[0], extent[2]), rng.uniform(extent[1], extent[3])
        left = int(np.clip(round(cx - pw / 2), 0, width - pw))
        top = int(np.clip(round(cy - ph / 2), 0, height - ph))
        box = ink_box(piece)
        if box is None:
            continue
        out[top : top + ph, left : left + pw] *= piece.astype(np.float32) / 255.0
        new_boxes.append(np.array([[left + box[0], top + box[1], left + box[2], top + box[3]]], np.float32))
        new_names.append(bank.names[k])
    return np.round(out).clip(0, 255).astype(np.uint8), np.concatenate(new_boxes), new_names


def _cell_extent(boxes: np.ndarray, width: int, height: int) -> tuple[float, float, float, float]:
    if len(boxes) == 0:
        return 0.0, 0.0, float(width), float(height)
    low, high = boxes[:, :2].min(axis=0), boxes[:, 2:].max(axis=0)
    return float(low[0]), float(low[1]), float(high[0]), float(high[1])


def paster(bank: ChromosomeBank, seed: int, count: int = 4, across_share: float = 0.7) -> Augment:
    """An augment for `DetectionDataset.load`: `paste_chromosomes` with its own generator (seeded, so a
    cached view is the same whenever it is built)."""
    rng = np.random.default_rng(seed)

    def augment(gray: np.ndarray, boxes: np.ndarray, names: list[str]) -> Labelled:
        return paste_chromosomes(gray, boxes, names, bank, rng, count, across_share)

    return augment
