"""Where the errors are: each missed chromosome and each false detection at IoU 0.5, by kind.

    deepace predict --coco ~/deepace-runs/data/taichung/val.json --out pred.json
    python benchmarks/error_analysis.py --gt ~/deepace-runs/data/taichung/val.json --pred pred.json

Matching as in the paper's metrics (§3.1): detections above the counting threshold, by falling score, each
claiming its best-IoU chromosome if that one is still free and IoU > 0.5.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import box_iou

from deepace.data.coco import read_coco
from deepace.data.predictions import read_predictions
from deepace.metrics.detection import box_area, box_intersection


def misplaced_kind(box: torch.Tensor, truth: torch.Tensor) -> str:
    """A box mostly (80%) inside one chromosome's box, e.g. on one arm of a bent one; over two or more
    chromosomes (each at least 60% inside it); or neither."""
    inter = box_intersection(box.numpy(), truth.numpy())[0]
    if int((inter / box_area(truth.numpy()) >= 0.6).sum()) >= 2:
        return "covering two or more chromosomes"
    if float((inter / box_area(box.numpy())).max()) >= 0.8:
        return "inside one chromosome's box (e.g. one arm)"
    return "other"


def share_inside(truth: torch.Tensor, boxes: torch.Tensor) -> np.ndarray:
    """(T, B): the share of each chromosome's box that lies inside each counted box."""
    return box_intersection(truth.numpy(), boxes.numpy()) / box_area(truth.numpy())[:, None]


def missed_holder_kind(missed: int, inside: np.ndarray, box_found: np.ndarray) -> str:
    """Where the counted boxes put the missed chromosome `missed` (a row of `inside`, `share_inside`):
    inside (80% of its box) a false box that holds another chromosome too (60% of it; two chromosomes in
    one box, e.g. touching end to end), inside only boxes that found other chromosomes, inside a false box
    alone, or inside no counted box. `box_found[k]`: box k found a chromosome."""
    holders = np.flatnonzero(inside[missed] >= 0.8)
    if len(holders) == 0:
        return "in no counted box"
    others = np.delete(inside, missed, axis=0)
    for k in holders:
        if not box_found[k] and bool((others[:, k] >= 0.6).any()):
            return "in a false box with another chromosome (two in one box)"
    if bool(box_found[holders].any()):
        return "inside the box of another chromosome, found"
    return "in a false box alone"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gt", type=Path, required=True)
    parser.add_argument("--pred", type=Path, required=True)
    parser.add_argument("--touching-iou", type=float, default=0.1, help="box IoU that counts as touching")
    args = parser.parse_args()
    preds = {Path(p.image).name: p for p in read_predictions(args.pred)}
    kinds: Counter[str] = Counter()
    touching_all = []
    for record in read_coco(args.gt):
        pred = preds[Path(record.path).name]
        truth = torch.from_numpy(record.boxes).float()
        neighbours = box_iou(truth, truth).fill_diagonal_(0).amax(1) if len(truth) > 1 else torch.zeros(1)
        touching = (neighbours > args.touching_iou).numpy()
        touching_all.extend(touching.tolist())
        counted = pred.scores >= pred.score_threshold
        boxes = torch.from_numpy(pred.boxes[counted]).float()
        scores = pred.scores[counted]
        iou = box_iou(boxes.reshape(-1, 4), truth.reshape(-1, 4)).numpy()
        any_iou = box_iou(torch.from_numpy(pred.boxes).float().reshape(-1, 4), truth.reshape(-1, 4)).numpy()
        matched: set[int] = set()
        box_found = np.zeros(len(boxes), dtype=bool)
        for k in np.argsort(-scores, kind="stable"):
            j = int(iou[k].argmax()) if iou.shape[1] else -1
            best = float(iou[k, j]) if j >= 0 else 0.0
            if best > 0.5 and j not in matched:
                matched.add(j)
                box_found[k] = True
            elif best > 0.5:
                kinds["false: a second box on a found chromosome"] += 1
            elif best > args.touching_iou:
                kinds["false: misplaced (IoU 0.1-0.5 with a chromosome; e.g. two merged)"] += 1
                kinds[f"false: misplaced, {misplaced_kind(boxes[k], truth)}"] += 1
            else:
                kinds["false: on background"] += 1
        inside = share_inside(truth.reshape(-1, 4), boxes.reshape(-1, 4))  # once per cell
        for j in range(len(truth)):
            if j in matched:
                continue
            kinds["missed"] += 1
            kinds["missed, touching another chromosome"] += int(touching[j])
            if iou.shape[0] and float(iou[:, j].max()) > 0.5:
                kinds["missed: its box claimed a neighbour instead"] += 1
            elif any_iou.shape[0] and float(any_iou[:, j].max()) > 0.5:
                kinds["missed: found, but scored below the threshold"] += 1
            else:
                kinds["missed: no kept detection (score ≥ 0.05) at IoU > 0.5"] += 1
            kinds[f"missed, {missed_holder_kind(j, inside, box_found)}"] += 1
    total = len(touching_all)
    share = 100 * np.mean(touching_all)
    print(f"{total} chromosomes; {share:.1f}% touch another (box IoU > {args.touching_iou})")
    print("| kind | count |")
    print("|---|---|")
    for kind, n in sorted(kinds.items()):
        print(f"| {kind} | {n} |")


if __name__ == "__main__":
    main()
