"""Sensor noise measured, and taken out of images far noisier than the training images (not in the paper).

The training spreads are clean: the grey-level noise of the Taichung images measures 0.15–1.3 and of the
M-FISH DAPI images 0.15–2.9 (`noise_sigma`, grey levels). Gaussian noise of σ 8 grey levels took the
session-19 shipped model's G-band exact counts from 38% to 24% and made it miss 1.4 chromosomes a cell
(BENCHMARKS.md, "Session 30: other imaging conditions"). An image whose noise measures above
`ModelConfig.denoise_above` is smoothed by a slight Gaussian blur (radius `BLUR_RADIUS`) first; images as
clean as the training ones are left exactly as they are. On the session-37 model, summed over noise of
σ 5, 8 and 12, the blur made fewer box errors on G-band and DAPI cells than session 31's total-variation
denoising (chosen on the session-19 model; paired p 0.008–0.02 on G-band cells with a 0.7-px blur) and
than a 3×3 median (non-local means, tried at σ 8, did worse on G-band cells), and is the cheapest
(BENCHMARKS.md, "Session 39: which denoising").
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

# Pillow's GaussianBlur radius (about its standard deviation, in pixels). Of 0.5, 0.7, 1 and 0.1 × the
# noise measured, 0.5 made clearly more box errors; the other three are within noise of each other (0.7
# ahead at σ 5, 1 at σ 12 on G-band cells), and 1 made the fewest of the fixed radii over both stains and
# σ 5, 8 and 12 together (BENCHMARKS.md, "Session 39: which denoising").
BLUR_RADIUS = 1.0


def noise_sigma(gray: np.ndarray) -> float:
    """Standard deviation of an (H, W) image's pixel noise, in grey levels, by Immerkær's estimator (1996):
    the mean absolute response to a 3×3 mask that cancels smooth image structure (a difference of two
    Laplacians), scaled so that white Gaussian noise of σ gives σ."""
    g = np.asarray(gray, dtype=np.float32)
    if g.ndim != 2 or min(g.shape) < 3:
        return 0.0
    response = (
        g[:-2, :-2] + g[:-2, 2:] + g[2:, :-2] + g[2:, 2:]
        - 2 * (g[:-2, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] + g[2:, 1:-1])
        + 4 * g[1:-1, 1:-1]
    )  # fmt: skip
    return float(np.sqrt(np.pi / 2) * np.abs(response).mean() / 6)


def denoised_and_noise(gray: np.ndarray, above: float | None) -> tuple[np.ndarray, float | None]:
    """`gray` (uint8) smoothed by a Gaussian blur of `BLUR_RADIUS`, and its `noise_sigma`, if that exceeds
    `above`; else (or with `above` None) `gray` itself and None."""
    if above is None:
        return gray, None
    sigma = noise_sigma(gray)
    if sigma <= above:
        return gray, None
    smooth = Image.fromarray(np.asarray(gray, np.uint8)).filter(ImageFilter.GaussianBlur(BLUR_RADIUS))
    return np.asarray(smooth), sigma
