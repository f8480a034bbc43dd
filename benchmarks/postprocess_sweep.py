"""Post-processing sweep: the detection heads' NMS IoU and Soft-NMS settings (paper §3.2: NMS then
Soft-NMS, both at 0.5), chosen on cells that are not the validation split.

The network runs once per cell with suppression switched off; every setting is then applied to the same
raw detections, and the counting threshold is re-tuned for each setting (exact count, as `export` does).

    python benchmarks/postprocess_sweep.py --coco ~/deepace-runs/data/taichung/train.json --n 200 \
        --cache ~/deepace-runs/sweep/raw_train200.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import nms

from deepace.data.coco import read_coco
from deepace.engine import predict_records
from deepace.inference import Detector
from deepace.metrics import evaluate_records, expected_counts
from deepace.metrics.detection import box_area, box_intersection
from deepace.metrics.threshold import tune_score_threshold
from deepace.models.soft_nms import soft_nms


def raw_predictions(detector: Detector, records: list) -> list:  # noqa: ANN001
    heads = detector.model.roi_heads
    heads.nms_thresh, heads.soft_nms_method, heads.detections_per_img = 1.0, None, 400
    return predict_records(detector, records, progress=True)


def suppress(boxes: np.ndarray, scores: np.ndarray, iou: float, sigma: float | None, floor: float):
    b, s = torch.from_numpy(boxes), torch.from_numpy(scores)
    keep = nms(b, s, iou)
    b, s = b[keep], s[keep]
    if sigma is not None:
        kept, s = soft_nms(b, s, "gaussian", iou, sigma, score_threshold=floor)
        b = b[kept]
    order = torch.argsort(s, descending=True)
    return b[order].numpy(), s[order].numpy()


def drop_contained(boxes: np.ndarray, scores: np.ndarray, fraction: float, area_ratio: float):
    """Drop a box when `fraction` of it lies inside a higher-scoring kept box over 1/area_ratio its size
    (a box on one arm of a chromosome already found). Boxes come sorted by falling score."""
    inter, area = box_intersection(boxes, boxes), box_area(boxes)
    keep: list[int] = []
    for j in range(len(area)):
        inside = (inter[keep, j] >= fraction * area[j]) & (area[j] < area_ratio * area[keep])
        if not bool(inside.any()):
            keep.append(j)
    return boxes[keep], scores[keep]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--coco", type=Path, required=True)
    parser.add_argument("--n", type=int, default=200, help="cells, spread evenly over the file")
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--cache", type=Path, default=None, help="raw detections saved/read here")
    parser.add_argument("--nms", type=float, nargs="+", default=[0.5, 0.6, 0.7, 0.8])
    parser.add_argument("--sigmas", type=str, nargs="+", default=["none", "0.5", "0.3", "0.15"])
    parser.add_argument("--rpn-proposals", type=int, default=None, help="proposals kept after the RPN")
    parser.add_argument("--rpn-nms", type=float, default=None, help="the RPN's NMS IoU (Soft-NMS after it)")
    parser.add_argument(
        "--contained",
        type=float,
        nargs=2,
        default=None,
        metavar=("FRACTION", "AREA_RATIO"),
        help="after suppression, drop boxes lying FRACTION inside a kept box over 1/AREA_RATIO their size",
    )
    args = parser.parse_args()
    torch.set_num_threads(2)
    records = read_coco(args.coco)
    records = [records[i] for i in np.linspace(0, len(records) - 1, min(args.n, len(records))).astype(int)]
    detector = Detector.load(args.weights)
    floor = detector.config.model.box_score_thresh
    rpn = detector.model.rpn
    if args.rpn_proposals is not None:
        rpn._post_nms_top_n["testing"] = args.rpn_proposals
    if args.rpn_nms is not None:
        rpn.nms_thresh = args.rpn_nms
    if args.cache is not None and args.cache.exists():
        raw = torch.load(args.cache, weights_only=False)
    else:
        raw = raw_predictions(detector, records)
        if args.cache is not None:
            args.cache.parent.mkdir(parents=True, exist_ok=True)
            torch.save(raw, args.cache)
    expected = expected_counts(records)
    print(f"{len(records)} cells from {args.coco}")
    print("| NMS IoU | Soft-NMS σ | threshold | AP50 | WCR@0.5 % | AER@0.5 % | AP70 | exact % | ±1 % | MAE |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for iou in args.nms:
        for sigma_text in args.sigmas:
            sigma = None if sigma_text == "none" else float(sigma_text)
            preds = []
            for p in raw:
                boxes, scores = suppress(p.boxes, p.scores, iou, sigma, floor)
                if args.contained is not None:
                    boxes, scores = drop_contained(boxes, scores, *args.contained)
                preds.append(type(p)(p.image, boxes, scores, p.score_threshold))
            threshold, _ = tune_score_threshold([p.scores for p in preds], expected)
            m = evaluate_records(records, preds, score_threshold=threshold, on_warning=lambda _m: None)
            at50, at70, count = m["by_iou"]["0.5"], m["by_iou"]["0.7"], m["count"]
            print(
                f"| {iou} | {sigma_text} | {threshold:.3f} | {at50['AP']:.2f} | {at50['WCR']:.1f} | "
                f"{at50['AER']:.2f} | {at70['AP']:.2f} | {count['exact']:.1f} | {count['within1']:.1f} | "
                f"{count['mae']:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
