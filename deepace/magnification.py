"""Is a batch of spreads imaged at the magnification the model was trained at? (not in the paper)

A detector trained on one chromosome size misses much at another: on Taichung validation cells shrunk to
half size the shipped model misses 22 chromosomes per cell on average, at 0.7 of their size about 3
(BENCHMARKS.md, "Other magnifications"), and it says nothing, since its errors are confident ones.
`deepace count --magnification F` resizes the images; this module tells the user when to use it.

The measure is the chromosomes' width, read from the pixels, not from the detector's boxes: at the wrong
size the detector boxes pairs and clusters, so its boxes drift back towards the size it knows. Width is the
median, over the skeleton of the dark (chromosome) pixels, of twice the distance to the background: a
chromatid-pair width that scales with magnification and hardly depends on how long the chromosomes are. On
single cells it is noisy (DAPI above all), so the advice is the median over several images of one stain.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from deepace.inference import CellResult, Detector

# Batches whose median width is within this factor of the training width are left alone: 1.4 for fewer
# than BATCH cells, 1.25 from BATCH on (a median over more cells varies less). Random batches of 5 of the
# first 100 validation cells at their own size: 0.1% of G-band and 4.3% of DAPI ones flagged at 1.25;
# resized by 0.7 (counted as they are: G-band MAE 6.0), 99.1% and 93.8%. Single cells at 1.4: 0.9% and
# 19.8% flagged, 27.3% and 65.1% of those resized by 0.7 (BENCHMARKS.md, "Other magnifications").
TOLERANCE = 1.4
BATCH_TOLERANCE = 1.25
BATCH = 5
# Images read for the advice, evenly spread over the batch (each costs about 0.15-0.25 s with its reading)
SAMPLE = 5
# The chromosomes are dark below this grey level once the paper's pre-processing has whitened the background
# (pixels > 200 set to 255; DAPI images are inverted to look the same).
FOREGROUND_BELOW = 200
# `deepace train` sets the model's typical width per stain from this many training images of each stain
# (random, distinct files), reading at most MAX_TRAINING_READS: single DAPI cells' widths spread widely, and
# in a first version a median of 5 random M-FISH training cells (18.1 px) was 35% off that of 100 (13.4 px).
TRAINING_SAMPLE = 30
MAX_TRAINING_READS = 500
# Widths are measured with the image resized by 0.75 x the stain's own resize (the input size of the models
# the tolerances above were measured with; the shipped model now runs at 1.0), cheap and fine enough for
# widths of 5-20 px.
WORKING_SCALE = 0.75


def chromosome_width(gray: np.ndarray, stain_scale: float = 1.0) -> float | None:
    """The median chromosome width in the image's pixels, or None where nothing dark enough is found.
    `gray`: brightfield-looking uint8 after the paper's pre-processing; `stain_scale`: the model's resize
    for this stain (DAPI chromosomes are small, and are measured enlarged as the model sees them)."""
    from scipy import ndimage
    from skimage.morphology import skeletonize

    from deepace.data.images import rescale_gray

    scale = WORKING_SCALE * stain_scale
    foreground = ndimage.binary_opening(rescale_gray(gray, scale) < FOREGROUND_BELOW)
    widths = 2 * ndimage.distance_transform_edt(foreground)[skeletonize(foreground)]
    if len(widths) < 20:
        return None
    return float(np.median(widths)) / scale


def image_width(
    path: Path,
    stain: str,
    preprocess_threshold: int | None,
    stain_scale: Callable[[str], float],
    darken: tuple[float, float] | None = None,
    levels: tuple[float, float] | None = None,
    denoise_above: float | None = None,
) -> tuple[str, float | None] | None:
    """(the stain the image was read as, its chromosome_width), or None if the image cannot be read.
    `darken`: (ink level, target) of a faint image counted again darkened (deepace/faint.py), measured
    darkened the same way: the pre-processing erases a faint chromosome's pale edges, so it measures thin.
    `levels`, `denoise_above`: `ModelConfig.brightfield_levels` and `.denoise_above`, as the model reads the
    image."""
    from deepace.data.images import ImageReadError, load_image_and_stain, paper_preprocess
    from deepace.faint import darkened

    try:
        gray, used = load_image_and_stain(path, stain, levels, denoise_above)
    except (ImageReadError, OSError, ValueError):
        return None
    if darken is not None:
        gray = darkened(gray, *darken)
    return used, chromosome_width(paper_preprocess(gray, preprocess_threshold), stain_scale(used))


def suggested_magnification(
    widths: Sequence[float | None], typical: float, current: float = 1.0
) -> float | None:
    """The resize (rounded to 0.1) that brings the median of `widths` (measured on the images as they are)
    to `typical`; None when the images resized by `current` are already within TOLERANCE of it
    (BATCH_TOLERANCE from BATCH images on), or nothing was measured."""
    measured = [w for w in widths if w]
    if not measured:
        return None
    factor = typical / float(np.median(measured))
    tolerance = BATCH_TOLERANCE if len(measured) >= BATCH else TOLERANCE
    if 1 / tolerance <= factor / current <= tolerance:
        return None
    return round(factor, 1)


def magnification_advice(
    detector: Detector,
    paths: Sequence[Path],
    stain: str = "auto",
    magnification: float = 1.0,
    faint: Mapping[Path, float] | None = None,
) -> dict[str, float]:
    """{stain: suggested --magnification} for the stains whose chromosomes in `paths` (SAMPLE images spread
    over the list, or all if fewer) are more than the tolerance away from the model's training width at the
    `magnification` already used; {} when all look right. Unreadable images are skipped. `faint`: the ink
    levels of the images counted again darkened (CellResult.faint_ink_level), measured darkened too."""
    model = detector.config.model
    faint = faint or {}
    widths: dict[str, list[float | None]] = {}
    for index in sample_indices(len(paths)):
        ink = faint.get(paths[index])
        darken = None if ink is None else (ink, model.faint_fluorescence_target)
        measured = image_width(
            paths[index],
            stain,
            model.preprocess_threshold,
            model.stain_scale,
            darken,
            levels=model.brightfield_levels,
            denoise_above=model.denoise_above,
        )
        if measured is not None:
            widths.setdefault(measured[0], []).append(measured[1])
    advice: dict[str, float] = {}
    for used, found in widths.items():
        typical = detector.config.model.typical_width(used)
        factor = suggested_magnification(found, typical, magnification)
        if factor is not None:
            advice[used] = factor
    return advice


def counted_images_advice(
    detector: Detector, results: Sequence[CellResult], stain: str = "auto", magnification: float = 1.0
) -> dict[str, float]:
    """magnification_advice for the images counted without error in `results`, the faint ones (counted
    again darkened) measured darkened."""
    counted = [r.image for r in results if not r.error]
    faint = {r.image: r.faint_ink_level for r in results if r.faint_ink_level is not None}
    return magnification_advice(detector, counted, stain, magnification, faint)


def sample_indices(n: int) -> list[int]:
    """SAMPLE indices spread evenly over a batch of n images (all of them if fewer)."""
    return sorted({round(i) for i in np.linspace(0, n - 1, min(SAMPLE, n))})


def pixel_repetition(gray: np.ndarray, max_factor: int = 4) -> int:
    """k when the image was enlarged k times by repeating pixels (nearest neighbour, "digital zoom"), else 1.

    Why: the model miscounts such blocky images badly (M-FISH DAPI cells enlarged 2x that way: exact count
    8% against 32% when enlarged by interpolation; BENCHMARKS.md, "Other magnifications"). In a k-repeated
    image the grey level changes only between blocks of k pixels: the mean step between neighbours inside
    the blocks is near zero against the steps at their edges (both axes, any block offset); flat images,
    whose steps are all near zero, are not called repeated."""
    image = np.asarray(gray, dtype=np.int16)
    # the mean step before each row, and before each column
    steps = [np.abs(np.diff(image, axis=axis)).mean(axis=1 - axis) for axis in (0, 1)]
    for k in range(max_factor, 1, -1):
        if all(_blocky_along(axis_steps, k) for axis_steps in steps):
            return k
    return 1


def _blocky_along(steps: np.ndarray, k: int) -> bool:
    if len(steps) < 4 * k:
        return False
    for offset in range(k):
        at_edges = steps[offset::k]
        inside = np.delete(steps, np.arange(offset, len(steps), k))
        if at_edges.mean() > 0.5 and inside.mean() < 0.1 * at_edges.mean():
            return True
    return False


def training_widths(
    paths: Sequence[Path],
    stain_scale: Callable[[str], float],
    preprocess_threshold: int | None = 200,
    per_stain: int = TRAINING_SAMPLE,
    max_reads: int = MAX_TRAINING_READS,
    seed: int = 0,
    levels: tuple[float, float] | None = None,
    denoise_above: float | None = None,
) -> dict[str, float]:
    """{stain: median chromosome width} of the distinct training images `paths`, read in random order
    (`seed`) until every stain seen has `per_stain` widths or `max_reads` images are read; stains with
    fewer than BATCH widths are left out. What `model.typical_chromosome_width` should hold for a model
    trained on these images (a minority stain, e.g. 99 DAPI among 1,899 training spreads, is read on for).
    Unreadable images are skipped. `levels`, `denoise_above`: `ModelConfig.brightfield_levels` and
    `.denoise_above`."""
    distinct = sorted({str(p) for p in paths})
    order = np.random.default_rng(seed).permutation(len(distinct))[:max_reads]
    widths: dict[str, list[float]] = {}
    for index in order:
        if widths and all(len(found) >= per_stain for found in widths.values()):
            break
        path = Path(distinct[index])
        measured = image_width(
            path, "auto", preprocess_threshold, stain_scale, levels=levels, denoise_above=denoise_above
        )
        if measured is not None and measured[1] is not None:
            widths.setdefault(measured[0], []).append(measured[1])
    return {stain: float(np.median(found)) for stain, found in widths.items() if len(found) >= BATCH}
