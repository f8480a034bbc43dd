"""Learned overlap rescoring against the paper's NMS + Soft-NMS on the same candidates, and what a perfect
rescorer could reach (every candidate labelled by the ground truth), on the validation splits.

The detector runs once per image (candidates cached); the rescorer is fitted on the training cache that
`deepace train-rescorer --cache` writes, so variants (hidden size, epochs, appearance) cost seconds:

    deepace train-rescorer shipped --train T.json --train M.json --set model.rpn_post_nms_top_n_test=400 \
        --cache ~/deepace-runs/rescorer/cli_cache_400.pt --out /tmp/r.pt
    python benchmarks/rescorer_variants.py --train-cache ~/deepace-runs/rescorer/cli_cache_400.pt \
        --val ~/deepace-runs/data/taichung/val.json --val ~/deepace-runs/data/mfish/val.json \
        --set model.rpn_post_nms_top_n_test=400
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import box_iou, nms

from deepace.data.coco import read_coco
from deepace.data.predictions import ImagePrediction
from deepace.inference import Detector
from deepace.metrics import evaluate_records
from deepace.models.rescorer import OverlapRescorer
from deepace.models.set_rescorer import SetRescorer
from deepace.models.soft_nms import soft_nms
from deepace.rescoring import (
    LabelledCandidates,
    collect_candidates,
    detector_with_rescorer,
    fit_on_features,
    fit_rescorer,
    fit_set_rescorer,
    match_labels,
    own_decision_features,
    training_features,
)


def paper_postprocessing(boxes: torch.Tensor, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """§3.2: NMS at 0.5, then Gaussian Soft-NMS (σ 0.5), as the shipped heads do."""
    keep = nms(boxes, scores, 0.5)
    kept, decayed = soft_nms(boxes[keep], scores[keep], "gaussian", 0.5, 0.5, score_threshold=0.05)
    return boxes[keep][kept], decayed


def rescored(rescorer: OverlapRescorer | SetRescorer, candidates) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN001
    p = rescorer(candidates)
    keep = torch.where(p >= 0.05)[0]
    keep = keep[p[keep].argsort(descending=True)]
    return candidates.boxes[keep], p[keep]


class MeanOfFits(torch.nn.Module):
    """Several fitted rescorers as one: the mean of their probabilities, in the same greedy pass."""

    def __init__(self, fits: list[OverlapRescorer]) -> None:
        super().__init__()
        self.fits = torch.nn.ModuleList(fits)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        mean = torch.stack([torch.sigmoid(fit.logits(features)) for fit in self.fits]).mean(dim=0)
        return torch.logit(mean, eps=1e-6)

    forward = OverlapRescorer.forward


def validation_cache(train_cache: Path, val: Path) -> Path:
    """Where the validation candidates for `train_cache`'s settings are kept: named by the validation file's
    folder and name and a hash of its full path (two val.json in folders of one name must not share it)."""
    tag = hashlib.sha1(str(val.resolve()).encode()).hexdigest()[:8]
    return train_cache.with_name(f"{train_cache.stem}.val-{val.parent.name}-{val.stem}-{tag}.pt")


def validation_samples(
    detector: Detector, counting: Detector, train_cache: Path, val: Path
) -> tuple[list, list]:
    """`val`'s records and their labelled candidates, collected once with `detector` from each image as
    `counting` (the trained model) counts it, and cached beside `train_cache` (`validation_cache`)."""
    records, cache = read_coco(val), validation_cache(train_cache, val)
    if cache.exists():
        return records, torch.load(cache, weights_only=False)
    samples = collect_candidates(detector.optimised_copy(), records, counting=counting.optimised_copy())
    torch.save(samples, cache)
    return records, samples


def unreached_share(records: list, samples: list) -> float:  # noqa: ANN001
    """The share of annotated chromosomes that no candidate box overlaps at IoU >= 0.5."""
    missed = total = 0
    for record, sample in zip(records, samples, strict=True):
        truth = torch.from_numpy(record.boxes).float()
        total += len(truth)
        if len(truth) and len(sample.candidates.boxes):
            missed += int((box_iou(truth, sample.candidates.boxes).max(dim=1).values < 0.5).sum())
        else:
            missed += len(truth)
    return missed / max(total, 1)


def relabelled(samples: list, records: list, iou: float) -> list:  # noqa: ANN001
    """The cached training candidates with labels from `match_labels` at another IoU."""
    if len(samples) != len(records):
        raise SystemExit(f"{len(samples)} cached images but {len(records)} in --train-coco")
    out = []
    for sample, record in zip(samples, records, strict=True):
        truth = torch.from_numpy(record.boxes).float()
        out.append(LabelledCandidates(sample.candidates, match_labels(sample.candidates.boxes, truth, iou)))
    return out


def predictions(records: list, samples: list, post) -> list[ImagePrediction]:  # noqa: ANN001
    return [
        ImagePrediction(r.path, *[x.numpy() for x in post(s.candidates)])
        for r, s in zip(records, samples, strict=True)
    ]


def row(name: str, records: list, predictions: list) -> str:
    m = evaluate_records(records, predictions, on_warning=lambda _m: None, tune_threshold=True)
    threshold = m["tuned_threshold"]
    at50, count = m["by_iou"]["0.5"], m["count"]
    return (
        f"| {name} | {threshold:.3f} | {at50['AP']:.2f} | {at50['WCR']:.1f} | {at50['AER']:.2f} | "
        f"{m['by_iou']['0.7']['AP']:.2f} | {count['exact']:.1f} | {count['within1']:.1f} | "
        f"{count['mae']:.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train-cache", type=Path, required=True, help="`deepace train-rescorer --cache`")
    parser.add_argument("--val", type=Path, action="append", required=True, help="COCO file (repeatable)")
    parser.add_argument("--weights", type=Path, default=None, help="the detector (default: shipped)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="as train-rescorer")
    parser.add_argument("--hidden", type=int, nargs="+", default=[64])
    parser.add_argument("--epochs", type=int, default=None, help="default: 30 greedy, 8 set")
    parser.add_argument(
        "--kind", choices=["greedy", "set"], default="greedy", help="the rescorer (model.rescorer_kind)"
    )
    parser.add_argument(
        "--seeds", type=int, default=1, help="fits per variant (seeds 0…N-1), each reported, and their mean"
    )
    parser.add_argument(
        "--label-iou",
        type=float,
        default=None,
        help="relabel the training candidates: a candidate is a chromosome when it first claims one at this "
        "IoU (0.5 in the cache); needs --train-coco",
    )
    parser.add_argument(
        "--train-coco", type=Path, action="append", default=[], help="the cache's training files, in order"
    )
    parser.add_argument(
        "--own-decisions",
        action="store_true",
        help="also a second fit on teacher-forced rows plus rows built from the first fit's own decisions",
    )
    args = parser.parse_args()
    torch.set_num_threads(2)
    train = torch.load(args.train_cache, weights_only=False)
    if args.label_iou is not None:
        train = relabelled(train, [r for coco in args.train_coco for r in read_coco(coco)], args.label_iou)
    counting = Detector.load(args.weights)
    detector = detector_with_rescorer(counting, args.overrides)
    appearance = detector.config.model.rescorer_appearance
    origin = detector.config.model.rescorer_proposal_iou is not None
    rescorers: dict[int | str, OverlapRescorer | SetRescorer | MeanOfFits] = {}
    for hidden in args.hidden:
        fits = []
        for seed in range(args.seeds):
            stages = len(train[0].candidates.stage_scores[0])
            if args.kind == "set":
                fit = SetRescorer(stages, hidden)
                result = fit_set_rescorer(fit, train, epochs=args.epochs or 8, seed=seed, progress=False)
            else:
                fit = OverlapRescorer(stages, hidden, appearance, origin)
                result = fit_rescorer(fit, train, epochs=args.epochs or 30, seed=seed, progress=False)
            print(f"{args.kind}, hidden {hidden}, seed {seed}: {result}", flush=True)
            fits.append(fit)
            rescorers[hidden if args.seeds == 1 else f"{hidden}, seed {seed}"] = fit
        rescorer = fits[0]
        if args.seeds > 1 and args.kind == "greedy":
            rescorers[f"{hidden}, mean of {args.seeds} fits"] = MeanOfFits(fits)
        if args.own_decisions and args.kind == "greedy":
            features, labels = training_features(train)
            features = torch.cat([features, own_decision_features(rescorer, train)])
            second = OverlapRescorer(len(train[0].candidates.stage_scores[0]), hidden, appearance, origin)
            labels = torch.cat([labels, labels])
            result = fit_on_features(second, features, labels, args.epochs or 30, progress=False)
            print(f"hidden {hidden}, own decisions too: {result}")
            rescorers[f"{hidden}, own decisions too"] = second
    for val in args.val:
        records, samples = validation_samples(detector, counting, args.train_cache, val)
        labelled = sum(int(s.labels.sum()) == len(r.boxes) for s, r in zip(samples, records, strict=True))
        print(
            f"\n{val} ({len(records)} cells; a perfect rescorer of these candidates: exact count "
            f"{100 * labelled / len(records):.1f}%; chromosomes with no candidate at IoU >= 0.5: "
            f"{100 * unreached_share(records, samples):.2f}%)"
        )
        features, labels = training_features(samples)
        for name, rescorer in rescorers.items():
            if isinstance(rescorer, SetRescorer):
                decided = torch.cat([rescorer(s.candidates) >= 0.5 for s in samples if len(s.labels)])
                right = (decided.float() == labels).float().mean()
            else:
                with torch.no_grad():
                    right = ((rescorer.logits(features) > 0).float() == labels).float().mean()
            how = "" if isinstance(rescorer, SetRescorer) else " (teacher-forced)"
            print(f"rescorer, hidden {name}: {100 * float(right):.1f}% of candidates right{how}")
        print("| post-processing | threshold | AP50 | WCR@0.5 | AER@0.5 | AP70 | exact | ±1 | MAE |")
        print("|---|---|---|---|---|---|---|---|---|")

        def show(name: str, post) -> None:  # noqa: ANN001
            print(row(name, records, predictions(records, samples, post)))  # noqa: B023

        show("NMS 0.5 + Soft-NMS (paper)", lambda c: paper_postprocessing(c.boxes, c.scores))
        for hidden, rescorer in rescorers.items():
            show(f"{args.kind} rescorer, hidden {hidden}", lambda c, r=rescorer: rescored(r, c))
        print(f"(mean candidates per cell {np.mean([len(s.labels) for s in samples]):.1f})")


if __name__ == "__main__":
    main()
