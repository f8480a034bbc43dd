"""Sensor noise measured, and taken out of images far noisier than the training images (not in the paper).

The training spreads are clean: the grey-level noise of the Taichung images measures 0.15–1.3 and of the
M-FISH DAPI images 0.15–2.9 (`noise_sigma`, grey levels). Gaussian noise of σ 8 grey levels took the
session-19 shipped model's G-band exact counts from 38% to 24% and made it miss 1.4 chromosomes a cell
(BENCHMARKS.md, "Session 30: other imaging conditions"). An image whose noise measures above
`ModelConfig.denoise_above` is smoothed by total-variation denoising (Chambolle's, from scikit-image),
which flattens noise while keeping the edges of chromosomes and bands, with a weight in proportion to the
noise measured; images as clean as the training ones are left exactly as they are.
"""

from __future__ import annotations

import numpy as np
from skimage.restoration import denoise_tv_chambolle

# Chambolle's weight (on grey levels scaled to 0..1) at noise σ 8, in proportion to the noise measured: of
# 0.05, 0.1, 0.15 and 0.2 (and 0.1 twice), 0.1 counted best on noisy G-band and DAPI cells (BENCHMARKS.md,
# "Session 31: noisy images").
TV_WEIGHT_AT_SIGMA_8 = 0.1


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
    """`gray` (uint8) smoothed by total-variation denoising, and its `noise_sigma`, if that exceeds `above`;
    else (or with `above` None) `gray` itself and None."""
    if above is None:
        return gray, None
    sigma = noise_sigma(gray)
    if sigma <= above:
        return gray, None
    weight = TV_WEIGHT_AT_SIGMA_8 * sigma / 8.0
    smooth = denoise_tv_chambolle(np.asarray(gray, np.float64) / 255.0, weight=weight)
    return np.clip(np.rint(smooth * 255.0), 0, 255).astype(np.uint8), sigma
