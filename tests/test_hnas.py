import torch

from deepace.models.hnas import HardNegativeAnchorSampler


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
