"""benchmarks/centre_counts.py: centre-heatmap targets, peaks and the focal loss on hand-made cases."""

import importlib.util
import random
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "centre_counts.py"
spec = importlib.util.spec_from_file_location("centre_counts", SCRIPT)
centre_counts = importlib.util.module_from_spec(spec)
spec.loader.exec_module(centre_counts)

# two side-by-side chromosomes 20 px apart (their boxes overlap at IoU ~0.5) and one alone
BOXES = torch.tensor([[100.0, 100.0, 130.0, 170.0], [120.0, 100.0, 150.0, 170.0], [300.0, 40.0, 320.0, 90.0]])


def test_each_box_gets_one_peak_of_one_at_its_centre_on_the_stride_4_grid() -> None:
    target = centre_counts.centre_targets(BOXES, (64, 96))
    assert target.max() == 1.0
    assert target[33, 28] == 1.0 and target[33, 33] == 1.0 and target[16, 77] == 1.0
    assert int((target == 1.0).sum()) == 3
    assert len(centre_counts.peaks(target)) == 3  # the side-by-side pair stays two peaks


def test_a_heatmap_matching_the_target_costs_less_than_an_empty_or_shifted_one() -> None:
    target = centre_counts.centre_targets(BOXES, (64, 96))
    matching = torch.logit(target.clamp(0.02, 0.98))
    empty = torch.full_like(target, -4.0)
    shifted = matching.roll(6, dims=1)
    loss = centre_counts.focal_loss
    assert loss(matching, target) < loss(shifted, target)
    assert loss(matching, target) < loss(empty, target)


def test_a_crop_cuts_the_maps_and_the_target_on_the_same_window() -> None:
    fine = torch.arange(20 * 24, dtype=torch.float32).reshape(1, 1, 20, 24)
    coarse = torch.arange(10 * 12, dtype=torch.float32).reshape(1, 1, 10, 12)
    target = torch.arange(40 * 48, dtype=torch.float32).reshape(40, 48)
    entry = {"fine": fine, "coarse": coarse, "target": target}
    for seed in range(10):
        f, c, t = centre_counts.crop(entry, 8, random.Random(seed))
        y, x = divmod(int(f[0, 0, 0, 0]), 24)
        assert y % 2 == 0 and x % 2 == 0
        assert f.shape[-2:] == (8, 8) and c.shape[-2:] == (4, 4) and t.shape == (16, 16)
        assert int(c[0, 0, 0, 0]) == (y // 2) * 12 + x // 2
        assert int(t[0, 0]) == (2 * y) * 48 + 2 * x


def test_the_head_puts_out_a_stride_4_map_for_stride_8_and_16_inputs() -> None:
    head = centre_counts.CentreHead(in_channels=8, width=8)
    out = head(torch.randn(1, 8, 12, 14), torch.randn(1, 8, 6, 7))
    assert out.shape == (1, 1, 24, 28)
