"""Does the rescorer count better when it knows how much of a candidate the boxes it already accepted cover
together, and how much of the candidate's chromosome pixels they leave uncovered? (Session 27.)

The shipped rescorer reads each candidate's overlaps with the accepted boxes one at a time (the largest IoU,
the largest share of it inside one of them, ...). A false box over two touching chromosomes lies inside
their union and inside neither; a box on a chromosome that crosses a found one has pixels of its own that
no accepted box covers. These inputs are computed in the greedy pass, against the boxes accepted so far
(teacher-forced in training: the higher-scored candidates that first claim a chromosome):

- `area`: the share of the candidate's box inside the union of the accepted boxes;
- `pixels`: also the share of its chromosome pixels (< 200 on the prepared image) inside that union, and
  its uncovered chromosome pixels relative to the cell's typical confident box's.

    python benchmarks/rescorer_union.py --train-cache C.pt --train T.json --train M.json \
        --val T_val.json --val M_val.json --weights W.pt --set model.rpn_post_nms_top_n_test=400 --seeds 5

Rows: the shipped inputs and each variant, one fit per seed, on each validation split.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from deepace.data.coco import read_coco
from deepace.data.dataset import prepare_image_and_stain
from deepace.data.predictions import ImagePrediction
from deepace.inference import Detector
from deepace.models.rescorer import (
    ACCEPT_PROBABILITY,
    AcceptedOverlaps,
    Candidates,
    OverlapRescorer,
    box_features,
    pair_geometry,
)
from deepace.rescoring import detector_with_rescorer, fit_on_features, training_features

from rescorer_variants import row, validation_samples  # isort: skip

PIXEL_THRESHOLD = 200


class UnionCover:
    """The union of the accepted boxes as a mask over the image, and each candidate's cover by it."""

    def __init__(self, gray: np.ndarray, boxes: Tensor, pixels: bool) -> None:
        self.ink = gray < PIXEL_THRESHOLD
        self.mask = np.zeros(gray.shape, dtype=bool)
        height, width = gray.shape
        b = boxes.numpy().round().astype(int)
        b[:, [0, 2]] = b[:, [0, 2]].clip(0, width)
        b[:, [1, 3]] = b[:, [1, 3]].clip(0, height)
        b[:, 2] = np.maximum(b[:, 2], np.minimum(b[:, 0] + 1, width))
        b[:, 3] = np.maximum(b[:, 3], np.minimum(b[:, 1] + 1, height))
        self.boxes = b
        self.pixels = pixels
        self.own_ink = np.array([self.ink[y1:y2, x1:x2].sum() for x1, y1, x2, y2 in b], dtype=np.float64)
        self.reference = 1.0

    def set_reference(self, scores: Tensor) -> None:
        confident = (scores >= 0.5).numpy()
        values = self.own_ink[confident] if confident.any() else self.own_ink
        self.reference = max(float(np.median(values)) if len(values) else 1.0, 1.0)

    def features(self, i: int) -> list[float]:
        x1, y1, x2, y2 = self.boxes[i]
        covered = self.mask[y1:y2, x1:x2]
        area = [float(covered.mean()) if covered.size else 0.0]
        if not self.pixels:
            return area
        ink = self.ink[y1:y2, x1:x2]
        total = self.own_ink[i]
        inside = float((ink & covered).sum())
        share = inside / total if total else 1.0
        return [*area, share, (total - inside) / self.reference]

    def accept(self, i: int) -> None:
        x1, y1, x2, y2 = self.boxes[i]
        self.mask[y1:y2, x1:x2] = True


def teacher_union_features(gray: np.ndarray, candidates: Candidates, labels: Tensor, pixels: bool) -> Tensor:
    cover = UnionCover(gray, candidates.boxes, pixels)
    cover.set_reference(candidates.scores)
    rows = []
    for i in range(len(labels)):
        rows.append(cover.features(i))
        if bool(labels[i]):
            cover.accept(i)
    return torch.tensor(rows, dtype=torch.float32).reshape(len(labels), 3 if pixels else 1)


class UnionRescorer(OverlapRescorer):
    """The shipped perceptron with the union inputs after its own."""

    def __init__(self, num_stages: int, pixels: bool) -> None:
        super().__init__(num_stages)
        self.pixels = pixels
        extra = 3 if pixels else 1
        n_in = self.net[0].in_features + extra
        self.feature_mean = torch.zeros(n_in)
        self.feature_std = torch.ones(n_in)
        self.net[0] = torch.nn.Linear(n_in, self.net[0].out_features)

    @torch.no_grad()
    def rescore(self, candidates: Candidates, gray: np.ndarray) -> Tensor:
        n = len(candidates.boxes)
        probabilities = candidates.scores.new_zeros(n)
        if n == 0:
            return probabilities
        geometry = pair_geometry(candidates)
        fixed = box_features(candidates, geometry)
        overlaps = AcceptedOverlaps(geometry, candidates.scores)
        cover = UnionCover(gray, candidates.boxes, self.pixels)
        cover.set_reference(candidates.scores)
        for i in range(n):
            union = torch.tensor([cover.features(i)], dtype=torch.float32)
            row_ = torch.cat([fixed[i : i + 1], overlaps.row(i), union], dim=1)
            probabilities[i] = torch.sigmoid(self.logits(row_))[0]
            if probabilities[i] >= ACCEPT_PROBABILITY:
                overlaps.accept(i)
                cover.accept(i)
        return probabilities


def grays(records: list) -> list[np.ndarray]:
    return [
        prepare_image_and_stain(r.path, "auto", PIXEL_THRESHOLD)[0]
        for r in tqdm(records, desc="images", unit="img", leave=False)
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train-cache", type=Path, required=True)
    parser.add_argument("--train", type=Path, action="append", required=True, help="the cache's COCO files")
    parser.add_argument("--val", type=Path, action="append", required=True)
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    train = torch.load(args.train_cache, weights_only=False)
    train_records = [r for path in args.train for r in read_coco(path)]
    if len(train_records) != len(train):
        raise SystemExit(f"{len(train)} cached images but {len(train_records)} in --train")
    counting = Detector.load(args.weights)
    detector = detector_with_rescorer(counting, args.overrides)
    validation = []
    for val in args.val:
        records, samples = validation_samples(detector, counting, args.train_cache, val)
        validation.append((val, records, samples, grays(records)))
    stages = train[0].candidates.stage_scores.shape[1]
    base, labels = training_features(train)
    rows = []
    for record, sample in tqdm(
        list(zip(train_records, train, strict=True)), desc="union", unit="img", leave=False
    ):
        if len(sample.labels):
            gray = prepare_image_and_stain(record.path, "auto", PIXEL_THRESHOLD)[0]
            rows.append(teacher_union_features(gray, sample.candidates, sample.labels, pixels=True))
    union = torch.cat(rows)
    unions = {False: union[:, :1], True: union}  # the area share is the first column either way
    variants: dict[str, list] = {"shipped inputs": [], "+ union area": [], "+ union area, pixels": []}
    for seed in range(args.seeds):
        plain = OverlapRescorer(stages)
        print("shipped", seed, fit_on_features(plain, base, labels, seed=seed, progress=False), flush=True)
        variants["shipped inputs"].append(plain)
        for pixels, name in ((False, "+ union area"), (True, "+ union area, pixels")):
            rescorer = UnionRescorer(stages, pixels)
            features = torch.cat([base, unions[pixels]], dim=1)
            result = fit_on_features(rescorer, features, labels, seed=seed, progress=False)
            print(name, seed, result, flush=True)
            variants[name].append(rescorer)
    for val, records, samples, images in validation:
        print(f"\n{val}\n| inputs (seed) | threshold | AP50 | WCR@0.5 | AER@0.5 | AP70 | exact | ±1 | MAE |")
        print("|---|---|---|---|---|---|---|---|---|")
        for name, fits in variants.items():
            for seed, rescorer in enumerate(fits):
                predictions = []
                for record, sample, gray in zip(records, samples, images, strict=True):
                    if isinstance(rescorer, UnionRescorer):
                        p = rescorer.rescore(sample.candidates, gray)
                    else:
                        p = rescorer(sample.candidates)
                    keep = torch.where(p >= 0.05)[0]
                    keep = keep[p[keep].argsort(descending=True)]
                    boxes = sample.candidates.boxes[keep].numpy()
                    predictions.append(ImagePrediction(record.path, boxes, p[keep].numpy()))
                print(row(f"{name} ({seed})", records, predictions), flush=True)


if __name__ == "__main__":
    main()
