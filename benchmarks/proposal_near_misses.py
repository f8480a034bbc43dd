"""Chromosomes no RPN proposal covers at IoU 0.5, and how near the nearest proposal comes, read from a
head fine-tune feature cache (`benchmarks/head_finetune.py cache`: each view's proposals and ground truth
in network pixels). The figure behind session 20's first-stage near-miss experiment (`model.box_fg_iou`).

    python benchmarks/proposal_near_misses.py --cache ~/deepace-runs/s18/feature_cache [--only taichung]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import torch

from candidate_recall import nearest_iou  # isort: skip  (benchmarks/ is on the path when a script in it runs)

BINS = (0.4, 0.3, 0.0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--only", default=None, help="keep views whose annotation file path contains this")
    args = parser.parse_args()
    index = json.loads((args.cache / "index.json").read_text())
    if args.only:
        index = [item for item in index if args.only in item["coco"]]
    total, bins = 0, Counter()
    for item in index:
        # mmap: the features (most of each file) are never read
        entry = torch.load(args.cache / item["file"], mmap=True, weights_only=False)
        best = nearest_iou(entry["boxes"].float(), entry["proposals"].float())
        total += len(best)
        for iou in best[best <= 0.5].tolist():
            bins[next(low for low in BINS if iou >= low)] += 1
    missed = sum(bins.values())
    print(f"{len(index)} views, {total} chromosomes, {missed} with no proposal at IoU > 0.5")
    for low, high in zip(BINS, (0.5, *BINS[:-1]), strict=True):
        share = 100 * bins[low] / max(missed, 1)
        print(f"  nearest proposal at IoU {low:.1f}-{high:.1f}: {bins[low]} ({share:.1f}%)")


if __name__ == "__main__":
    main()
