"""Training throughput (images/s) on this CPU for each backbone, at the `cpu` preset's resolution.

Usage:

    python benchmarks/train_throughput.py --coco ~/deepace-runs/data/taichung/train.json --iters 12
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from deepace.config import PRESETS
from deepace.data.coco import read_coco
from deepace.data.dataset import DetectionDataset
from deepace.models.detector import build_detector


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--coco", type=Path, required=True)
    parser.add_argument("--iters", type=int, default=12)
    parser.add_argument("--backbones", nargs="+", default=["mobilenet_v2", "vgg16"])
    parser.add_argument("--input-scale", type=float, default=PRESETS["cpu"].model.input_scale)
    args = parser.parse_args()
    torch.set_num_threads(2)
    dataset = DetectionDataset(read_coco(args.coco)[: args.iters + 2])
    out = {}
    for backbone in args.backbones:
        torch.manual_seed(0)
        config = replace(PRESETS["cpu"].model, backbone=backbone, input_scale=args.input_scale)
        model = build_detector(config, load_backbone_weights=False).train()
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
        times = []
        for i in range(args.iters + 2):
            image, target = dataset.load(i)
            tic = time.perf_counter()
            loss = sum(model([image], [target]).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            if i >= 2:  # first two: warm-up
                times.append(time.perf_counter() - tic)
        out[backbone] = {
            "s_per_image_median": statistics.median(times),
            "images_per_s": 1 / statistics.median(times),
        }
    print(json.dumps({"input_scale": args.input_scale, "iters": args.iters, **out}, indent=2))


if __name__ == "__main__":
    main()
