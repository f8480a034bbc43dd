"""More inputs for the learned overlap rescorer, measured against the shipped inputs on the same candidates
(session 7; none was adopted, BENCHMARKS.md "Learned overlap rescoring"):

- `edges`: pixel evidence at each candidate's edges, on the prepared image (chromosome pixels < 200): the
  share of chromosome pixels inside the box, and in strips a tenth of the box's short side wide just
  outside each edge (the largest, second largest and mean: a box on one arm of a bent chromosome has
  chromosome running out of it) and just inside each edge (the smallest and mean: a loose box has an
  empty margin);
- `embedding`: the candidate's own RoI feature (the last head stage's 1,024 values), through a learned
  projection to 32;
- `cross-fit`: the shipped inputs, fitted on the training candidates plus half the validation cells'
  (×5), each half scored by the fit that did not see it: does it matter that the detector was trained on
  the images whose candidates the rescorer learns from?

    python benchmarks/rescorer_inputs.py --train-cache ~/deepace-runs/rescorer/cli_cache_400app.pt \
        --train T.json --train M.json --val T_val.json --val M_val.json \
        --set model.rpn_post_nms_top_n_test=400 --set model.rescorer_appearance=true

The caches are `deepace train-rescorer --cache` files (with embeddings: `--set
model.rescorer_appearance=true`); `--train` must list the files that cache was collected from, in order.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from deepace.data.coco import read_coco
from deepace.data.dataset import prepare_image_and_stain
from deepace.data.predictions import ImagePrediction
from deepace.inference import Detector
from deepace.models.rescorer import (
    ACCEPT_PROBABILITY,
    Candidates,
    OverlapRescorer,
    box_features,
    overlap_features,
    pair_geometry,
)
from deepace.rescoring import detector_with_rescorer, fit_on_features, training_features

from rescorer_variants import rescored, row, validation_samples  # isort: skip


def edge_evidence(gray: np.ndarray, boxes: np.ndarray, threshold: int = 200) -> np.ndarray:
    """(N, 6) pixel cues per box (module docstring), from an integral image of the chromosome pixels."""
    chromosome = (gray < threshold).astype(np.float64)
    integral = np.zeros((chromosome.shape[0] + 1, chromosome.shape[1] + 1))
    integral[1:, 1:] = chromosome.cumsum(0).cumsum(1)
    height, width = chromosome.shape

    def share(x1: np.ndarray, y1: np.ndarray, x2: np.ndarray, y2: np.ndarray) -> np.ndarray:
        x1, x2 = np.clip(x1, 0, width), np.clip(x2, 0, width)
        y1, y2 = np.clip(y1, 0, height), np.clip(y2, 0, height)
        area = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
        total = integral[y2, x2] - integral[y1, x2] - integral[y2, x1] + integral[y1, x1]
        return np.where(area > 0, total / np.maximum(area, 1), 0.0)

    b = np.round(boxes).astype(int)
    x1, y1 = b[:, 0], b[:, 1]
    x2, y2 = np.maximum(b[:, 2], x1 + 1), np.maximum(b[:, 3], y1 + 1)
    r = np.maximum(2, np.round(0.1 * np.minimum(x2 - x1, y2 - y1))).astype(int)
    outside = np.stack(
        [
            share(x1 - r, y1, x1, y2),
            share(x2, y1, x2 + r, y2),
            share(x1, y1 - r, x2, y1),
            share(x1, y2, x2, y2 + r),
        ],
        axis=1,
    )
    inside = np.stack(
        [
            share(x1, y1, x1 + r, y2),
            share(x2 - r, y1, x2, y2),
            share(x1, y1, x2, y1 + r),
            share(x1, y2 - r, x2, y2),
        ],
        axis=1,
    )
    out_sorted = np.sort(outside, axis=1)
    columns = [share(x1, y1, x2, y2), out_sorted[:, -1], out_sorted[:, -2], outside.mean(1)]
    columns += [inside.min(1), inside.mean(1)]
    return np.stack(columns, axis=1).astype(np.float32)


def box_feature_count(num_stages: int) -> int:
    """How many columns `box_features` gives (score, stage scores, size and elongation, 7 overlap ones): the
    extra inputs go right after them."""
    return 1 + num_stages + 3 + 7


class ExtraInputRescorer(OverlapRescorer):
    """The shipped perceptron with `extra` more per-box inputs after its box features (normalised like the
    others); with `project`, they pass through a learned linear map to that many values first (for a
    1,024-value RoI feature)."""

    def __init__(self, num_stages: int, extra: int, project: int | None = None, hidden: int = 64) -> None:
        super().__init__(num_stages, hidden)
        self.num_box = box_feature_count(num_stages)
        self.extra = extra
        n_in = self.net[0].in_features + extra
        self.feature_mean = torch.zeros(n_in)
        self.feature_std = torch.ones(n_in)
        self.projection = nn.Linear(extra, project) if project else None
        self.net[0] = nn.Linear(n_in - extra + project if project else n_in, hidden)

    def logits(self, features: Tensor) -> Tensor:
        x = (features - self.feature_mean) / self.feature_std
        if self.projection is not None:
            extra = self.projection(x[:, self.num_box : self.num_box + self.extra])
            x = torch.cat([x[:, : self.num_box], extra, x[:, self.num_box + self.extra :]], dim=1)
        return self.net(x).squeeze(-1)

    @torch.no_grad()
    def rescore(self, candidates: Candidates, extra: Tensor) -> Tensor:
        """`OverlapRescorer.forward` with the extra per-box inputs."""
        n = len(candidates.boxes)
        probabilities = candidates.scores.new_zeros(n)
        geometry = pair_geometry(plain(candidates))
        fixed = torch.cat([box_features(candidates, geometry), extra], dim=1)
        accepted = torch.zeros(1, n, dtype=torch.bool)
        for i in range(n):
            rows = tuple(m[i : i + 1] for m in geometry)
            features = torch.cat(
                [fixed[i : i + 1], overlap_features(accepted, rows, candidates.scores)], dim=1
            )
            probabilities[i] = torch.sigmoid(self.logits(features))[0]
            accepted[0, i] = bool(probabilities[i] >= ACCEPT_PROBABILITY)
        return probabilities


def plain(candidates: Candidates) -> Candidates:
    """The candidates without embeddings: the shipped geometry, no appearance cosine."""
    return Candidates(candidates.boxes, candidates.stage_scores, candidates.scores)


def with_extra(samples: list, extras: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Teacher-forced training rows with the extra inputs inserted after the box features."""
    features, labels = training_features([type(s)(plain(s.candidates), s.labels) for s in samples])
    num_box = box_feature_count(samples[0].candidates.stage_scores.shape[1])
    extra = torch.cat([e for s, e in zip(samples, extras, strict=True) if len(s.labels)])
    return torch.cat([features[:, :num_box], extra, features[:, num_box:]], dim=1), labels


def fit(samples: list, extras: list[Tensor], project: int | None = None) -> ExtraInputRescorer:
    features, labels = with_extra(samples, extras)
    rescorer = ExtraInputRescorer(samples[0].candidates.stage_scores.shape[1], extras[0].shape[1], project)
    result = fit_on_features(rescorer, features, labels, progress=False)
    print(f"{extras[0].shape[1]} extra inputs, projected to {project}: {result}", flush=True)
    return rescorer


def pixel_extras(records: list, samples: list) -> list[Tensor]:
    out = []
    for record, sample in tqdm(list(zip(records, samples, strict=True)), desc="edges", unit="img"):
        gray, _ = prepare_image_and_stain(record.path, "auto", 200)
        out.append(torch.from_numpy(edge_evidence(gray, sample.candidates.boxes.numpy())))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train-cache", type=Path, required=True)
    parser.add_argument("--train", type=Path, action="append", required=True, help="the cache's COCO files")
    parser.add_argument("--val", type=Path, action="append", required=True)
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    torch.set_num_threads(2)
    train = torch.load(args.train_cache, weights_only=False)
    train_records = [r for path in args.train for r in read_coco(path)]
    counting = Detector.load(args.weights)
    detector = detector_with_rescorer(counting, args.overrides)
    validation = []
    for val in args.val:
        records, samples = validation_samples(detector, counting, args.train_cache, val)
        validation.append((val, records, samples))
    none = [torch.zeros(len(s.labels), 0) for s in train]
    variants = {
        "shipped inputs": (
            fit(train, none),
            lambda records, samples: [torch.zeros(len(s.labels), 0) for s in samples],
        )
    }
    variants["+ edges"] = (fit(train, pixel_extras(train_records, train)), pixel_extras)
    if train[0].candidates.embeddings is not None:
        embeddings = [s.candidates.embeddings.float() for s in train]
        variants["+ own RoI feature"] = (
            fit(train, embeddings, project=32),
            lambda records, samples: [s.candidates.embeddings.float() for s in samples],
        )
    for val, records, samples in validation:
        print(f"\n{val}\n| inputs | threshold | AP50 | WCR@0.5 | AER@0.5 | AP70 | exact | ±1 | MAE |")
        print("|---|---|---|---|---|---|---|---|---|")
        for name, (rescorer, extras_of) in variants.items():
            extras = extras_of(records, samples)
            predictions = []
            for record, sample, extra in zip(records, samples, extras, strict=True):
                probabilities = rescorer.rescore(sample.candidates, extra)
                keep = torch.where(probabilities >= 0.05)[0]
                keep = keep[probabilities[keep].argsort(descending=True)]
                boxes, scores = sample.candidates.boxes[keep].numpy(), probabilities[keep].numpy()
                predictions.append(ImagePrediction(record.path, boxes, scores))
            print(row(name, records, predictions), flush=True)
    cross_fit(train, validation)


def cross_fit(train: list, validation: list) -> None:
    """Training candidates plus one half of the validation cells (×5); each half scored by the other fit."""
    base_features, base_labels = training_features([type(s)(plain(s.candidates), s.labels) for s in train])
    halves = []
    for k in range(2):
        seen = [
            type(s)(plain(s.candidates), s.labels)
            for _, _, samples in validation
            for i, s in enumerate(samples)
            if i % 2 != k
        ]
        features, labels = training_features(seen)
        rescorer = OverlapRescorer(train[0].candidates.stage_scores.shape[1])
        fit_on_features(
            rescorer,
            torch.cat([base_features, *[features] * 5]),
            torch.cat([base_labels, *[labels] * 5]),
            progress=False,
        )
        halves.append(rescorer)
    for val, records, samples in validation:
        predictions = [
            ImagePrediction(
                record.path, *[x.numpy() for x in rescored(halves[i % 2], plain(sample.candidates))]
            )
            for i, (record, sample) in enumerate(zip(records, samples, strict=True))
        ]
        print(
            f"\n{val}\n" + row("cross-fit: training + the other half of validation ×5", records, predictions)
        )


if __name__ == "__main__":
    main()
