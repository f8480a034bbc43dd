"""Test-time flips: the model run on each cell and on its mirror image, the two sets of boxes fused (matched
pairs averaged, weighted by score; an unmatched box keeps half its score). Measured, not adopted: it
doubles the time per cell. The counting threshold is re-tuned for each variant (exact count).

    python benchmarks/flip_fusion.py --coco ~/deepace-runs/data/taichung/train.json --n 200
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import box_iou

from deepace.data.coco import read_coco
from deepace.data.predictions import ImagePrediction
from deepace.inference import Detector
from deepace.metrics import evaluate_records, expected_counts
from deepace.metrics.threshold import tune_score_threshold


def fuse(
    boxes_a: np.ndarray, scores_a: np.ndarray, boxes_b: np.ndarray, scores_b: np.ndarray, min_iou: float
) -> tuple[np.ndarray, np.ndarray]:
    iou = box_iou(torch.from_numpy(boxes_a), torch.from_numpy(boxes_b)).numpy()
    used = np.zeros(len(boxes_b), dtype=bool)
    boxes, scores = [], []
    for i in range(len(boxes_a)):  # a is sorted by falling score: greedy matching, best first
        candidates = np.flatnonzero(~used & (iou[i] >= min_iou)) if iou.shape[1] else np.array([], int)
        if len(candidates):
            j = candidates[np.argmax(iou[i, candidates])]
            used[j] = True
            w = np.array([scores_a[i], scores_b[j]])
            boxes.append((boxes_a[i] * w[0] + boxes_b[j] * w[1]) / w.sum())
            scores.append(w.mean())
        else:
            boxes.append(boxes_a[i])
            scores.append(scores_a[i] / 2)
    for j in np.flatnonzero(~used):
        boxes.append(boxes_b[j])
        scores.append(scores_b[j] / 2)
    boxes_arr = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores_arr = np.asarray(scores, np.float32)
    order = np.argsort(-scores_arr, kind="stable")
    return boxes_arr[order], scores_arr[order]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--coco", type=Path, required=True)
    parser.add_argument("--n", type=int, default=200, help="cells, spread evenly over the file")
    parser.add_argument("--weights", type=Path, default=None)
    args = parser.parse_args()
    records = read_coco(args.coco)
    records = [records[i] for i in np.linspace(0, len(records) - 1, min(args.n, len(records))).astype(int)]
    detector = Detector.load(args.weights)
    plain, mirrored = [], []
    for record in records:
        gray, stain = detector.prepare_with_stain(record.path)
        plain.append(detector.predict_gray(gray, stain))
        boxes, scores = detector.predict_gray(np.ascontiguousarray(gray[:, ::-1]), stain)
        boxes[:, [0, 2]] = gray.shape[1] - boxes[:, [2, 0]]
        mirrored.append((boxes, scores))
    expected = expected_counts(records)
    variants = {"plain": plain, "mirror only": mirrored}
    for min_iou in (0.5, 0.6, 0.7):
        variants[f"fused, pairs at IoU ≥ {min_iou}"] = [
            fuse(*a, *b, min_iou) for a, b in zip(plain, mirrored, strict=True)
        ]
    print(f"{len(records)} cells from {args.coco}")
    print("| variant | threshold | AP50 | WCR@0.5 % | AER@0.5 % | AP70 | AP85 | exact % | ±1 % | MAE |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, results in variants.items():
        preds = [ImagePrediction(r.path, b, s) for r, (b, s) in zip(records, results, strict=True)]
        threshold, _ = tune_score_threshold([p.scores for p in preds], expected)
        m = evaluate_records(records, preds, score_threshold=threshold, on_warning=lambda _m: None)
        at, count = m["by_iou"], m["count"]
        print(
            f"| {name} | {threshold:.3f} | {at['0.5']['AP']:.2f} | {at['0.5']['WCR']:.1f} | "
            f"{at['0.5']['AER']:.2f} | {at['0.7']['AP']:.2f} | {at['0.85']['AP']:.2f} | "
            f"{count['exact']:.1f} | {count['within1']:.1f} | {count['mae']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
