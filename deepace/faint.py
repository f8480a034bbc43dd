"""Faint fluorescence spreads: count again with the chromosomes darkened (not in the paper).

A fluorescence image is stretched between its 0.5 and 99.5 percentiles of grey and inverted
(deepace.data.images.load_image). Where bright interphase nuclei set the upper percentile, dim chromosomes
come out light grey, and the paper's pre-processing (grey levels above 200 set to white, §3.2) erases much
of them: the shipped model counted the dimmest M-FISH cells 5 to 23 chromosomes short (BENCHMARKS.md,
"Session 28: faint fluorescence spreads").

How dark the chromosomes came out is read from a first pass: the grey level below which a quarter of the
pixels inside the counted boxes lie (their darker part; the rest of a box is background or a chromosome's
pale rim). Where that is lighter than `ModelConfig.faint_fluorescence_level` (the lightest tenth of the
training cells), the image's ink (255 minus grey) is scaled up so that those pixels reach
`faint_fluorescence_target` (a training cell's upper quartile), and the image is counted again. Images at
or darker than the level are left as they are, so the model sees what it was trained on wherever it
counts well.
"""

from __future__ import annotations

import numpy as np

# The share of the counted boxes' pixels at or below the level that is read as the chromosomes' grey.
INK_QUANTILE = 25.0


def ink_level(gray: np.ndarray, boxes: np.ndarray, scores: np.ndarray, threshold: float) -> float | None:
    """The INK_QUANTILE-th percentile of grey inside the boxes scoring at least `threshold` (their union;
    boxes in `gray`'s pixels), before the paper's whitening; None when no box is counted."""
    mask = np.zeros(gray.shape, dtype=bool)
    height, width = gray.shape
    for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4)[np.asarray(scores) >= threshold]:
        c1, r1 = max(int(round(x1)), 0), max(int(round(y1)), 0)
        c2, r2 = min(int(round(x2)), width), min(int(round(y2)), height)
        mask[r1:r2, c1:c2] = True
    if not mask.any():
        return None
    return float(np.percentile(gray[mask], INK_QUANTILE))


def darkened(gray: np.ndarray, level: float, target: float) -> np.ndarray:
    """`gray` (uint8, dark chromosomes on white) with its ink scaled so that grey `level` becomes `target`
    (< level): white stays white, every other grey gets darker, the darkest saturate at black."""
    if not 0 <= target < level < 255:
        raise ValueError(f"need 0 <= target < level < 255, got target {target}, level {level}")
    gain = (255.0 - target) / (255.0 - level)
    ink = (255.0 - gray.astype(np.float32)) * gain
    return (255.0 - np.clip(ink, 0.0, 255.0)).round().astype(np.uint8)
