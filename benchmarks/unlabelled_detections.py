"""Cells whose counted detections fall where no chromosome is labelled: a second, unlabelled spread in the
image, chromosomes the labels leave out, or boxes on nuclei and debris. Such cells teach a detector trained
on them that chromosomes are background, and their recorded counts are not what the image holds.

    python benchmarks/unlabelled_detections.py --gt ~/deepace-runs/data/mfish/train.json \\
        --pred ~/deepace-runs/faint28_mfish_train.pred.json

With --blank-out DIR it also writes a training list (--coco-out) in which the listed cells are copies with
those boxes filled with the image's background, outside every labelled box: the unlabelled chromosomes are
then neither targets nor background to learn, and the labelled ones stay whole.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.ops import box_iou

from deepace.data.coco import ImageRecord, read_coco, write_coco
from deepace.data.predictions import read_predictions

# A counted box overlapping every labelled box at IoU below this is "on an unlabelled place".
APART_IOU = 0.1
# Blanked boxes are grown by this many pixels, to take the chromosome's blurred rim as well.
BLANK_MARGIN = 3


def blanked(image: np.ndarray, blank: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """`image` with the boxes `blank` (N×4, x1 y1 x2 y2) filled with its background level, except inside
    the boxes `keep`. The background level is the median of the pixels outside every box."""
    height, width = image.shape[:2]

    def mask_of(boxes: np.ndarray, margin: int) -> np.ndarray:
        mask = np.zeros((height, width), dtype=bool)
        for x1, y1, x2, y2 in boxes:
            mask[
                max(int(np.floor(y1)) - margin, 0) : min(int(np.ceil(y2)) + margin, height),
                max(int(np.floor(x1)) - margin, 0) : min(int(np.ceil(x2)) + margin, width),
            ] = True
        return mask

    kept, grown = mask_of(keep, 0), mask_of(blank, BLANK_MARGIN)
    to_blank = grown & ~kept
    outside = ~(kept | grown)
    background = np.median(image[outside], axis=0) if outside.any() else np.median(image, axis=(0, 1))
    out = image.copy()
    out[to_blank] = np.asarray(background).astype(image.dtype)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gt", type=Path, required=True)
    parser.add_argument("--pred", type=Path, required=True)
    parser.add_argument("--at-least", type=int, default=2, help="list cells with at least this many")
    parser.add_argument("--blank-out", type=Path, help="write blanked copies of the listed cells here")
    parser.add_argument("--coco-out", type=Path, help="with --blank-out: --gt, listed cells replaced")
    args = parser.parse_args()
    if args.blank_out and not args.coco_out:
        parser.error("--blank-out needs --coco-out")
    records = read_coco(args.gt)
    unlabelled_boxes: dict[str, np.ndarray] = {}
    predictions = {str(p.image): p for p in read_predictions(args.pred)}
    rows = []
    for record in records:
        pred = predictions[str(record.path)]
        counted = torch.as_tensor(pred.boxes[pred.scores >= np.float32(pred.score_threshold)])
        labelled = torch.as_tensor(np.asarray(record.boxes, dtype=np.float32)).reshape(-1, 4)
        if len(labelled) and len(counted):
            apart_mask = box_iou(counted, labelled).max(dim=1).values < APART_IOU
        else:
            apart_mask = torch.ones(len(counted), dtype=torch.bool)
        apart = int(apart_mask.sum())
        unlabelled_boxes[str(record.path)] = counted[apart_mask].numpy()
        rows.append((apart, record.path, pred.count - record.expected_count, record.expected_count))
    rows.sort(key=lambda row: (-row[0], row[1].name))
    listed = [row for row in rows if row[0] >= args.at_least]
    print(f"{len(listed)} of {len(rows)} cells, {args.at_least} or more counted boxes on unlabelled places")
    print("| cell | counted boxes on unlabelled places | count error | recorded count |")
    print("|---|---|---|---|")
    for apart, path, error, expected in listed:
        print(f"| {path.name} | {apart} | {error:+d} | {expected} |")
    if args.blank_out:
        blank_listed(
            records, unlabelled_boxes, {str(row[1]) for row in listed}, args.blank_out, args.coco_out
        )


def blank_listed(
    records: list[ImageRecord],
    unlabelled_boxes: dict[str, np.ndarray],
    listed_paths: set[str],
    out_dir: Path,
    coco_out: Path,
) -> None:
    """Blanked copies of the listed cells in `out_dir`, and `records` with those replaced in `coco_out`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cleaned = []
    for record in records:
        if str(record.path) in listed_paths:
            image = np.asarray(Image.open(record.path))
            keep = np.asarray(record.boxes, dtype=np.float32).reshape(-1, 4)
            target = out_dir / f"{record.path.stem}_blanked.png"
            Image.fromarray(blanked(image, unlabelled_boxes[str(record.path)], keep)).save(target)
            record = dataclasses.replace(record, path=target.resolve())
        cleaned.append(record)
    write_coco(cleaned, coco_out)
    print(f"wrote {len(listed_paths)} blanked cells to {out_dir} and the list {coco_out}")


if __name__ == "__main__":
    main()
