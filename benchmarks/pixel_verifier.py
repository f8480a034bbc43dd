"""A pixel verifier beside the learned overlap rescorer (BENCHMARKS.md, "Session 8"): a small CNN that looks
at the pixels around each rescorer candidate, with the candidate's box and the already-accepted boxes drawn
as masks, and says whether the candidate is a chromosome no accepted box has found. Cross-fitted (two
folds of the training images) so that its logit can join the rescorer's inputs without the rescorer
learning from answers the network memorised. Measured, not adopted (within the rescorer's fit noise).

    extract: crops and teacher-forced labels of a candidate cache (`deepace train-rescorer --cache`, or a
             validation cache of `rescorer_variants.py`) and the COCO file(s) it was collected from
    train:   the two folds, their out-of-fold logits, accuracy on validation crops
    stack:   the rescorer refitted with the verifier's logit as one more input, against the plain fit, on
             the validation splits (greedy, the verifier inside the pass)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.ops import box_iou, roi_align

from deepace.data.coco import read_coco
from deepace.data.dataset import prepare_image_and_stain
from deepace.data.predictions import ImagePrediction
from deepace.models.rescorer import (
    ACCEPT_PROBABILITY,
    Candidates,
    OverlapRescorer,
    box_features,
    feature_count,
    overlap_features,
    pair_geometry,
)
from deepace.rescoring import fit_on_features, training_features

CROP = 48
CONTEXT = 1.5  # the crop's side, in units of the box's longer side


def crop_squares(boxes: Tensor) -> Tensor:
    """(N, 4) square regions centred on the boxes, side CONTEXT × the longer box side."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = CONTEXT * (boxes[:, 2:] - boxes[:, :2]).max(dim=1).values[:, None] / 2
    return torch.cat([centre - half, centre + half], dim=1)


def box_masks(squares: Tensor, boxes: Tensor) -> Tensor:
    """(R, B, CROP, CROP) bool: for each crop square, which grid cells fall inside each box."""
    steps = (torch.arange(CROP, dtype=torch.float32) + 0.5) / CROP
    side = (squares[:, 2] - squares[:, 0])[:, None]
    xs = squares[:, 0:1] + steps[None] * side  # (R, CROP)
    ys = squares[:, 1:2] + steps[None] * side
    inside_x = (xs[:, None, :] >= boxes[None, :, 0:1]) & (xs[:, None, :] <= boxes[None, :, 2:3])
    inside_y = (ys[:, None, :] >= boxes[None, :, 1:2]) & (ys[:, None, :] <= boxes[None, :, 3:4])
    return inside_y[:, :, :, None] & inside_x[:, :, None, :]


def render(gray: Tensor, boxes: Tensor, rows: Tensor, accepted: Tensor) -> Tensor:
    """(len(rows), 4, CROP, CROP) uint8 crops of the candidates `rows`: the image, the candidate's box, the
    accepted box that overlaps it most (IoU), and the union of the other boxes accepted before it
    (`accepted`: (len(rows), N) bool)."""
    squares = crop_squares(boxes[rows])
    pixels = roi_align(gray[None, None], [squares], CROP, spatial_scale=1.0, sampling_ratio=2, aligned=True)
    masks = box_masks(squares, boxes)
    index = torch.arange(len(rows))
    own = masks[index, rows]
    ious = torch.where(accepted, box_iou(boxes[rows], boxes), torch.tensor(-1.0))
    best = ious.argmax(dim=1)
    has_best = ious[index, best] > 0
    nearest = masks[index, best] & has_best[:, None, None]
    others = accepted.clone()
    others[index, best] = False
    rest = (masks & others[:, :, None, None]).any(dim=1)
    channels = [pixels[:, 0], own * 255.0, nearest * 255.0, rest * 255.0]
    return torch.stack([c.clamp(0, 255) for c in channels], dim=1).to(torch.uint8)


def teacher_accepted(labels: Tensor) -> Tensor:
    n = len(labels)
    return labels[None, :].expand(n, n) & torch.ones(n, n, dtype=torch.bool).tril(-1)


def extract(args: argparse.Namespace) -> None:
    samples = torch.load(args.cache, weights_only=False)
    records = [r for coco in args.coco for r in read_coco(coco)]
    assert len(samples) == len(records), (len(samples), len(records))
    crops, labels, image_ids = [], [], []
    start = time.time()
    for index, (sample, record) in enumerate(zip(samples, records, strict=True)):
        gray, _ = prepare_image_and_stain(record.path)
        boxes = sample.candidates.boxes.float()
        n = len(boxes)
        if n == 0:
            continue
        image = torch.from_numpy(gray).float()
        crops.append(render(image, boxes, torch.arange(n), teacher_accepted(sample.labels)))
        labels.append(sample.labels)
        image_ids.append(torch.full((n,), index))
        if index % 200 == 0:
            print(index, f"{time.time() - start:.0f}s", flush=True)
    torch.save(
        {"crops": torch.cat(crops), "labels": torch.cat(labels), "image": torch.cat(image_ids)}, args.out
    )


class PixelVerifier(nn.Module):
    def __init__(self, width: int = 32) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            )

        self.features = nn.Sequential(
            block(4, width, stride=2),  # 24 x 24
            block(width, width),
            nn.MaxPool2d(2),  # 12
            block(width, 2 * width),
            nn.MaxPool2d(2),  # 6
            block(2 * width, 4 * width),
            nn.MaxPool2d(2),  # 3
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * width * 9, 128), nn.ReLU(), nn.Linear(128, 1))

    def forward(self, crops: Tensor) -> Tensor:
        x = crops.float() / 255.0
        x = torch.cat([1.0 - x[:, :1], x[:, 1:]], dim=1)  # chromosomes bright on dark
        return self.head(self.features(x)).squeeze(-1)


def augment(crops: Tensor, generator: torch.Generator) -> Tensor:
    flip_x = torch.rand(len(crops), generator=generator) < 0.5
    flip_y = torch.rand(len(crops), generator=generator) < 0.5
    crops = torch.where(flip_x[:, None, None, None], crops.flip(3), crops)
    crops = torch.where(flip_y[:, None, None, None], crops.flip(2), crops)
    transpose = torch.rand(len(crops), generator=generator) < 0.5
    return torch.where(transpose[:, None, None, None], crops.transpose(2, 3), crops)


def train_fold(crops: Tensor, labels: Tensor, epochs: int, seed: int, width: int) -> PixelVerifier:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = PixelVerifier(width)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    batch = 256
    steps = epochs * ((len(labels) + batch - 1) // batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 2e-3, total_steps=steps, pct_start=0.1)
    loss_fn = nn.BCEWithLogitsLoss()
    start = time.time()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(labels), generator=generator)
        total = 0.0
        for begin in range(0, len(labels), batch):
            idx = order[begin : begin + batch]
            loss = loss_fn(model(augment(crops[idx], generator)), labels[idx].float())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(idx)
        print(f"epoch {epoch}: loss {total / len(labels):.4f} ({time.time() - start:.0f}s)", flush=True)
    return model.eval()


@torch.no_grad()
def logits_of(model: PixelVerifier, crops: Tensor) -> Tensor:
    return torch.cat([model(crops[i : i + 1024]) for i in range(0, len(crops), 1024)])


def train(args: argparse.Namespace) -> None:
    data = torch.load(args.crops, weights_only=False)
    crops, labels, image = data["crops"], data["labels"], data["image"]
    if args.limit:
        keep = image < args.limit
        crops, labels, image = crops[keep], labels[keep], image[keep]
    fold = image % 2
    oof = torch.zeros(len(labels))
    models = []
    for k in range(2):
        model = train_fold(crops[fold != k], labels[fold != k], args.epochs, k, args.width)
        oof[fold == k] = logits_of(model, crops[fold == k])
        right = ((oof[fold == k] > 0) == labels[fold == k]).float().mean()
        print(f"fold {k}: out-of-fold accuracy {100 * float(right):.2f}%", flush=True)
        models.append(model.state_dict())
    torch.save({"folds": models, "width": args.width, "oof": oof}, args.out)
    for path in args.val:
        val = torch.load(path, weights_only=False)
        scores = []
        for state in models:
            model = PixelVerifier(args.width)
            model.load_state_dict(state)
            scores.append(logits_of(model.eval(), val["crops"]))
        mean = torch.stack(scores).mean(dim=0)
        for name, s in [("fold 0", scores[0]), ("fold 1", scores[1]), ("mean", mean)]:
            right = ((s > 0) == val["labels"]).float().mean()
            print(f"{path.name} {name}: accuracy {100 * float(right):.2f}%")


class StackedRescorer(OverlapRescorer):
    """The overlap rescorer with one more input: the pixel verifier's logit for the candidate, rendered
    with the boxes accepted so far (greedy, as the rescorer itself)."""

    def __init__(self, num_stages: int, verifiers: list[PixelVerifier], hidden: int = 64) -> None:
        super().__init__(num_stages, hidden)
        n_in = feature_count(num_stages) + 1
        self.feature_mean = torch.zeros(n_in)
        self.feature_std = torch.ones(n_in)
        self.net[0] = nn.Linear(n_in, hidden)
        self.verifiers = verifiers

    @torch.no_grad()
    def verify(self, crops: Tensor) -> Tensor:
        return torch.stack([v(crops) for v in self.verifiers]).mean(dim=0)

    @torch.no_grad()
    def rescore(self, candidates: Candidates, gray: Tensor) -> Tensor:
        n = len(candidates.boxes)
        probabilities = candidates.scores.new_zeros(n)
        if n == 0:
            return probabilities
        boxes = candidates.boxes.float()
        geometry = pair_geometry(candidates)
        fixed = box_features(candidates, geometry)
        accepted = torch.zeros(1, n, dtype=torch.bool)
        for i in range(n):
            rows = tuple(m[i : i + 1] for m in geometry)
            pixel = self.verify(render(gray, boxes, torch.tensor([i]), accepted))
            row = torch.cat(
                [fixed[i : i + 1], overlap_features(accepted, rows, candidates.scores), pixel[:, None]], dim=1
            )
            probabilities[i] = torch.sigmoid(self.logits(row))[0]
            accepted[0, i] = bool(probabilities[i] >= ACCEPT_PROBABILITY)
        return probabilities


def load_verifiers(path: Path) -> list[PixelVerifier]:
    saved = torch.load(path, weights_only=False)
    verifiers = []
    for state in saved["folds"]:
        verifier = PixelVerifier(saved["width"])
        verifier.load_state_dict(state)
        verifiers.append(verifier.eval())
    return verifiers


def stack(args: argparse.Namespace) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from rescorer_variants import predictions, rescored, row, validation_cache

    train_samples = torch.load(args.train_cache, weights_only=False)
    features, labels = training_features(train_samples)
    oof = torch.load(args.verifier, weights_only=False)["oof"]
    assert len(oof) == len(labels), (len(oof), len(labels))
    stages = train_samples[0].candidates.stage_scores.shape[1]
    plain = OverlapRescorer(stages)
    print("plain", fit_on_features(plain, features, labels, progress=False))
    stacked = StackedRescorer(stages, load_verifiers(args.verifier))
    stacked_features = torch.cat([features, oof[:, None]], dim=1)
    print("stacked", fit_on_features(stacked, stacked_features, labels, progress=False))
    for val in args.val:
        records = read_coco(val)
        samples = torch.load(validation_cache(args.train_cache, val), weights_only=False)
        grays = [torch.from_numpy(prepare_image_and_stain(r.path)[0]).float() for r in records]
        plain_predictions = predictions(records, samples, lambda c: rescored(plain, c))
        start = time.time()
        stacked_predictions = []
        for record, sample, gray in zip(records, samples, grays, strict=True):
            p = stacked.rescore(sample.candidates, gray)
            keep = torch.where(p >= 0.05)[0]
            keep = keep[p[keep].argsort(descending=True)]
            stacked_predictions.append(
                ImagePrediction(record.path, sample.candidates.boxes[keep].numpy(), p[keep].numpy())
            )
        seconds = (time.time() - start) / len(records)
        print(f"\n{val} ({len(records)} cells; stacked rescoring {seconds:.3f} s per cell)")
        print("| post-processing | threshold | AP50 | WCR@0.5 | AER@0.5 | AP70 | exact | ±1 | MAE |")
        print("|---|---|---|---|---|---|---|---|---|")
        print(row("rescorer", records, plain_predictions))
        print(row("rescorer + pixel verifier", records, stacked_predictions))


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("extract")
    p.add_argument("--cache", type=Path, required=True)
    p.add_argument("--coco", type=Path, action="append", required=True)
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("train")
    p.add_argument("--crops", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--val", type=Path, action="append", default=[])
    p.add_argument("--limit", type=int, default=0, help="only the first N images (a quick try)")
    p = sub.add_parser("stack")
    p.add_argument("--train-cache", type=Path, required=True)
    p.add_argument("--verifier", type=Path, required=True)
    p.add_argument("--val", type=Path, action="append", required=True)
    args = parser.parse_args()
    torch.set_num_threads(2)
    {"extract": extract, "train": train, "stack": stack}[args.command](args)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
