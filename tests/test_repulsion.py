import pytest
import torch

from deepace.models.repulsion import (
    intersection_area,
    iog,
    repulsion_terms,
    smooth_ln,
    truncated_normalized_overlap,
)

G = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
R = torch.tensor([[6.0, 0.0, 16.0, 10.0]])  # overlaps G by 40% of its area


def _tn(b: torch.Tensor, g: torch.Tensor = G, r: torch.Tensor = R) -> float:
    return truncated_normalized_overlap(b, g, r).item()


def test_zero_when_prediction_is_the_target() -> None:
    assert _tn(G) == 0.0
    assert repulsion_terms("tnrl", G, G, R).item() == 0.0


def test_one_when_prediction_is_the_repulsion_ground_truth() -> None:
    assert _tn(R) == pytest.approx(1.0)
    assert torch.isfinite(repulsion_terms("tnrl", R, G, R)).all()


def test_zero_when_target_contains_repulsion_box() -> None:
    inner = torch.tensor([[2.0, 2.0, 5.0, 5.0]])
    shifted = torch.tensor([[1.0, 1.0, 11.0, 11.0]])
    assert _tn(shifted, G, inner) == 0.0
    # RepGT, by contrast, is large there: IoG(B, R) = 1.
    assert iog(shifted, inner).item() == pytest.approx(1.0)


def test_eq4_equals_eq3_normalisation() -> None:
    b = torch.tensor([[3.0, 1.0, 13.0, 9.0]])
    iog_b, iog_g = iog(b, R).item(), iog(G, R).item()
    eq3 = (iog_b - iog_g) / (1 - iog_g)
    assert _tn(b) == pytest.approx(eq3)
    area_r = 100.0
    eq4 = (intersection_area(b, R).item() - intersection_area(G, R).item()) / (area_r - 40.0)
    assert _tn(b) == pytest.approx(eq4)


def test_truncated_at_zero_when_moving_away_from_repulsion_box() -> None:
    away = torch.tensor([[-3.0, 0.0, 7.0, 10.0]])
    assert _tn(away) == 0.0


def test_gradient_flows_only_through_prediction() -> None:
    b = torch.tensor([[3.0, 1.0, 13.0, 9.0]], requires_grad=True)
    g, r = G.clone().requires_grad_(), R.clone().requires_grad_()
    repulsion_terms("tnrl", b, g, r).sum().backward()
    assert b.grad is not None and b.grad.abs().sum() > 0
    assert g.grad is None and r.grad is None
    # pushing B away from R (decreasing x2) lowers the loss
    assert b.grad[0, 2] > 0


def test_finite_when_target_almost_covers_repulsion_box() -> None:
    r = torch.tensor([[0.0, 0.0, 10.0, 10.0 + 1e-7]])
    for box in (G, r, torch.tensor([[0.0, 0.0, 12.0, 12.0]])):
        b = box.clone().requires_grad_()
        value = repulsion_terms("tnrl", b, G, r)
        value.sum().backward()
        assert torch.isfinite(value).all() and torch.isfinite(b.grad).all()


def test_smooth_ln_matches_definition() -> None:
    x = torch.tensor([0.0, 0.3, 0.6, 0.9])
    assert smooth_ln(x, 1.0).tolist() == pytest.approx((-torch.log(1 - x)).tolist())
    sigma = 0.5
    expected = [
        -torch.log(torch.tensor(1 - v)).item()
        if v <= sigma
        else (v - sigma) / (1 - sigma) - torch.log(torch.tensor(1 - sigma)).item()
        for v in x.tolist()
    ]
    assert smooth_ln(x, sigma).tolist() == pytest.approx(expected)


def test_repgt_is_iog_with_repulsion_box() -> None:
    assert repulsion_terms("repgt", G, G, R).item() == pytest.approx(-torch.log(torch.tensor(0.6)).item())
    with pytest.raises(ValueError):
        repulsion_terms("other", G, G, R)  # type: ignore[arg-type]
