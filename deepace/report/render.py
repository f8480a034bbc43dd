"""Draw a cell's detections for a human: numbered boxes, low-confidence ones in orange.

Colours are the colour-blind-safe blue/orange pair:
  blue, solid, numbered     counted, confident
  orange, solid, numbered   counted, but the score lies in the low-confidence band: check it
  orange, dashed, no number not counted (score in the band but under the threshold): maybe missed
  magenta, solid, numbered  drawn by a reviewer
Numbers run 1..count in reading order (rows top to bottom, left to right within a row), so a
reviewer can tick them off against the image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BLUE = (0, 114, 255)
ORANGE = (255, 140, 0)
MAGENTA = (220, 0, 220)
OUTLINE = (0, 0, 0)
TEXT = (255, 255, 255)


def reading_order(boxes: np.ndarray) -> np.ndarray:
    """Indices of `boxes` in reading order: rows by box centre (a row is as tall as about half the
    median box), top to bottom, then left to right. The review page numbers boxes the same way."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return np.zeros((0,), dtype=np.int64)
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    row_height = max(1.0, 0.5 * float(np.median(boxes[:, 3] - boxes[:, 1])))
    by_y = sorted(range(len(boxes)), key=lambda i: (cy[i], cx[i]))
    rows: list[list[int]] = []
    row_top = -np.inf
    for i in by_y:
        if cy[i] - row_top > row_height:
            rows.append([])
            row_top = cy[i]
        rows[-1].append(i)
    return np.array([i for row in rows for i in sorted(row, key=lambda j: (cx[j], cy[j]))], dtype=np.int64)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def _dashed_rectangle(draw: ImageDraw.ImageDraw, box: Sequence[float], colour, width: int) -> None:
    x1, y1, x2, y2 = box
    dash = 3 * width + 3
    for (ax, ay), (bx, by) in (
        ((x1, y1), (x2, y1)),
        ((x2, y1), (x2, y2)),
        ((x2, y2), (x1, y2)),
        ((x1, y2), (x1, y1)),
    ):
        length = max(abs(bx - ax), abs(by - ay))
        steps = max(1, int(length // dash))
        for k in range(0, steps, 2):
            t0, t1 = k / steps, min(1.0, (k + 1) / steps)
            draw.line(
                [(ax + (bx - ax) * t0, ay + (by - ay) * t0), (ax + (bx - ax) * t1, ay + (by - ay) * t1)],
                fill=colour,
                width=width,
            )


def _to_rgb(gray: np.ndarray) -> Image.Image:
    arr = np.asarray(gray)
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float64)
        lo, hi = float(arr.min(initial=0)), float(arr.max(initial=1))
        arr = ((arr - lo) / max(hi - lo, 1e-9) * 255).astype(np.uint8)
    if arr.ndim == 2:
        return Image.fromarray(arr, mode="L").convert("RGB")
    return Image.fromarray(arr[..., :3]).convert("RGB")


def draw_detections(
    gray: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    score_threshold: float,
    low_band: tuple[float, float],
    sources: Sequence[str] | None = None,
) -> Image.Image:
    """An RGB picture of the cell with its detections. `sources` ("model" / "manual" per box) marks
    reviewer-drawn boxes, which are drawn in magenta."""
    img = _to_rgb(gray)
    w, h = img.size
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    lo, hi = low_band
    line = max(2, round(max(w, h) / 600))
    font_size = max(12, round(max(w, h) / 60))
    font = _font(font_size)
    draw = ImageDraw.Draw(img)

    counted = np.flatnonzero(scores >= score_threshold)
    candidates = np.flatnonzero((scores >= lo) & (scores < score_threshold))
    for i in candidates:
        _dashed_rectangle(draw, boxes[i], ORANGE, line)

    order = counted[reading_order(boxes[counted])] if len(counted) else counted
    labels: list[tuple[float, float, str, tuple[int, int, int]]] = []
    for number, i in enumerate(order, start=1):
        if sources is not None and sources[i] == "manual":
            colour = MAGENTA
        elif scores[i] < hi:
            colour = ORANGE
        else:
            colour = BLUE
        x1, y1, x2, y2 = boxes[i]
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=line)
        labels.append((x1, y1, str(number), colour))

    # number tags last, so no box line crosses a number
    pad = max(1, font_size // 8)
    for x1, y1, text, colour in labels:
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left + 2 * pad, bottom - top + 2 * pad
        tx = min(max(0.0, x1), w - tw)
        ty = y1 - th if y1 - th >= 0 else y1
        draw.rectangle([tx, ty, tx + tw, ty + th], fill=colour)
        ink = (0, 0, 0) if colour == ORANGE else TEXT
        draw.text((tx + pad - left, ty + pad - top), text, fill=ink, font=font)
    return img


def thumbnail(img: Image.Image, max_side: int = 480) -> Image.Image:
    """A copy no larger than max_side on its long side."""
    out = img.copy()
    out.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return out
