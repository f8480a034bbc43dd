"""Detections with no chromosome in them are dropped (not in the paper).

The network scores boxes on an image with nothing in it as chromosomes: the shipped model counted 129 on an
all-white 800×600 image, its best boxes scoring 0.94 (0.56 before its rescorer), and an all-black image,
read and inverted to white, crashed the faint-fluorescence pass. Blank areas beside a spread are no
problem (the example spread padded with 600 white pixels a side still counts 46): the network never saw an
image without chromosomes. So `deepace count` would have reported an empty field, a failed capture or a
black frame as a cell with over a hundred chromosomes.

A chromosome's box holds chromosome pixels: after the paper's pre-processing (§3.2: grey > 200 becomes
white) the median ground-truth box of the training cells is 36% (G-band) or 69% (DAPI) pixels at grey 200
or darker. `ModelConfig.min_box_ink` drops boxes with less than a small share of such pixels
(BENCHMARKS.md, "Session 42: blank images").
"""

from __future__ import annotations

import numpy as np

# Grey levels at or below this are ink: the paper's pre-processing sets everything lighter to white.
INK_GREY = 200


def ink_shares(gray: np.ndarray, boxes: np.ndarray, ink_grey: int = INK_GREY) -> np.ndarray:
    """(N,) share of each box's pixels (x1, y1, x2, y2 in `gray`'s pixels, widened to whole pixels and
    clipped to the image) at grey `ink_grey` or darker; 0 for a box with no pixel inside the image."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    height, width = gray.shape
    # summed-area table with a zero first row and column: the ink in rows r1:r2, columns c1:c2 is
    # table[r2, c2] - table[r1, c2] - table[r2, c1] + table[r1, c1]
    table = np.zeros((height + 1, width + 1), dtype=np.int32)  # int32: half the time of int64
    table[1:, 1:] = (
        (np.asarray(gray) <= ink_grey).cumsum(axis=0, dtype=np.int32).cumsum(axis=1, dtype=np.int32)
    )
    c1 = np.clip(np.floor(boxes[:, 0]), 0, width).astype(np.int64)
    r1 = np.clip(np.floor(boxes[:, 1]), 0, height).astype(np.int64)
    c2 = np.clip(np.ceil(boxes[:, 2]), 0, width).astype(np.int64)
    r2 = np.clip(np.ceil(boxes[:, 3]), 0, height).astype(np.int64)
    area = np.maximum(c2 - c1, 0) * np.maximum(r2 - r1, 0)
    ink = table[r2, c2] - table[r1, c2] - table[r2, c1] + table[r1, c1]
    return np.where(area > 0, ink / np.maximum(area, 1), 0.0)


def without_blank_boxes(
    gray: np.ndarray, boxes: np.ndarray, scores: np.ndarray, min_share: float, ink_grey: int = INK_GREY
) -> tuple[np.ndarray, np.ndarray]:
    """`boxes` and `scores` less the boxes whose `ink_shares` is below `min_share`, order kept."""
    keep = ink_shares(gray, boxes, ink_grey) >= min_share
    return boxes[keep], scores[keep]
