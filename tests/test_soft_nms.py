import math

import pytest
import torch

from deepace.models.soft_nms import soft_nms

BOXES = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 8], [20, 20, 30, 30]], dtype=torch.float)
SCORES = torch.tensor([0.9, 0.8, 0.7])
IOU_01 = 0.8  # box 1 covers 80% of box 0 and lies inside it


def test_linear_decays_overlapping_box_by_one_minus_iou() -> None:
    keep, scores = soft_nms(BOXES, SCORES, "linear", iou_threshold=0.5)
    assert keep.tolist() == [0, 2, 1]  # box 1 falls from 0.8 to 0.8 * 0.2 = 0.16, below box 2
    assert scores.tolist() == pytest.approx([0.9, 0.7, 0.8 * (1 - IOU_01)])


def test_linear_leaves_boxes_below_threshold_alone() -> None:
    keep, scores = soft_nms(BOXES, SCORES, "linear", iou_threshold=0.85)
    assert keep.tolist() == [0, 1, 2]
    assert scores.tolist() == pytest.approx([0.9, 0.8, 0.7])


def test_gaussian_decay_hand_computed() -> None:
    keep, scores = soft_nms(BOXES, SCORES, "gaussian", sigma=0.5)
    assert keep.tolist() == [0, 2, 1]
    assert scores[2].item() == pytest.approx(0.8 * math.exp(-(IOU_01**2) / 0.5))
    assert scores[1].item() == pytest.approx(0.7)  # disjoint box untouched


def test_score_threshold_drops_decayed_boxes_and_max_output() -> None:
    keep, _ = soft_nms(BOXES, SCORES, "linear", iou_threshold=0.5, score_threshold=0.2)
    assert keep.tolist() == [0, 2]
    keep, _ = soft_nms(BOXES, SCORES, "gaussian", max_output=1)
    assert keep.tolist() == [0]


def test_empty_and_bad_method() -> None:
    keep, scores = soft_nms(torch.zeros((0, 4)), torch.zeros(0))
    assert keep.numel() == 0 and scores.numel() == 0
    with pytest.raises(ValueError):
        soft_nms(BOXES, SCORES, "cubic")  # type: ignore[arg-type]
