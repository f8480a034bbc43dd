"""Cells whose counted detections fall where no chromosome is labelled: a second, unlabelled spread in the
image, chromosomes the labels leave out, or boxes on nuclei and debris. Such cells teach a detector trained
on them that chromosomes are background, and their recorded counts are not what the image holds.

    python benchmarks/unlabelled_detections.py --gt ~/deepace-runs/data/mfish/train.json \\
        --pred ~/deepace-runs/faint28_mfish_train.pred.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import box_iou

from deepace.data.coco import read_coco
from deepace.data.predictions import read_predictions

# A counted box overlapping every labelled box at IoU below this is "on an unlabelled place".
APART_IOU = 0.1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gt", type=Path, required=True)
    parser.add_argument("--pred", type=Path, required=True)
    parser.add_argument("--at-least", type=int, default=2, help="list cells with at least this many")
    args = parser.parse_args()
    predictions = {str(p.image): p for p in read_predictions(args.pred)}
    rows = []
    for record in read_coco(args.gt):
        pred = predictions[str(record.path)]
        counted = torch.as_tensor(pred.boxes[pred.scores >= np.float32(pred.score_threshold)])
        labelled = torch.as_tensor(np.asarray(record.boxes, dtype=np.float32)).reshape(-1, 4)
        if len(labelled) and len(counted):
            apart = int((box_iou(counted, labelled).max(dim=1).values < APART_IOU).sum())
        else:
            apart = len(counted)
        rows.append((apart, record.path.name, pred.count - record.expected_count, record.expected_count))
    rows.sort(key=lambda row: (-row[0], row[1]))
    listed = [row for row in rows if row[0] >= args.at_least]
    print(f"{len(listed)} of {len(rows)} cells, {args.at_least} or more counted boxes on unlabelled places")
    print("| cell | counted boxes on unlabelled places | count error | recorded count |")
    print("|---|---|---|---|")
    for apart, name, error, expected in listed:
        print(f"| {name} | {apart} | {error:+d} | {expected} |")


if __name__ == "__main__":
    main()
