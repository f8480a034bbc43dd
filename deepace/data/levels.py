"""Grey levels of brightfield spreads brought to those of the training images (not in the paper).

The paper's pre-processing (§3.2: grey > 200 becomes white) presumes a near-white background, and the
network learned the chromosomes' grey levels of its training lab. Another camera or export gives another
background and contrast: the shipped model counted the G-band validation cells exactly 43% of the time, but
26.5% with every grey level × 0.8 and 28.5% with the contrast lowered to 70% (BENCHMARKS.md, "Session 30:
other imaging conditions"). A linear map of the image's own two reference levels — its dark level (the 1st
percentile of grey: the darkest chromosome bands) and its background (the median: most of a spread is
background) — onto the training images' typical ones undoes any such linear change exactly.
"""

from __future__ import annotations

import numpy as np

from deepace.data.images import percentiles, sampled

DARK_PERCENTILE = 1.0
BACKGROUND_PERCENTILE = 50.0
# Below this spread between the two levels (grey levels) an image is taken as blank and left as it is.
MIN_CONTRAST = 16.0


def grey_levels(gray: np.ndarray) -> tuple[float, float]:
    """(dark level, background level) of an (H, W) uint8 brightfield image."""
    dark, background = percentiles(sampled(np.asarray(gray)), [DARK_PERCENTILE, BACKGROUND_PERCENTILE])
    return float(dark), float(background)


def normalised_levels(gray: np.ndarray, target: tuple[float, float]) -> np.ndarray:
    """`gray` mapped linearly so that its dark and background levels (`grey_levels`) become `target`'s
    (dark, background); clipped to 0..255. An image whose levels are closer than MIN_CONTRAST is returned
    unchanged."""
    dark, background = grey_levels(gray)
    if background - dark < MIN_CONTRAST:
        return gray
    to_dark, to_background = target
    gain = (to_background - to_dark) / (background - dark)
    lut = to_dark + (np.arange(256, dtype=np.float64) - dark) * gain
    return np.clip(np.rint(lut), 0, 255).astype(np.uint8)[gray]
