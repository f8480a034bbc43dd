"""The best any detector can count through a given suppression: a perfect one (every chromosome's
ground-truth box, nothing else) run through the heads' hard NMS at each IoU, then Gaussian Soft-NMS.

    python benchmarks/suppression_ceiling.py --coco ~/deepace-runs/data/taichung/val.json

Two chromosomes lying across each other have boxes that overlap heavily; hard NMS at IoU t keeps only one
of any two boxes overlapping at IoU > t, so a cell holding such a pair cannot be counted right however
good the model is. Scores are drawn uniformly from [0.5, 1) (seed 0) and the counting threshold is 0.15
(the shipped model's), so Soft-NMS's decay can also push a box below it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from postprocess_sweep import suppress  # this folder's sweep: the same NMS + Soft-NMS
from torchvision.ops import box_iou

from deepace.data.coco import read_coco
from deepace.data.predictions import ImagePrediction
from deepace.metrics import evaluate_records


def oracle_prediction(boxes: np.ndarray, iou: float, sigma: float | None, rng: np.random.Generator) -> tuple:
    """The ground-truth boxes with random scores, through the heads' suppression (NMS at 1.0 keeps all)."""
    scores = rng.uniform(0.5, 1.0, len(boxes)).astype(np.float32)
    return suppress(np.asarray(boxes, dtype=np.float32).reshape(-1, 4), scores, iou, sigma, floor=0.05)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--coco", type=Path, required=True)
    parser.add_argument("--nms", type=float, nargs="+", default=[0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    parser.add_argument("--sigmas", type=str, nargs="+", default=["none", "0.5"])
    parser.add_argument("--threshold", type=float, default=0.15)
    args = parser.parse_args()
    records = read_coco(args.coco)
    max_overlap = [
        float(box_iou(t, t).fill_diagonal_(0).max()) if len(t) > 1 else 0.0
        for t in (torch.from_numpy(r.boxes).float().reshape(-1, 4) for r in records)
    ]
    print(f"{len(records)} cells from {args.coco}")
    print("| heads' NMS IoU | Soft-NMS σ | cells with a pair above it % | WCR@0.5 % | AER@0.5 % | exact % |")
    print("|---|---|---|---|---|---|")
    for iou in args.nms:
        for sigma_text in args.sigmas:
            sigma = None if sigma_text == "none" else float(sigma_text)
            rng = np.random.default_rng(0)
            preds = [
                ImagePrediction(r.path, *oracle_prediction(r.boxes, iou, sigma, rng), args.threshold)
                for r in records
            ]
            m = evaluate_records(records, preds, score_threshold=args.threshold, on_warning=lambda _m: None)
            at50, count = m["by_iou"]["0.5"], m["count"]
            overlapping = 100 * np.mean([o > iou for o in max_overlap])
            print(
                f"| {'none' if iou >= 1.0 else iou} | {sigma_text} | {overlapping:.1f} | {at50['WCR']:.1f} | "
                f"{at50['AER']:.2f} | {count['exact']:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
