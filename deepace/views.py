"""Counting a cell in several orientations and keeping its median one (test-time augmentation; not in the
paper).

How a slide lies under the camera should not change a count, but it does: the shipped model counts the 200
G-band validation cells exactly 34–44.5% of the time depending on which of the eight orientations (quarter
turns, mirror images) it is shown, and only 18 cells get one count in all eight (BENCHMARKS.md, "Session
30: counting in several orientations"). Counting each cell in several orientations and keeping the
orientation whose count is the median steadies the count (G-band MAE 1.10 → 0.82 with five) and gives a
reliability signal: a cell counted alike in every orientation is far more often right than one that is not
(with five, 27 of 31 such G-band cells were exact, 67 of the other 169). An odd number of orientations, so
that the median is one of them. The kept orientation's boxes are mapped back onto the image, so what a
reviewer sees adds up to the count, and registered on the boxes found in the image as it is: the model's
boxes carry an offset fixed to the frame it sees (found upside down and mapped back they sit about 2 px
lower: its head stages learned the annotators' habit of drawing boxes about 1 px high, having seen few
images upside down; BENCHMARKS.md, "Session 30: counting in several orientations" and "Session 31: the
head stages trained on all four flips"), which would otherwise loosen them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from deepace.metrics.detection import box_iou

if TYPE_CHECKING:
    from deepace.inference import Detection

# (anticlockwise quarter turns, mirrored left-right before turning), in the order views are added: the image
# as it is, then its mirror images (flips are the paper's training augmentation, §3.2), then quarter turns.
ORIENTATIONS: list[tuple[int, bool]] = [
    (0, False),
    (0, True),
    (2, True),  # = mirrored top-bottom
    (2, False),
    (1, False),
    (3, False),
    (1, True),
    (3, True),
]
MAX_VIEWS = len(ORIENTATIONS)
VIEW_CHOICES = (1, 3, 5, 7)  # odd, so that the median count is one orientation's


def check_views(views: int) -> int:
    if views not in VIEW_CHOICES:
        raise ValueError(
            f"views must be one of {', '.join(map(str, VIEW_CHOICES))} (odd: the median is one "
            f"orientation's count), not {views}"
        )
    return views


def oriented(image: np.ndarray, turns: int, mirrored: bool) -> np.ndarray:
    """`image` (H, W) mirrored left-right if `mirrored`, then turned anticlockwise `turns` quarter turns."""
    out = image[:, ::-1] if mirrored else image
    return np.ascontiguousarray(np.rot90(out, turns))


def unoriented(image: np.ndarray, turns: int, mirrored: bool) -> np.ndarray:
    """The inverse of `oriented`: an image seen in that orientation, put back as it was."""
    out = np.rot90(image, -turns)
    return np.ascontiguousarray(out[:, ::-1] if mirrored else out)


def turned_boxes(boxes: np.ndarray, shape: tuple[int, int], turns: int) -> np.ndarray:
    """Boxes (x1, y1, x2, y2) of an image of `shape` (H, W) after `turns` anticlockwise quarter turns of
    the image (np.rot90): each turn takes the point (x, y) to (y, W - x)."""
    out = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    height, width = shape
    for _ in range(turns % 4):
        x1, y1, x2, y2 = out.T.copy()
        out = np.stack([y1, width - x2, y2, width - x1], axis=1)
        height, width = width, height
    return out


def mirrored_boxes(boxes: np.ndarray, width: int) -> np.ndarray:
    """Boxes of an image `width` pixels wide after mirroring it left-right."""
    out = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    out[:, [0, 2]] = width - out[:, [2, 0]]
    return out


def boxes_to_original(
    boxes: np.ndarray, seen_shape: tuple[int, int], turns: int, mirrored: bool
) -> np.ndarray:
    """Boxes found in an image seen in an orientation (`oriented`, its shape `seen_shape`), in the
    pixels of the image as it was."""
    back = turned_boxes(boxes, seen_shape, -turns % 4)
    height, width = seen_shape if turns % 2 == 0 else seen_shape[::-1]
    return mirrored_boxes(back, width) if mirrored else back


def median_index(counts: Sequence[int]) -> int:
    """The orientation whose count is the median (the lower middle for an even number of counts), the
    earliest such one (the image as it is when it qualifies)."""
    middle = sorted(counts)[(len(counts) - 1) // 2]
    return list(counts).index(middle)


MIN_PAIRS = 5  # matched boxes needed to measure an offset; fewer and the kept boxes are left as mapped back


def registered(
    boxes: np.ndarray, counted: np.ndarray, reference: np.ndarray, min_pairs: int = MIN_PAIRS
) -> np.ndarray:
    """`boxes` moved, edge by edge, by the median offset of the `counted` ones (a boolean mask of `boxes`)
    to the `reference` boxes they match (each the other's best at IoU >= 0.5); unchanged with fewer than
    `min_pairs` such pairs."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    kept, reference = boxes[counted], np.asarray(reference, dtype=np.float32).reshape(-1, 4)
    if len(kept) < min_pairs or len(reference) < min_pairs:
        return boxes
    iou = box_iou(kept, reference)
    best = iou.argmax(1)
    mutual = (iou.argmax(0)[best] == np.arange(len(kept))) & (iou.max(1) >= 0.5)
    if mutual.sum() < min_pairs:
        return boxes
    offset = np.median(reference[best[mutual]] - kept[mutual], axis=0)
    return (boxes + offset).astype(np.float32)


def median_view(
    detect: Callable[[np.ndarray], Detection], raw: np.ndarray, views: int, threshold: float
) -> tuple[Detection, tuple[int, ...]]:
    """Run `detect` on the first `views` (VIEW_CHOICES) ORIENTATIONS of `raw` and return the detection whose
    count at `threshold` is the median, with its image and boxes put back in `raw`'s orientation (and
    `registered` on the counted boxes of `raw` as it is), and every orientation's count (in ORIENTATIONS
    order)."""
    from dataclasses import replace

    check_views(views)
    found: list[Detection] = []
    for turns, mirrored in ORIENTATIONS[:views]:
        seen = detect(oriented(raw, turns, mirrored))
        boxes = boxes_to_original(seen.boxes, seen.gray.shape[:2], turns, mirrored)
        found.append(replace(seen, gray=unoriented(seen.gray, turns, mirrored), boxes=boxes))
    counts = tuple(int((d.scores >= threshold).sum()) for d in found)
    chosen = found[median_index(counts)]
    if chosen is not found[0]:
        as_is = found[0].boxes[found[0].scores >= threshold]
        chosen = replace(chosen, boxes=registered(chosen.boxes, chosen.scores >= threshold, as_is))
    return chosen, counts
