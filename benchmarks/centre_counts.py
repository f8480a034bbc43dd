"""Counting chromosomes as peaks of a centre heatmap read from the shipped detector's frozen features
(an experiment, not in the paper): does a CenterNet-style head count the clusters the box detector's
candidates miss?

The box detector's counts are capped by its candidates (a perfect rescorer of them counts 67% of G-band
validation cells exactly, BENCHMARKS.md "Session 19"): neighbouring chromosomes' axis-aligned boxes
overlap so much that one of them is suppressed or never proposed. Their centres are still apart, so a
heatmap with one peak per chromosome need not lose them. The head reads the cached pyramid maps of
`benchmarks/head_finetune.py cache` (stride 8 and 16, 128 channels each), works at stride 8 and puts
out a stride-4 heatmap through a pixel shuffle; trained with CenterNet's penalty-reduced focal loss
(Zhou et al. 2019) on Gaussians at the annotated boxes' centres; a cell's count is the number of local
maxima (3 × 3) above a threshold chosen on training cells.

    python benchmarks/centre_counts.py train --cache DIR/train --out OUT [--iterations N]
    python benchmarks/centre_counts.py evaluate --cache DIR/val --train-cache DIR/train --out OUT
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deepace.data.coco import read_coco

OUTPUT_STRIDE = 4


class CentreHead(nn.Module):
    """Both pyramid maps → a stride-4 centre-heatmap logit map."""

    def __init__(self, in_channels: int = 128, width: int = 96) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(2 * in_channels, width, 1)
        self.body = nn.Sequential(
            *[
                layer
                for dilation in (1, 2, 4, 1)
                for layer in (nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation), nn.ReLU())
            ]
        )
        self.out = nn.Conv2d(width, 4, 1)  # 2 × 2 sub-cells, pixel-shuffled to stride 4
        nn.init.constant_(self.out.bias, -2.19)  # CenterNet's prior: sigmoid ≈ 0.1

    def forward(self, fine: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        coarse = F.interpolate(coarse, size=fine.shape[-2:], mode="bilinear", align_corners=False)
        x = F.relu(self.reduce(torch.cat([fine, coarse], 1)))
        x = x + self.body(x)
        return F.pixel_shuffle(self.out(x), 2)


def centre_targets(boxes: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """One Gaussian per box at its centre on the stride-4 grid (maximum where they overlap); σ grows
    with the box's short side, so that the peaks of side-by-side chromosomes stay apart."""
    height, width = shape
    target = torch.zeros(height, width)
    ys = torch.arange(height, dtype=torch.float32)[:, None]
    xs = torch.arange(width, dtype=torch.float32)[None, :]
    for x1, y1, x2, y2 in boxes.tolist():
        cx, cy = (x1 + x2) / 2 / OUTPUT_STRIDE, (y1 + y2) / 2 / OUTPUT_STRIDE
        short = min(x2 - x1, y2 - y1) / OUTPUT_STRIDE
        sigma = min(max(short / 6, 0.7), 2.0)
        ix, iy = min(int(cx), width - 1), min(int(cy), height - 1)
        g = torch.exp(-((xs - ix) ** 2 + (ys - iy) ** 2) / (2 * sigma**2))
        target = torch.maximum(target, g)
        target[iy, ix] = 1.0
    return target


def focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss (its eq. 1, α = 2, β = 4), over the number of peaks."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    peak = target.eq(1).float()
    positive = -((1 - p) ** 2) * torch.log(p) * peak
    negative = -((1 - target) ** 4) * p**2 * torch.log(1 - p) * (1 - peak)
    return (positive.sum() + negative.sum()) / peak.sum().clamp(min=1)


def load_cache(folder: Path, limit: int | None = None) -> list[dict]:
    index = json.loads((folder / "index.json").read_text())
    entries = []
    for item in index[:limit]:
        if item["view"] != 0:
            continue
        e = torch.load(folder / item["file"], weights_only=False)
        fine, coarse = e["features"]["0"], e["features"]["1"]
        shape = (fine.shape[-2] * 2, fine.shape[-1] * 2)
        entries.append(
            {
                "fine": fine,
                "coarse": coarse,
                "target": centre_targets(e["boxes"], shape).half(),
                "boxes": len(e["boxes"]),
                "coco": item["coco"],
                "record": item["record"],
            }
        )
    return entries


def peaks(heat: torch.Tensor) -> torch.Tensor:
    """Scores of the local maxima (3 × 3) of a sigmoid heatmap, falling."""
    pooled = F.max_pool2d(heat[None, None], 3, stride=1, padding=1)[0, 0]
    scores = heat[(heat == pooled) & (heat > 0.01)]
    return scores.sort(descending=True).values


def crop(entry: dict, size: int, rng: random.Random) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random window of `size` × `size` stride-8 cells (an even offset, so the stride-16 map is cut on
    its own cells) of one cached cell: the maps and the target."""
    fine, coarse, target = entry["fine"], entry["coarse"], entry["target"]
    height, width = fine.shape[-2:]
    y = 2 * rng.randrange(max(1, (height - size) // 2 + 1))
    x = 2 * rng.randrange(max(1, (width - size) // 2 + 1))
    fine = fine[..., y : y + size, x : x + size]
    coarse = coarse[..., y // 2 : (y + size + 1) // 2, x // 2 : (x + size + 1) // 2]
    target = target[2 * y : 2 * (y + size), 2 * x : 2 * (x + size)]
    return fine.float(), coarse.float(), target.float()


def train(args: argparse.Namespace) -> None:
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    entries = load_cache(args.cache)
    entries = entries[: len(entries) - args.hold_out]  # the last cells are kept for the threshold
    print(f"{len(entries)} cached cells", flush=True)
    head = CentreHead()
    optimiser = torch.optim.AdamW(head.parameters(), lr=args.lr, weight_decay=1e-4)
    order = random.Random(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    start, running = time.time(), []
    for it in range(args.iterations):
        lr = args.lr * 0.5 * (1 + math.cos(math.pi * it / args.iterations))
        for group in optimiser.param_groups:
            group["lr"] = lr
        e = entries[order.randrange(len(entries))]
        fine, coarse, target = crop(e, args.crop, order)
        if order.random() < 0.5:  # a flip of the maps: not the features of the flipped image, but close
            fine, coarse, target = fine.flip(-1), coarse.flip(-1), target.flip(-1)
        logits = head(fine, coarse)[0, 0]
        loss = focal_loss(logits, target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        running.append(loss.item())
        if (it + 1) % 100 == 0:
            elapsed = time.time() - start
            print(f"it {it + 1} loss {np.mean(running):.3f} lr {lr:.2e} {elapsed:.0f}s", flush=True)
            running = []
    torch.save(head.state_dict(), args.out / "centre_head.pt")


@torch.inference_mode()
def cell_peaks(head: CentreHead, entries: list[dict]) -> list[np.ndarray]:
    head.eval()
    return [peaks(torch.sigmoid(head(e["fine"].float(), e["coarse"].float())[0, 0])).numpy() for e in entries]


def counts_at(scores: list[np.ndarray], threshold: float) -> np.ndarray:
    return np.array([(s >= threshold).sum() for s in scores])


def expected_counts(entries: list[dict]) -> np.ndarray:
    records = {}
    out = []
    for e in entries:
        if e["coco"] not in records:
            records[e["coco"]] = read_coco(e["coco"])
        record = records[e["coco"]][e["record"]]
        out.append(record.expected_count if record.expected_count is not None else e["boxes"])
    return np.array(out)


def evaluate(args: argparse.Namespace) -> None:
    torch.set_num_threads(2)
    head = CentreHead()
    head.load_state_dict(torch.load(args.out / "centre_head.pt"))
    fit = load_cache(args.train_cache)[-args.hold_out :]
    fit_scores, fit_truth = cell_peaks(head, fit), expected_counts(fit)
    grid = np.arange(0.05, 0.8, 0.0125)
    errors = [np.abs(counts_at(fit_scores, t) - fit_truth).mean() for t in grid]
    threshold = float(grid[int(np.argmin(errors))])
    val = load_cache(args.cache)
    truth = expected_counts(val)
    counts = counts_at(cell_peaks(head, val), threshold)
    diff = counts - truth
    result = {
        "threshold": threshold,
        "fit_exact": float((counts_at(fit_scores, threshold) == fit_truth).mean()),
        "cells": len(val),
        "exact": float((diff == 0).mean()),
        "within_1": float((np.abs(diff) <= 1).mean()),
        "mae": float(np.abs(diff).mean()),
        "bias": float(diff.mean()),
    }
    print(json.dumps(result, indent=1))
    (args.out / "val_counts.json").write_text(
        json.dumps({**result, "counts": counts.tolist(), "truth": truth.tolist()})
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--cache", type=Path, required=True)
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--iterations", type=int, default=3000)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--hold-out", type=int, default=300)
    t.add_argument("--crop", type=int, default=64, help="training window, in stride-8 cells")
    t.set_defaults(run=train)
    e = sub.add_parser("evaluate")
    e.add_argument("--cache", type=Path, required=True)
    e.add_argument("--train-cache", type=Path, required=True)
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--hold-out", type=int, default=300)
    e.set_defaults(run=evaluate)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
