import pytest
import torch
from torchvision.ops import box_iou

from deepace.models.detector import build_detector
from deepace.models.hnas import HardNegativeAnchorSampler
from tests.helpers_detection import ONE_CHROMOSOME, sample_head_rois, tiny_config


def _labels(n_pos: int, n_hard: int, n_easy: int) -> torch.Tensor:
    return torch.cat([torch.ones(n_pos), -torch.ones(n_hard), torch.zeros(n_easy)])


def _strata(labels: torch.Tensor, sampler: HardNegativeAnchorSampler) -> tuple[int, int, int]:
    pos, neg = sampler([labels])
    pos, neg = pos[0].bool(), neg[0].bool()
    assert not (pos & neg).any()
    assert (labels[pos] == 1).all()
    return int(pos.sum()), int((neg & (labels == -1)).sum()), int((neg & (labels == 0)).sum())


def test_paper_proportions_when_every_stratum_is_plentiful() -> None:
    torch.manual_seed(0)
    # 512 anchors: 25% positives (128), half of the other 384 hard (192), the rest easy (192).
    assert _strata(_labels(1000, 1000, 50000), HardNegativeAnchorSampler()) == (128, 192, 192)


def test_few_positives_fill_from_negatives() -> None:
    torch.manual_seed(0)
    # 40 positives: 472 negatives left, split 236 hard / 236 easy.
    assert _strata(_labels(40, 5000, 50000), HardNegativeAnchorSampler()) == (40, 236, 236)


def test_few_hard_negatives_fill_from_easy() -> None:
    torch.manual_seed(0)
    assert _strata(_labels(1000, 30, 50000), HardNegativeAnchorSampler()) == (128, 30, 354)


def test_few_easy_negatives_fill_from_hard() -> None:
    torch.manual_seed(0)
    assert _strata(_labels(1000, 5000, 50), HardNegativeAnchorSampler()) == (128, 334, 50)


def test_standard_sampler_never_draws_hard_negatives() -> None:
    from torchvision.models.detection._utils import BalancedPositiveNegativeSampler

    labels = _labels(100, 1000, 1000)
    _pos, neg = BalancedPositiveNegativeSampler(512, 0.25)([labels])
    assert int((neg[0].bool() & (labels == -1)).sum()) == 0


def _sampled_roi_ious(hard_negative_iou: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """IoU with the one chromosome and label of each RoI the box head trains on, from 10 near-copies of
    it, 40 boxes straddling it (IoU 0.3) and 400 on background."""
    near = ONE_CHROMOSOME + torch.linspace(-2, 2, 10)[:, None]
    straddling = torch.tensor([[100.0, 100.0, 130.0, 130.0]]).repeat(40, 1)
    rois, labels = sample_head_rois(torch.cat([near, straddling]), box_hard_negative_iou=hard_negative_iou)
    return box_iou(rois, ONE_CHROMOSOME)[:, 0], labels


def test_box_head_hard_negatives_are_half_of_the_negatives() -> None:
    torch.manual_seed(0)
    iou, labels = _sampled_roi_ious(0.1)
    assert set(labels.tolist()) == {0, 1}  # hard negatives are trained as background
    assert int((labels == 1).sum()) == 8
    negative = labels == 0
    assert int((negative & (iou >= 0.1)).sum()) == 12 and int((negative & (iou < 0.1)).sum()) == 12


def test_box_head_default_samples_negatives_uniformly() -> None:
    torch.manual_seed(0)
    iou, labels = _sampled_roi_ious(None)
    negative = labels == 0
    # 24 negatives drawn from 40 straddling + 400 background boxes: ~2 straddling ones, not 12
    assert int(negative.sum()) == 24 and int((negative & (iou >= 0.1)).sum()) <= 6


def test_box_head_hard_negative_bound_must_lie_below_the_foreground_iou() -> None:
    with pytest.raises(ValueError, match="hard_negative_iou"):
        build_detector(tiny_config(box_hard_negative_iou=0.5).model)
