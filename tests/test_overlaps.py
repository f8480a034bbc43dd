"""Annotation checks for box pairs suppression cannot keep apart."""

import numpy as np

from deepace.data.overlaps import identical_box_pairs, largest_pair_iou


def test_identical_boxes_are_counted_once_per_repeat() -> None:
    box = [10.0, 10.0, 40.0, 90.0]
    assert identical_box_pairs(np.array([box, [50, 10, 80, 90], box, box])) == 2
    assert identical_box_pairs(np.array([box, [10.0, 10.0, 40.0, 91.0]])) == 0  # one pixel apart
    assert identical_box_pairs(np.zeros((0, 4))) == 0


def test_largest_pair_iou_ignores_each_box_with_itself() -> None:
    crossing = np.array([[0.0, 0.0, 10.0, 10.0], [0.0, 5.0, 10.0, 15.0], [50.0, 50.0, 60.0, 60.0]])
    assert largest_pair_iou(crossing) == 50 / 150
    assert largest_pair_iou(crossing[:1]) == 0.0


def test_box_intersection_is_the_shared_area_of_each_pair() -> None:
    from deepace.metrics.detection import box_intersection

    a = np.array([[0.0, 0.0, 10.0, 10.0]])
    b = np.array([[5.0, 5.0, 15.0, 15.0], [20.0, 20.0, 30.0, 30.0], [2.0, 2.0, 4.0, 4.0]])
    assert box_intersection(a, b).tolist() == [[25.0, 0.0, 4.0]]
