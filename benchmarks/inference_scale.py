"""Inference-time resolution sweep: the shipped model (trained at scale 0.75) run at other input scales on
the first N cells of a validation split, with its calibrated brightfield threshold.

    python benchmarks/inference_scale.py --coco ~/deepace-runs/data/taichung/val.json --n 50
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from deepace.data.coco import read_coco
from deepace.engine import predict_records
from deepace.inference import Detector
from deepace.metrics import evaluate_records


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--coco", type=Path, required=True)
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--scales", type=float, nargs="+", default=[0.6, 0.75, 0.9, 1.0])
    args = parser.parse_args()
    torch.set_num_threads(2)
    records = read_coco(args.coco)[: args.n]
    detector = Detector.load(args.weights)
    threshold = detector.threshold_for("brightfield")
    print("| input scale | s per cell | AP50 | AP70 | AER@0.5 % | exact count % | ±1 % |")
    print("|---|---|---|---|---|---|---|")
    for scale in args.scales:
        detector.model.transform.scale = scale  # anchors stay as trained (network pixels)
        tic = time.perf_counter()
        preds = predict_records(detector, records)
        seconds = (time.perf_counter() - tic) / len(records)
        m = evaluate_records(records, preds, score_threshold=threshold, on_warning=lambda _m: None)
        at50, at70, count = m["by_iou"]["0.5"], m["by_iou"]["0.7"], m["count"]
        print(
            f"| {scale} | {seconds:.3f} | {at50['AP']:.2f} | {at70['AP']:.2f} | {at50['AER']:.2f} | "
            f"{count['exact']:.1f} | {count['within1']:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
