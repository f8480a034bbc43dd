"""Boxes without chromosome pixels (deepace/blank_boxes.py): the network scores boxes on a blank image as
chromosomes, so a detection needs a share of its pixels at grey 200 or darker to be kept."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepace.blank_boxes import ink_shares, without_blank_boxes
from deepace.inference import Detector
from tests.helpers_detection import RecordingModel, tiny_config


def _brute_force(gray: np.ndarray, box: np.ndarray) -> float:
    c1, r1 = max(int(np.floor(box[0])), 0), max(int(np.floor(box[1])), 0)
    c2 = min(max(int(np.ceil(box[2])), 0), gray.shape[1])  # a negative end would wrap round
    r2 = min(max(int(np.ceil(box[3])), 0), gray.shape[0])
    patch = gray[r1:r2, c1:c2]
    return float((patch <= 200).mean()) if patch.size else 0.0


def test_ink_share_is_the_share_of_a_boxs_pixels_at_grey_200_or_darker() -> None:
    gray = np.full((40, 60), 255, np.uint8)
    gray[10:20, 10:30] = 200  # ink at exactly the paper's level
    gray[10:20, 30:40] = 201  # just lighter: not ink
    boxes = np.array(
        [
            [10, 10, 30, 20],  # all ink
            [10, 10, 50, 20],  # 20 of 40 columns ink
            [45, 25, 55, 35],  # blank
            [-10, -10, 20, 20],  # reaches past the corner: clipped to [0, 20) x [0, 20)
            [10.5, 10.2, 19.5, 19.9],  # fractions widen to whole pixels: 10..20 x 10..20
            [70, 0, 80, 10],  # wholly outside
            [15, 15, 15, 18],  # no width
        ],
        np.float32,
    )
    np.testing.assert_allclose(ink_shares(gray, boxes), [1.0, 0.5, 0.0, 100 / 400, 1.0, 0.0, 0.0])


def test_ink_shares_match_a_direct_count_on_random_boxes() -> None:
    rng = np.random.default_rng(0)
    gray = rng.choice(np.array([0, 150, 200, 201, 255], np.uint8), size=(50, 70))
    x = rng.uniform(-10, 80, size=(200, 2))
    y = rng.uniform(-10, 60, size=(200, 2))
    boxes = np.stack([x.min(1), y.min(1), x.max(1), y.max(1)], axis=1)
    np.testing.assert_allclose(ink_shares(gray, boxes), [_brute_force(gray, b) for b in boxes])


def test_blank_boxes_are_dropped_and_the_rest_keep_their_order() -> None:
    gray = np.full((40, 60), 255, np.uint8)
    gray[5:15, 5:8] = 60  # a thin chromosome: 30 of its box's 100 pixels
    boxes = np.array([[40, 20, 50, 30], [5, 5, 15, 15], [30, 0, 40, 10], [4, 4, 16, 16]], np.float32)
    scores = np.array([0.95, 0.9, 0.8, 0.7], np.float32)
    kept_boxes, kept_scores = without_blank_boxes(gray, boxes, scores, min_share=0.01)
    np.testing.assert_array_equal(kept_boxes, boxes[[1, 3]])
    np.testing.assert_array_equal(kept_scores, scores[[1, 3]])
    assert len(without_blank_boxes(gray, boxes, scores, min_share=0.25)[0]) == 1  # 30/144 < 0.25 <= 0.3


BAR = (slice(20, 44), slice(30, 36))
ON_BAR = [28.0, 18.0, 38.0, 46.0]
BESIDE = [50.0, 10.0, 70.0, 40.0]  # blank background


def _detector(min_box_ink: float | None = 0.01) -> Detector:
    config = tiny_config()
    config.model.min_box_ink = min_box_ink
    return Detector(RecordingModel([ON_BAR, BESIDE], [0.9, 0.8]), config, score_threshold=0.5)


def test_the_detector_drops_boxes_on_blank_background_unless_switched_off(tmp_path: Path) -> None:
    image = np.full((60, 80), 250, np.uint8)
    image[BAR] = 40
    path = tmp_path / "spread.png"
    Image.fromarray(image).save(path)
    found = _detector().detect(path)
    np.testing.assert_array_equal(found.boxes, [ON_BAR])
    assert len(_detector(None).detect(path).boxes) == 2


@pytest.mark.parametrize("grey", [0, 255])
def test_a_blank_image_counts_nothing_whichever_stain_it_reads_as(tmp_path: Path, grey: int) -> None:
    """An all-black image reads as fluorescence and becomes all white once inverted: the faint pass then
    found no ink to darken (it raised before); an all-white one reads as brightfield."""
    path = tmp_path / "blank.png"
    Image.fromarray(np.full((60, 80), grey, np.uint8)).save(path)
    found = _detector().detect(path)
    assert found.stain == ("fluorescence" if grey == 0 else "brightfield")
    assert len(found.boxes) == 0 and len(found.scores) == 0 and found.ink_level is None
