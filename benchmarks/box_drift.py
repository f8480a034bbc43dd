"""Chromosomes the RPN's proposals cover (IoU > 0.5) but no refined box does: per head stage, the share of
chromosomes and of whole cells still covered, and where the covering proposals' final boxes went —
all onto another chromosome, or left near their own (IoU 0.4–0.5) or further off.

    python benchmarks/box_drift.py --coco ~/deepace-runs/data/taichung/val.json [--weights FILE]
    python benchmarks/box_drift.py --coco ~/deepace-runs/data/mfish/val.json --stain fluorescence
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import torch
from torchvision.ops import box_iou

from deepace.data.coco import read_coco
from deepace.data.images import rescale_gray
from deepace.inference import Detector
from deepace.models.roi_heads import refine, roi_features
from deepace.models.transform import gray_to_tensor

from candidate_recall import covered  # isort: skip  (benchmarks/ is on the path when a script in it runs)


@torch.inference_mode()
def stage_boxes(
    detector: Detector,
    gray,  # noqa: ANN001
    stain: str = "brightfield",
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The proposals and each head stage's refined boxes (original pixels), and the stages' mean score.
    `stain`: the stain `gray` was read as (it picks the model's resize factor, as Detector.predict_gray)."""
    model = detector.model
    heads = model.roi_heads
    stain_scale = model.config.stain_scale(stain)
    images, _ = model.transform([gray_to_tensor(rescale_gray(gray, stain_scale))])
    features = model.backbone(images.tensors)
    proposals, _ = model.rpn(images, features)
    boxes, stages, logits = proposals, [proposals[0]], []
    for stage in (heads, *getattr(heads, "stages", ())):
        class_logits, box_regression = stage.box_predictor(
            roi_features(stage, features, boxes, images.image_sizes)
        )
        logits.append(class_logits)
        boxes = refine(stage, box_regression, boxes, images.image_sizes)
        stages.append(boxes[0])
    scale = model.config.input_scale * stain_scale
    return [b / scale for b in stages], torch.stack(logits).mean(dim=0).softmax(dim=-1)[:, 1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--coco", type=Path, required=True)
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--stain", default="brightfield", choices=["brightfield", "fluorescence"])
    args = parser.parse_args()
    detector = Detector.load(args.weights, num_threads=2, optimise=True)
    records = read_coco(args.coco)
    chromosomes, cells, fates = Counter(), Counter(), Counter()
    for record in records:
        stages, scores = stage_boxes(detector, detector.prepare(record.path, args.stain), args.stain)
        gt = torch.as_tensor(record.boxes, dtype=torch.float32)
        for k, boxes in enumerate(stages):
            hit = covered(gt, boxes)
            chromosomes[k] += int(hit.sum())
            cells[k] += bool(hit.all())
        first, last = box_iou(gt, stages[0]), box_iou(gt, stages[-1])
        lost = (first.max(dim=1).values > 0.5) & ~(last.max(dim=1).values > 0.5)
        for g in torch.where(lost)[0]:
            covering = torch.where(first[g] > 0.5)[0]
            others = last[:, covering].clone()
            others[g] = 0
            if bool((others.max(dim=0).values > 0.5).all()):
                fates["every covering proposal ended on another chromosome"] += 1
            elif last[g, covering].max() > 0.4:
                fates["ended near its own (IoU 0.4-0.5)"] += 1
            else:
                fates["ended further off"] += 1
            fates["of them, scored >= 0.3 (mean of the stages)"] += int(scores[covering].max() >= 0.3)
    total = sum(len(r.boxes) for r in records)
    print(f"{len(records)} cells, {total} chromosomes")
    print("| boxes | chromosomes covered % | cells with every chromosome covered % |")
    print("|---|---|---|")
    for k in sorted(chromosomes):
        name = "proposals" if k == 0 else f"after head stage {k}"
        print(f"| {name} | {100 * chromosomes[k] / total:.2f} | {100 * cells[k] / len(records):.1f} |")
    print(f"lost after the proposals: {sum(v for k, v in fates.items() if k.startswith(('every', 'ended')))}")
    for fate, n in fates.items():
        print(f"  {fate}: {n}")


if __name__ == "__main__":
    main()
