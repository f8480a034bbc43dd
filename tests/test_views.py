"""deepace/views.py: a cell counted in several orientations, its median orientation kept, its boxes put back
where the chromosomes are."""

import numpy as np
import pytest

from deepace.inference import Detection
from deepace.views import (
    MAX_VIEWS,
    ORIENTATIONS,
    boxes_to_original,
    median_index,
    median_view,
    oriented,
    registered,
    unoriented,
)

BOX = np.array([[10.0, 4.0, 14.0, 30.0]], np.float32)  # x1, y1, x2, y2 of the dark bar below


def spread() -> np.ndarray:
    """40 × 60, light, with one dark upright bar at x 10-14, y 4-30 (not symmetric under any turn)."""
    image = np.full((40, 60), 240, np.uint8)
    image[4:30, 10:14] = 30
    return image


def dark_box(image: np.ndarray) -> np.ndarray:
    """The box around an image's dark pixels."""
    ys, xs = np.nonzero(image < 128)
    return np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)


def test_the_orientations_are_the_eight_distinct_ones() -> None:
    seen = {
        oriented(spread(), t, m).tobytes() + bytes(oriented(spread(), t, m).shape) for t, m in ORIENTATIONS
    }
    assert len(ORIENTATIONS) == MAX_VIEWS == len(seen) == 8
    assert ORIENTATIONS[0] == (0, False)  # the image as it is comes first


@pytest.mark.parametrize(("turns", "mirrored"), ORIENTATIONS)
def test_boxes_found_in_any_orientation_come_back_onto_the_chromosome(turns: int, mirrored: bool) -> None:
    seen = oriented(spread(), turns, mirrored)
    found = dark_box(seen)
    np.testing.assert_array_equal(boxes_to_original(found, seen.shape, turns, mirrored), BOX)
    np.testing.assert_array_equal(unoriented(seen, turns, mirrored), spread())


def test_the_median_orientation_is_the_earliest_with_the_median_count() -> None:
    assert median_index([46, 47, 45]) == 0
    assert median_index([47, 46, 45]) == 1
    assert median_index([45, 47, 46, 46, 45]) == 2  # median 46: the first orientation that counted it
    assert median_index([44, 46, 45, 47]) == 2  # even: the lower middle (45)
    assert median_index([46]) == 0


def test_median_view_keeps_the_median_count_with_its_boxes_in_place() -> None:
    """A stand-in detector that finds the bar, and in the mirrored orientations a second, false box."""

    calls = []

    def detect(image: np.ndarray) -> Detection:
        calls.append(image.shape)
        box = dark_box(image)
        mirrored = len(calls) in (2, 3)  # ORIENTATIONS[1] and [2] are the mirror images
        boxes = np.concatenate([box, [[0, 0, 3, 3]]]) if mirrored else box
        scores = np.array([0.9, 0.8] if mirrored else [0.9], np.float32)
        return Detection(image, "brightfield", boxes.astype(np.float32), scores)

    found, counts = median_view(detect, spread(), views=5, threshold=0.5)
    assert counts == (1, 2, 2, 1, 1)
    assert len(calls) == 5 and calls[4] == (60, 40)  # the fifth is a quarter turn
    np.testing.assert_array_equal(found.boxes, BOX)
    np.testing.assert_array_equal(found.gray, spread())
    calls.clear()
    found, counts = median_view(detect, spread(), views=3, threshold=0.5)
    assert counts == (1, 2, 2)  # the median is a mirror image's count, with its false box mapped back too
    np.testing.assert_array_equal(found.boxes, [BOX[0], [57, 0, 60, 3]])
    with pytest.raises(ValueError):
        median_view(detect, spread(), views=4, threshold=0.5)  # even: no single median orientation


def bars() -> tuple[np.ndarray, np.ndarray]:
    """A 60 × 80 spread of six dark bars of different sizes (no two alike under any turn), and their boxes."""
    image = np.full((60, 80), 240, np.uint8)
    boxes = []
    for i, (x, y, w, h) in enumerate(
        [(3, 4, 4, 20), (12, 30, 5, 25), (25, 5, 3, 14), (40, 20, 6, 30), (55, 3, 4, 12), (66, 28, 7, 22)]
    ):
        image[y : y + h, x : x + w] = 20 + i
        boxes.append([x, y, x + w, y + h])
    return image, np.array(boxes, np.float32)


def test_registered_moves_boxes_by_the_median_offset_of_their_matches() -> None:
    _, truth = bars()
    shifted = truth + np.array([0.5, 1.5, 0.5, 1.5], np.float32)
    shifted[0] += 9.0  # one box off by more: the median ignores it
    extra = np.array([[70, 1, 75, 5]], np.float32)  # below the threshold: moved along, not matched
    boxes = np.concatenate([shifted, extra])
    counted = np.array([True] * 6 + [False])
    out = registered(boxes, counted, truth)
    np.testing.assert_allclose(out[1:6], truth[1:])
    np.testing.assert_allclose(out[6], extra[0] - [0.5, 1.5, 0.5, 1.5])
    # Too few pairs to measure an offset: left as they were.
    np.testing.assert_array_equal(registered(boxes[:4], counted[:4], truth[:4]), boxes[:4])
    np.testing.assert_array_equal(registered(boxes, counted, np.zeros((0, 4))), boxes)


def test_median_view_registers_the_kept_orientation_on_the_image_as_it_is() -> None:
    """A stand-in detector whose boxes sit 2 px low in whatever frame it sees, with two false boxes in the
    mirror image and one in the upside-down mirror image, so that the latter's count is the median of
    three: mapped back, its boxes would sit 2 px high; registered, where the detector puts them upright."""
    image, truth = bars()
    calls = []

    def detect(seen: np.ndarray) -> Detection:
        calls.append(seen.shape)
        boxes = np.concatenate([dark_box(np.where(seen == v, 0, 255)) for v in range(20, 26)])
        boxes = boxes + np.array([0, 2, 0, 2], np.float32)
        false = [[0, 0, 3, 3], [5, 0, 8, 3]][: {2: 2, 3: 1}.get(len(calls), 0)]
        boxes = np.concatenate([boxes, np.reshape(false, (-1, 4))]).astype(np.float32)
        return Detection(seen, "brightfield", boxes, np.full(len(boxes), 0.9, np.float32))

    found, counts = median_view(detect, image, views=3, threshold=0.5)
    assert counts == (6, 8, 7)
    np.testing.assert_allclose(found.boxes[:6], truth + [0, 2, 0, 2])
    calls.clear()
    mapped = boxes_to_original(detect(oriented(image, 2, True)).boxes, image.shape, 2, True)
    np.testing.assert_allclose(mapped[:6], truth - [0, 2, 0, 2])  # as it would be without registering
