"""Low-rank first head layers (model.fc6_rank): the best rank-r approximation of a trained layer, carried
over from full weights and back."""

from pathlib import Path

import pytest
import torch
from torch import nn

from deepace.inference import network_from_payload, read_model_file, save_model
from deepace.models.detector import adapt_state_dict, build_detector
from deepace.models.low_rank import LowRankLinear, factorise
from tests.helpers_detection import tiny_config

HEADS = {"fpn": True, "fpn_channels": 16, "head": "fc", "repulsion": "none", "cascade_ious": (0.6,)}


def orthonormal(n: int, k: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(n, k, generator=torch.Generator().manual_seed(seed)))
    return q


def test_at_full_rank_the_factorised_layer_is_the_layer() -> None:
    torch.manual_seed(0)
    layer, low = nn.Linear(12, 5), LowRankLinear(12, 5, 5)
    down, up = factorise(layer.weight.detach(), 5)
    low.load_state_dict({"down.weight": down, "up.weight": up, "up.bias": layer.bias.detach()})
    x = torch.randn(7, 12)
    torch.testing.assert_close(low(x), layer(x))


def test_truncation_keeps_the_largest_singular_values_and_splits_them_evenly() -> None:
    u, v = orthonormal(6, 4, 1), orthonormal(9, 4, 2)
    weight = u @ torch.diag(torch.tensor([5.0, 3.0, 1.0, 0.5])) @ v.T  # singular values known
    down, up = factorise(weight, 2)
    kept = u[:, :2] @ torch.diag(torch.tensor([5.0, 3.0])) @ v[:, :2].T
    torch.testing.assert_close(up @ down, kept)
    # Eckart–Young: what is lost is exactly the dropped singular values
    torch.testing.assert_close(torch.linalg.norm(weight - up @ down) ** 2, torch.tensor(1.0**2 + 0.5**2))
    torch.testing.assert_close(down.norm(dim=1), torch.tensor([5.0, 3.0]).sqrt())
    torch.testing.assert_close(up.norm(dim=0), torch.tensor([5.0, 3.0]).sqrt())


def test_the_rank_must_fit_the_layer() -> None:
    with pytest.raises(ValueError, match="rank"):
        LowRankLinear(12, 5, 6)


def test_a_trained_model_factorised_at_full_rank_detects_as_before_and_multiplies_back_out() -> None:
    torch.manual_seed(0)
    full = build_detector(tiny_config(**HEADS, roi_context=2.0).model).eval()
    # fc6: 16 × 7 × 7 = 784 inputs to 1,024 units, so rank 784 is full rank
    low = build_detector(tiny_config(**HEADS, roi_context=2.0, fc6_rank=784).model).eval()
    low.load_state_dict(adapt_state_dict(full.state_dict(), full.config, low))  # strict
    image = torch.rand(3, 128, 160)
    with torch.no_grad():
        expected, got = full([image])[0], low([image])[0]
    assert len(expected["boxes"]) > 0
    torch.testing.assert_close(got["boxes"], expected["boxes"], atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(got["scores"], expected["scores"], atol=1e-4, rtol=1e-4)
    back = adapt_state_dict(low.state_dict(), low.config, full)
    assert back.keys() == full.state_dict().keys()
    torch.testing.assert_close(
        back["roi_heads.box_head.fc6.weight"], full.state_dict()["roi_heads.box_head.fc6.weight"]
    )


def test_a_lower_rank_has_fewer_weights_every_stage_learns_them_and_needs_fc_heads() -> None:
    torch.manual_seed(0)
    full = build_detector(tiny_config(**HEADS).model)
    low = build_detector(tiny_config(**HEADS, fc6_rank=8).model).train()
    heads = [low.roi_heads.box_head, low.roi_heads.stages[0].box_head]
    assert all(isinstance(h.fc6, LowRankLinear) for h in heads)
    saved = sum(p.numel() for p in full.parameters()) - sum(p.numel() for p in low.parameters())
    assert saved == 2 * (784 * 1024 - 8 * (784 + 1024))  # two stages' fc6
    target = {"boxes": torch.tensor([[10.0, 10.0, 40.0, 70.0]]), "labels": torch.ones(1).long()}
    sum(low([torch.rand(3, 128, 160)], [target]).values()).backward()
    assert all(h.fc6.down.weight.grad.abs().sum() > 0 and h.fc6.up.weight.grad.abs().sum() > 0 for h in heads)
    with pytest.raises(ValueError, match="fc box head"):
        build_detector(tiny_config(**{**HEADS, "head": "conv"}, fc6_rank=8).model)


def test_a_model_file_loads_factorised_by_an_override_and_at_another_rank(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = tiny_config(**HEADS)
    save_model(tmp_path / "full.pt", build_detector(config.model).eval(), config, 0.5, {})
    low, low_config = network_from_payload(read_model_file(tmp_path / "full.pt"), ["model.fc6_rank=32"])
    assert low_config.model.fc6_rank == 32 and low.roi_heads.box_head.fc6.rank == 32
    save_model(tmp_path / "low.pt", low, low_config, 0.5, {})
    lower, _ = network_from_payload(read_model_file(tmp_path / "low.pt"), ["model.fc6_rank=4"])
    weight = low.roi_heads.box_head.fc6.up.weight @ low.roi_heads.box_head.fc6.down.weight
    down, up = factorise(weight.detach(), 4)
    torch.testing.assert_close(
        lower.roi_heads.box_head.fc6.up.weight @ lower.roi_heads.box_head.fc6.down.weight,
        up @ down,
        atol=1e-3,
        rtol=1e-3,
    )
