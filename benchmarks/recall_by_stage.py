"""Where chromosomes are lost on the way through the detector: the share of chromosomes covered (IoU > 0.5)
by the RPN's proposals, by the heads' kept detections (score >= 0.05), and by those above the counting
threshold; with the heads' NMS + Soft-NMS as shipped and switched off (to separate suppression from
classification and box regression).

    python benchmarks/recall_by_stage.py --coco ~/deepace-runs/data/taichung/val.json --every 4
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torchvision.ops import box_iou

from deepace.data.coco import read_coco
from deepace.inference import Detector


def _covered(gt: torch.Tensor, boxes: torch.Tensor, iou: float = 0.5) -> int:
    if len(boxes) == 0:
        return 0
    return int((box_iou(gt, boxes).max(dim=1).values > iou).sum())


def recall_by_stage(detector: Detector, records: list, stain: str) -> dict[str, float]:
    model = detector.model
    proposals: list[torch.Tensor] = []
    hook = model.rpn.register_forward_hook(lambda _m, _i, out: proposals.append(out[0][0]))
    threshold = detector.threshold_for(stain)
    totals = {"chromosomes": 0, "proposals": 0, "kept": 0, "counted": 0}
    try:
        for record in records:
            gray = detector.prepare(record.path, stain)
            boxes, scores = detector.predict_gray(gray, stain)
            scale = model.config.input_scale * model.config.stain_scale(stain)
            gt = torch.as_tensor(record.boxes, dtype=torch.float32)
            totals["chromosomes"] += len(gt)
            totals["proposals"] += _covered(gt, proposals.pop() / scale)
            totals["kept"] += _covered(gt, torch.as_tensor(boxes))
            totals["counted"] += _covered(gt, torch.as_tensor(boxes[scores >= threshold]))
    finally:
        hook.remove()
    n = totals.pop("chromosomes")
    return {stage: 100.0 * covered / n for stage, covered in totals.items()} | {"chromosomes": n}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--coco", type=Path, required=True)
    parser.add_argument("--every", type=int, default=4, help="use every N-th cell of the file")
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--stain", default="brightfield")
    args = parser.parse_args()
    records = read_coco(args.coco)[:: args.every]
    detector = Detector.load(args.weights, num_threads=2)
    heads = detector.model.roi_heads
    print(f"{len(records)} cells; % of chromosomes covered at IoU > 0.5")
    print("| heads' suppression | RPN proposals | kept (score ≥ 0.05) | above the counting threshold |")
    print("|---|---|---|---|")
    shipped = (heads.nms_thresh, heads.soft_nms_method, heads.detections_per_img)
    for name, setting in [("NMS + Soft-NMS (shipped)", shipped), ("none", (1.01, None, 1000))]:
        heads.nms_thresh, heads.soft_nms_method, heads.detections_per_img = setting
        r = recall_by_stage(detector, records, args.stain)
        print(f"| {name} | {r['proposals']:.2f} | {r['kept']:.2f} | {r['counted']:.2f} |")


if __name__ == "__main__":
    main()
