"""Fine-tune only the head stages of a trained model, on backbone features and RPN proposals computed once.

A full training iteration at full resolution takes ~3.4 s on the 2-core CPU, of which the three head
stages' forward and backward are ~0.4 s: with the backbone and RPN frozen and their outputs cached, the
heads see about eight times as many iterations per CPU-second. The features are the ones inference uses
(the ONNX Runtime backbone), the proposals the test-time ones (400 after Soft-NMS), so the heads learn on
what they will be given. The same cache gives the rescorer's training candidates without running the
backbone again.

    python benchmarks/head_finetune.py cache --weights W --train T.json --train M.json --views 2 --out DIR
    python benchmarks/head_finetune.py train --weights W --cache DIR --iterations N --out HEADS_DIR \
        [--repeat M.json=3] [--lr 0.001] [--resume]
    python benchmarks/head_finetune.py candidates --weights HEADS_DIR/model.pt --cache DIR --out C.pt
    deepace train-rescorer HEADS_DIR/model.pt --train T.json --train M.json --cache C.pt \
        --set model.rpn_post_nms_top_n_test=400 --calibrate-on … --out RESCORED.pt

The cache holds, per image and view (view 0 unflipped, further views one of the three flips each, fixed by
the image's index), the feature maps in float16, the proposals and the targets in network pixels.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from deepace.config import Config
from deepace.data.coco import read_coco
from deepace.data.dataset import DetectionDataset
from deepace.engine import lr_factor
from deepace.inference import Detector, float_weights, read_model_file, save_model
from deepace.models.detector import build_detector
from deepace.rescoring import LabelledCandidates, in_image_pixels, match_labels

FLIPS = [(True, False), (False, True), (True, True)]


def view_flips(index: int, views: int) -> list[tuple[bool, bool]]:
    """View 0 unflipped; the others distinct flips, chosen by the image's index."""
    order = random.Random(index).sample(FLIPS, k=len(FLIPS))
    return [(False, False), *order[: views - 1]]


@torch.inference_mode()
def cache_command(args: argparse.Namespace) -> None:
    detector = Detector.load(args.weights, num_threads=2, optimise=True)
    model = detector.model.eval()
    config = detector.config
    args.out.mkdir(parents=True, exist_ok=True)
    index = []
    for coco in args.train:
        records = read_coco(coco)
        dataset = DetectionDataset(
            records, config.model.preprocess_threshold, stain_scale=config.model.stain_scale
        )
        tic = time.time()
        for i, record in enumerate(records):
            for v, (h, vf) in enumerate(view_flips(i, args.views)):
                name = f"{coco.stem}-{coco.parent.name}-{i:05d}-{v}.pt"
                path = args.out / name
                index.append({"file": name, "coco": str(coco), "record": i, "view": v})
                if path.exists():
                    continue
                image, target = dataset.load(i, h, vf)
                images, targets = model.transform([image], [target])
                features = model.backbone(images.tensors)
                proposals, _ = model.rpn(images, features)
                torch.save(
                    {
                        "features": {k: f.half() for k, f in features.items()},
                        "proposals": proposals[0],
                        "image_size": images.image_sizes[0],
                        "boxes": targets[0]["boxes"],
                        "chromosome_class": targets[0]["chromosome_class"],
                        # network pixels → the record's image pixels (view 0 only, unflipped)
                        "to_image": (
                            record.width / images.image_sizes[0][1],
                            record.height / images.image_sizes[0][0],
                        ),
                        "truth": torch.as_tensor(record.boxes, dtype=torch.float32),
                    },
                    path,
                )
            if i % 100 == 0:
                print(
                    f"{coco.parent.name}/{coco.name}: {i}/{len(records)} ({time.time() - tic:.0f} s)",
                    flush=True,
                )
    (args.out / "index.json").write_text(json.dumps(index))


def load_entry(path: Path) -> dict:
    entry = torch.load(path, weights_only=False)
    entry["features"] = {k: f.float() for k, f in entry["features"].items()}
    return entry


def trainable_heads(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The head stages' parameters; the backbone, RPN and rescorer stay frozen."""
    params = []
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("roi_heads.") and not name.startswith("roi_heads.rescorer."))
        if p.requires_grad:
            params.append(p)
    return params


def train_command(args: argparse.Namespace) -> None:
    torch.set_num_threads(2)
    payload = read_model_file(args.weights)
    config = Config.from_dict(payload["config"])
    config.train.iterations = args.iterations
    config.train.lr = args.lr
    config.train.warmup_iterations = args.warmup
    config.train.lr_steps = (0.5, 0.85)
    model = build_detector(config.model, load_backbone_weights=False)
    model.load_state_dict(float_weights(payload))
    model.eval()
    model.roi_heads.train()
    params = trainable_heads(model)
    optimizer = torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, config))
    index = json.loads((args.cache / "index.json").read_text())
    repeats = dict(item.split("=") for item in args.repeat)
    images: dict[tuple[str, int], list[str]] = {}
    for item in index:
        images.setdefault((item["coco"], item["record"]), []).append(item["file"])
    pool = [files for (coco, _), files in images.items() for _ in range(int(repeats.get(coco, 1)))]
    args.out.mkdir(parents=True, exist_ok=True)
    last = args.out / "last.pt"
    start = 0
    if args.resume and last.exists():
        state = torch.load(last, weights_only=False)
        model.roi_heads.load_state_dict(state["heads"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start = state["iteration"]
    log = (args.out / "log.jsonl").open("a")
    window: dict[str, list[float]] = {}
    tic = time.time()
    for iteration in range(start, args.iterations):
        epoch, position = divmod(iteration, len(pool))
        order = np.random.default_rng([args.seed, epoch]).permutation(len(pool))
        files = pool[order[position]]
        entry = load_entry(args.cache / random.Random(args.seed * 1_000_003 + iteration).choice(files))
        torch.manual_seed(args.seed * 1_000_003 + iteration)
        targets = [
            {
                "boxes": entry["boxes"],
                "labels": torch.ones(len(entry["boxes"]), dtype=torch.int64),
                "chromosome_class": entry["chromosome_class"],
            }
        ]
        _, losses = model.roi_heads(entry["features"], [entry["proposals"]], [entry["image_size"]], targets)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        optimizer.step()
        scheduler.step()
        for k, v in losses.items():
            window.setdefault(k, []).append(float(v.detach()))
        done = iteration + 1
        if done % 50 == 0 or done == args.iterations:
            line = {
                "iteration": done,
                "lr": optimizer.param_groups[0]["lr"],
                "s_per_it": (time.time() - tic) / len(next(iter(window.values()))),
            }
            line |= {k: round(float(np.mean(v)), 4) for k, v in window.items()}
            line["loss"] = round(sum(line[k] for k in window), 4)
            print(json.dumps(line), flush=True)
            log.write(json.dumps(line) + "\n")
            log.flush()
            window, tic = {}, time.time()
        if done % 500 == 0 or done == args.iterations:
            state = {
                "heads": model.roi_heads.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "iteration": done,
            }
            torch.save(state, last.with_suffix(".tmp"))
            last.with_suffix(".tmp").replace(last)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    meta = {"base_model": str(args.weights), "head_finetune": settings}
    save_model(args.out / "model.pt", model.eval(), config, float(payload.get("score_threshold", 0.5)), meta)
    print(f"wrote {args.out / 'model.pt'}")


@torch.inference_mode()
def candidates_command(args: argparse.Namespace) -> None:
    """The rescorer's labelled training candidates (as `deepace train-rescorer --cache` stores them) from
    the cached unflipped views, in the cache's order."""
    from deepace.rescoring import detector_with_rescorer

    torch.set_num_threads(2)
    detector = detector_with_rescorer(Detector.load(args.weights), args.set)
    heads = detector.model.eval().roi_heads
    index = [item for item in json.loads((args.cache / "index.json").read_text()) if item["view"] == 0]
    samples = []
    tic = time.time()
    for n, item in enumerate(index):
        entry = load_entry(args.cache / item["file"])
        found = heads.candidates(entry["features"], [entry["proposals"]], [entry["image_size"]])[0]
        candidates = in_image_pixels(found, *entry["to_image"])
        samples.append(LabelledCandidates(candidates, match_labels(candidates.boxes, entry["truth"])))
        if n % 200 == 0:
            print(f"{n}/{len(index)} ({time.time() - tic:.0f} s)", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(samples, args.out)
    print(f"wrote {args.out}: {len(samples)} images")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cache = sub.add_parser("cache")
    cache.add_argument("--weights", type=Path, default=None)
    cache.add_argument("--train", type=Path, action="append", required=True)
    cache.add_argument("--views", type=int, default=2, choices=[1, 2, 3, 4])
    cache.add_argument("--out", type=Path, required=True)
    train = sub.add_parser("train")
    train.add_argument("--weights", type=Path, required=True)
    train.add_argument("--cache", type=Path, required=True)
    train.add_argument("--iterations", type=int, required=True)
    train.add_argument("--lr", type=float, default=0.001)
    train.add_argument("--warmup", type=int, default=100)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--repeat", action="append", default=[], help="COCO=N: its images N times per epoch")
    train.add_argument("--resume", action="store_true")
    train.add_argument("--out", type=Path, required=True)
    candidates = sub.add_parser("candidates")
    candidates.add_argument("--weights", type=Path, required=True)
    candidates.add_argument("--cache", type=Path, required=True)
    candidates.add_argument("--set", action="append", default=["model.rpn_post_nms_top_n_test=400"])
    candidates.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    {"cache": cache_command, "train": train_command, "candidates": candidates_command}[args.command](args)


if __name__ == "__main__":
    main()
