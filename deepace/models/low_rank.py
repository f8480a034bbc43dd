"""A low-rank first layer for the fc box heads (not in the paper; `model.fc6_rank`).

Why: each fc head stage's first layer (fc6: 128 × 7 × 7 = 6,272 inputs to 1,024 units, 6.4 M weights) is
most of the shipped file, three stages of it 39 of 57 MB in float16 (BENCHMARKS.md, "Session 32"). Written
as two layers through `rank` units, 6,272 → r → 1,024 with no activation between, it computes a matrix of
rank r: at r = 256 under a third of the weights and of the multiply-adds. A trained full layer starts its
factorised form as its best rank-r approximation (truncated SVD; Eckart–Young), and a head-only fine-tune
takes back what the approximation lost.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["LowRankLinear", "adapt_low_rank", "factorise"]


class LowRankLinear(nn.Module):
    """y = up(down(x)): a linear map of `in_features` to `out_features` of rank at most `rank`, with
    nn.Linear's `in_features` and `out_features` attributes (ContextTwoMLPHead reads them)."""

    def __init__(self, in_features: int, out_features: int, rank: int) -> None:
        super().__init__()
        if not 0 < rank <= min(in_features, out_features):
            raise ValueError(f"rank must be in 1…{min(in_features, out_features)}, got {rank}")
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.up(self.down(x))


def factorise(weight: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """(down, up) with up @ down the best rank-`rank` approximation of `weight` in the Frobenius norm; the
    singular values are split evenly (their square roots on each side) so both factors train at one scale."""
    u, s, vh = torch.linalg.svd(weight.float(), full_matrices=False)
    root = s[:rank].sqrt()
    return (root[:, None] * vh[:rank]).to(weight.dtype), (u[:, :rank] * root).to(weight.dtype)


def adapt_low_rank(state: dict[str, Tensor], fresh: dict[str, Tensor]) -> dict[str, Tensor]:
    """`state` for a model whose low-rank layers (`fresh` holds their `.down`/`.up` keys) may be full ones in
    `state`, or the reverse, or of another rank: a full layer is factorised (truncated SVD), a factorised
    one multiplied out and, if the ranks differ, factorised again."""
    adapted = dict(state)
    prefixes = {k[: -len(".down.weight")] for k in state if k.endswith(".down.weight")}
    for prefix in prefixes:  # factorised in the source: multiply out unless the target has the same rank
        down, up = state[f"{prefix}.down.weight"], state[f"{prefix}.up.weight"]
        if fresh.get(f"{prefix}.down.weight", torch.empty(0)).shape == down.shape:
            continue
        adapted[f"{prefix}.weight"] = (up.float() @ down.float()).to(down.dtype)
        adapted[f"{prefix}.bias"] = adapted.pop(f"{prefix}.up.bias")
        del adapted[f"{prefix}.down.weight"], adapted[f"{prefix}.up.weight"]
    for key in list(adapted):  # full in the (now) source, factorised in the target
        prefix = key[: -len(".weight")]
        if key.endswith(".weight") and f"{prefix}.down.weight" in fresh and key not in fresh:
            rank = fresh[f"{prefix}.down.weight"].shape[0]
            down, up = factorise(adapted.pop(key), rank)
            adapted[f"{prefix}.down.weight"], adapted[f"{prefix}.up.weight"] = down, up
            adapted[f"{prefix}.up.bias"] = adapted.pop(f"{prefix}.bias")
    return adapted
