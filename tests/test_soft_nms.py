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


def reference_soft_nms(boxes, scores, method, iou_threshold, sigma, score_threshold, max_output):  # noqa: ANN001, ANN201
    """The algorithm as Bodla et al. write it, in torch, one pick at a time."""
    from torchvision.ops import box_iou

    current, alive, keep, kept = scores.clone(), torch.ones(len(scores), dtype=torch.bool), [], []
    while len(keep) < min(len(scores), max_output):
        masked = torch.where(alive, current, torch.tensor(float("-inf")))
        best = int(masked.argmax())
        if not alive[best] or current[best] < score_threshold:
            break
        keep.append(best)
        kept.append(float(current[best]))
        alive[best] = False
        iou = box_iou(boxes[best : best + 1], boxes)[0]
        if method == "linear":
            decay = torch.where(iou >= iou_threshold, 1.0 - iou, torch.ones_like(iou))
        else:
            decay = torch.exp(-(iou * iou) / sigma)
        current = torch.where(alive, current * decay, current)
        alive &= current >= score_threshold
    return keep, kept


@pytest.mark.parametrize("method", ["linear", "gaussian"])
def test_matches_the_plain_algorithm_on_crowded_random_boxes(method: str) -> None:
    g = torch.Generator().manual_seed(3)
    xy = torch.rand(300, 2, generator=g) * 200
    boxes = torch.cat([xy, xy + 10 + torch.rand(300, 2, generator=g) * 60], dim=1)
    scores = torch.rand(300, generator=g)
    keep, decayed = soft_nms(boxes, scores, method, 0.5, 0.5, score_threshold=0.05, max_output=120)
    expected_keep, expected_scores = reference_soft_nms(boxes, scores, method, 0.5, 0.5, 0.05, 120)
    assert len(expected_keep) > 50  # the limit or the score floor ends it after many picks
    assert keep.tolist() == expected_keep
    assert decayed.dtype == scores.dtype
    torch.testing.assert_close(decayed, torch.tensor(expected_scores), rtol=1e-5, atol=1e-6)


def test_pairwise_iou_is_torchvisions() -> None:
    from torchvision.ops import box_iou

    from deepace.models.soft_nms import pairwise_iou

    g = torch.Generator().manual_seed(4)
    xy = torch.rand(200, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + torch.rand(200, 2, generator=g) * 40], dim=1)
    boxes[:3] = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    ious = pairwise_iou(boxes)
    torch.testing.assert_close(ious, box_iou(boxes, boxes), rtol=0, atol=0)
    assert ious[0, 1] == 1.0 and ious[0, 2] == 0.0
