"""benchmarks/unlabelled_detections.py: blanking unlabelled chromosomes out of a training image."""

import importlib.util
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "unlabelled_detections.py"
spec = importlib.util.spec_from_file_location("unlabelled_detections", SCRIPT)
unlabelled_detections = importlib.util.module_from_spec(spec)
spec.loader.exec_module(unlabelled_detections)
blanked = unlabelled_detections.blanked
MARGIN = unlabelled_detections.BLANK_MARGIN


def spread() -> np.ndarray:
    """A dark fluorescence background (grey 5) with two bright chromosomes."""
    image = np.full((60, 80), 5, dtype=np.uint8)
    image[10:20, 10:30] = 200  # labelled
    image[30:50, 50:60] = 180  # not labelled
    return image


def test_the_unlabelled_chromosome_becomes_background_with_its_rim() -> None:
    out = blanked(spread(), blank=np.array([[50, 30, 60, 50]]), keep=np.array([[10, 10, 30, 20]]))
    assert (out[30 - MARGIN : 50 + MARGIN, 50 - MARGIN : 60 + MARGIN] == 5).all()
    assert (out[10:20, 10:30] == 200).all()


def test_labelled_pixels_are_kept_where_a_blanked_box_overlaps_them() -> None:
    image = spread()
    out = blanked(image, blank=np.array([[20, 5, 40, 25]]), keep=np.array([[10, 10, 30, 20]]))
    assert (out[10:20, 10:30] == 200).all()  # inside the labelled box: untouched
    assert (out[10:20, 30:40] == 5).all()
    assert (out[30:50, 50:60] == 180).all()  # not asked for


def test_background_is_the_median_outside_every_box_per_channel() -> None:
    image = np.stack([spread(), spread() // 5 + 7, spread()], axis=-1)
    out = blanked(image, blank=np.array([[50, 30, 60, 50]]), keep=np.zeros((0, 4)))
    assert out.dtype == image.dtype and out.shape == image.shape
    assert (out[40, 55] == [5, 8, 5]).all()
