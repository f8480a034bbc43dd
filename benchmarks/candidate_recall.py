"""Where a model with a learned rescorer loses chromosomes: per stage, the share of chromosomes covered by
some box at IoU > 0.5 and the share of cells whose every chromosome is covered — the RPN's proposals, the
head stages' refined boxes, the rescorer's candidates (score floor, near-copies merged), the rescorer's
kept boxes (>= 0.05) and those above the counting threshold. A cell not fully covered at a stage cannot
be counted exactly from there on (unless errors cancel).

    python benchmarks/candidate_recall.py --coco ~/deepace-runs/data/taichung/val.json [--weights FILE]
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import torch
from torchvision.ops import box_iou

from deepace.data.coco import read_coco
from deepace.inference import Detector

STAGES = ("proposals", "head boxes", "candidates", "kept", "counted")


def nearest_iou(gt: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Per ground-truth box, the IoU of the box that overlaps it most (0 when there are none)."""
    if len(boxes) == 0 or len(gt) == 0:
        return torch.zeros(len(gt))
    return box_iou(gt, boxes).max(dim=1).values


def covered(gt: torch.Tensor, boxes: torch.Tensor, iou: float = 0.5) -> torch.Tensor:
    """Per ground-truth box, whether some box overlaps it at more than `iou`."""
    return nearest_iou(gt, boxes) > iou


def record_outputs(heads: torch.nn.Module, name: str, seen: dict[str, torch.Tensor], boxes_of) -> None:  # noqa: ANN001
    """Wrap `heads.<name>` so each call leaves its first image's boxes in `seen[name]`."""
    method = getattr(heads, name)

    @functools.wraps(method)
    def wrapped(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        out = method(*args, **kwargs)
        seen[name] = boxes_of(out)
        return out

    setattr(heads, name, wrapped)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--coco", type=Path, required=True)
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--stain", default="brightfield")
    parser.add_argument("--candidate-iou", type=float, default=None, help="override the model's")
    parser.add_argument("--candidate-floor", type=float, default=None, help="override the model's")
    args = parser.parse_args()
    records = read_coco(args.coco)
    detector = Detector.load(args.weights, num_threads=2, optimise=True)
    model, heads = detector.model, detector.model.roi_heads
    if getattr(heads, "rescorer", None) is None:
        raise SystemExit("this model has no rescorer: use benchmarks/recall_by_stage.py")
    if args.candidate_iou is not None:
        heads.candidate_iou = args.candidate_iou
    if args.candidate_floor is not None:
        heads.candidate_floor = args.candidate_floor
    print(f"candidates: score >= {heads.candidate_floor}, merged by NMS at IoU {heads.candidate_iou}")
    seen: dict[str, torch.Tensor] = {}
    model.rpn.register_forward_hook(lambda _m, _i, out: seen.__setitem__("proposals", out[0][0]))
    record_outputs(heads, "stage_outputs", seen, lambda out: out[0][0])
    record_outputs(heads, "candidates", seen, lambda out: out[0].boxes)
    threshold = detector.threshold_for(args.stain)
    chromosomes = {stage: 0 for stage in STAGES}
    cells = {stage: 0 for stage in STAGES}
    total = 0
    for record in records:
        gray = detector.prepare(record.path, args.stain)
        boxes, scores = detector.predict_gray(gray, args.stain)
        scale = model.config.input_scale * model.config.stain_scale(args.stain)
        found = {
            "proposals": seen["proposals"] / scale,
            "head boxes": seen["stage_outputs"] / scale,
            "candidates": seen["candidates"] / scale,
            "kept": torch.as_tensor(boxes),
            "counted": torch.as_tensor(boxes[scores >= threshold]),
        }
        gt = torch.as_tensor(record.boxes, dtype=torch.float32)
        total += len(gt)
        for stage in STAGES:
            hit = covered(gt, found[stage])
            chromosomes[stage] += int(hit.sum())
            cells[stage] += bool(hit.all())
    print(f"{len(records)} cells, {total} chromosomes; covered = some box at IoU > 0.5")
    print("| stage | chromosomes covered % | cells with every chromosome covered % |")
    print("|---|---|---|")
    for stage in STAGES:
        share_of_cells = 100 * cells[stage] / len(records)
        print(f"| {stage} | {100 * chromosomes[stage] / total:.2f} | {share_of_cells:.1f} |")


if __name__ == "__main__":
    main()
