"""Fine-tuning the head stages alone, on backbone features and RPN proposals computed once (not in the
paper; `deepace train-heads`); the RPN's head can be trained alone on the same cache (`part='rpn'`).

A full-resolution training iteration takes ~3.4 s on a 2-core CPU, of which the three head stages' forward
and backward are ~0.4 s: with the backbone and RPN frozen and their outputs cached, the heads see about
eight times as many iterations per CPU-second (BENCHMARKS.md, "Session 18"). The cached features are the
ones inference computes (the optimised backbone `deepace count` runs) and the proposals the test-time ones,
so the heads learn on what they will be given. The same cache gives the rescorer's training candidates
without running the backbone again.

A cache folder holds, per training image and view (view 0 unflipped, further views one of the three flips
each, fixed by the image's index), one file with the feature maps in float16, the proposals and the
targets in network pixels, and `index.json` listing them.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.models.detection.image_list import ImageList
from tqdm import tqdm

from deepace.config import Config
from deepace.data.copy_paste import ChromosomeBank, paster
from deepace.data.dataset import DetectionDataset
from deepace.data.records import ImageRecord
from deepace.engine import lr_factor, optimisation_step
from deepace.rescoring import LabelledCandidates, in_image_pixels, match_labels

FLIPS = [(True, False), (False, True), (True, True)]


def view_flips(index: int, views: int) -> list[tuple[bool, bool]]:
    """(horizontal, vertical) of each cached view of image `index`: view 0 unflipped, the others
    distinct flips chosen by the index (so a cache is the same whenever it is built)."""
    if not 1 <= views <= 1 + len(FLIPS):
        raise ValueError(f"views must be 1 to {1 + len(FLIPS)}, not {views}")
    order = random.Random(index).sample(FLIPS, k=len(FLIPS))
    return [(False, False), *order[: views - 1]]


def view_file(source: Path, record: int, view: int) -> str:
    return f"{source.stem}-{source.parent.name}-{record:05d}-{view}.pt"


@torch.inference_mode()
def cache_views(
    model: torch.nn.Module,
    config: Config,
    sources: dict[Path, list[ImageRecord]],
    views: int,
    folder: Path,
    progress: bool = True,
    pasted: dict[Path, ChromosomeBank] | None = None,
    pasted_views: int = 0,
) -> list[dict]:
    """Run `model`'s transform, backbone and RPN (in eval mode, as inference does) once on every view of
    every record and store what the heads need; files already there are kept (a cache is resumable).
    `sources`: each annotation file's records. With `pasted`, the records of each source it names get
    `pasted_views` more views (numbered after the flips) with chromosomes from its bank pasted on
    (copy_paste.py; unflipped, seeded by record and view, so a cache is the same whenever it is built).
    Returns and writes the index."""
    model.eval()
    folder.mkdir(parents=True, exist_ok=True)
    pasted = pasted or {}
    index = []
    total = sum(len(r) * (views + (pasted_views if s in pasted else 0)) for s, r in sources.items())
    bar = tqdm(total=total, desc="caching features", unit="view", disable=not progress)
    for source, records in sources.items():
        dataset = DetectionDataset(
            records,
            config.model.preprocess_threshold,
            stain_scale=config.model.stain_scale,
            levels=config.model.brightfield_levels,
            denoise_above=config.model.denoise_above,
        )
        extra = pasted_views if source in pasted else 0
        for i, record in enumerate(records):
            plain = [(h, v, None) for h, v in view_flips(i, views)]
            pastes = [(False, False, paster(pasted[source], seed=i * 1_000 + v)) for v in range(extra)]
            for v, (horizontal, vertical, augment) in enumerate(plain + pastes):
                name = view_file(source, i, v)
                index.append({"file": name, "coco": str(source), "record": i, "view": v})
                bar.update()
                if (folder / name).exists():
                    continue
                image, target = dataset.load(i, horizontal, vertical, augment)
                images, targets = model.transform([image], [target])
                features = model.backbone(images.tensors)
                proposals, _ = model.rpn(images, features)
                entry = {
                    "features": {k: f.half().cpu() for k, f in features.items()},
                    "proposals": proposals[0].cpu(),
                    "image_size": images.image_sizes[0],
                    "boxes": targets[0]["boxes"].cpu(),
                    "chromosome_class": targets[0]["chromosome_class"].cpu(),
                    # network pixels → the record's image pixels (used for view 0, which is unflipped)
                    "to_image": (
                        record.width / images.image_sizes[0][1],
                        record.height / images.image_sizes[0][0],
                    ),
                    "truth": torch.as_tensor(record.boxes, dtype=torch.float32).reshape(-1, 4),
                }
                torch.save(entry, folder / f"{name}.tmp")
                (folder / f"{name}.tmp").replace(folder / name)
    bar.close()
    (folder / "index.json").write_text(json.dumps(index))
    return index


def load_view(path: Path) -> dict:
    entry = torch.load(path, weights_only=False)
    entry["features"] = {k: f.float() for k, f in entry["features"].items()}
    return entry


def trainable_part(model: torch.nn.Module, part: str = "heads") -> list[torch.nn.Parameter]:
    """The parameters of `part` (the head stages, or the RPN's head), now the only ones requiring
    gradients; the rest and the rescorer (which is refitted on the trained model's candidates afterwards)
    stay frozen."""
    part_module(model, part)
    trains = is_head_weight if part == "heads" else is_rpn_weight
    params = []
    for name, p in model.named_parameters():
        p.requires_grad_(trains(name))
        if p.requires_grad:
            params.append(p)
    return params


def training_pool(index: list[dict], repeats: dict[str, int] | None = None) -> list[list[str]]:
    """One entry per image and epoch draw (an annotation file's images `repeats[file]` times): the
    cached views of that image, one of which an iteration picks."""
    images: dict[tuple[str, int], list[str]] = {}
    for item in index:
        images.setdefault((item["coco"], item["record"]), []).append(item["file"])
    repeats = repeats or {}
    return [files for (coco, _), files in images.items() for _ in range(int(repeats.get(coco, 1)))]


@dataclass
class HeadSchedule:
    """SGD with momentum; linear warm-up, then the learning rate ÷10 at each of `lr_steps` (fractions of
    the iterations), as `deepace train` does."""

    iterations: int = 2000
    lr: float = 0.001
    warmup_iterations: int = 100
    lr_steps: tuple[float, ...] = (0.5, 0.85)
    seed: int = 0
    clip_grad_norm: float = 10.0
    log_every: int = 50
    checkpoint_every: int = 500


PARTS = ("heads", "rpn")


def part_module(model: torch.nn.Module, part: str) -> torch.nn.Module:
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, not {part!r}")
    return model.roi_heads if part == "heads" else model.rpn


def finest_stride(model: torch.nn.Module) -> int:
    """The stride of the first feature map the backbone hands the RPN (the pyramid's finest level, else the
    single stride-16 map)."""
    config = model.config
    return config.fpn_finest_stride if config.fpn else 16


def cached_image_list(entry: dict, stride: int) -> ImageList:
    """The batch geometry the RPN's anchor generator reads, rebuilt from a cached view: the padded size is
    the finest feature map's size times its stride (the pixels themselves are not needed)."""
    height, width = next(iter(entry["features"].values())).shape[-2:]
    return ImageList(torch.empty(1, 1, height * stride, width * stride), [entry["image_size"]])


def cached_losses(model: torch.nn.Module, part: str, entry: dict) -> dict[str, torch.Tensor]:
    """The training losses of `part` ('heads' or 'rpn') on one cached view."""
    targets = [
        {
            "boxes": entry["boxes"],
            "labels": torch.ones(len(entry["boxes"]), dtype=torch.int64),
            "chromosome_class": entry["chromosome_class"],
        }
    ]
    if part == "rpn":
        return model.rpn.losses(cached_image_list(entry, finest_stride(model)), entry["features"], targets)
    _, losses = model.roi_heads(entry["features"], [entry["proposals"]], [entry["image_size"]], targets)
    return losses


def train_heads(
    model: torch.nn.Module,
    folder: Path,
    pool: list[list[str]],
    schedule: HeadSchedule,
    work_dir: Path,
    resume: bool = True,
    progress: bool = True,
    on_log: Callable[[dict], None] | None = None,
    part: str = "heads",
) -> None:
    """Train `model`'s head stages (`part='heads'`) or its RPN head (`part='rpn'`: objectness and anchor
    regression, HNAS as in `deepace train`) on the cached views in `folder`, the rest frozen and in eval
    mode. Checkpoints (`last.pt`, the part and optimiser) and the loss log (`log.jsonl`) go to `work_dir`;
    with `resume`, a checkpoint there is continued. The image order depends only on the seed and
    iteration. The cached proposals are the frozen RPN's: after training the RPN, `cached_candidates`
    with `fresh_proposals` recomputes them."""
    if not pool:
        raise ValueError("no cached images to train on")
    module = part_module(model, part)
    model.eval()
    module.train()
    params = trainable_part(model, part)
    optimizer = torch.optim.SGD(params, lr=schedule.lr, momentum=0.9, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, schedule))
    work_dir.mkdir(parents=True, exist_ok=True)
    last = work_dir / "last.pt"
    start = 0
    if resume and last.exists():
        state = torch.load(last, weights_only=False)
        module.load_state_dict(state[part])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start = state["iteration"]
    seed = schedule.seed
    window: dict[str, list[float]] = {}
    tic = time.time()
    with (work_dir / "log.jsonl").open("a") as log:
        for iteration in tqdm(
            range(start, schedule.iterations),
            desc=f"training {part}",
            unit="it",
            initial=start,
            total=schedule.iterations,
            disable=not progress,
        ):
            epoch, position = divmod(iteration, len(pool))
            order = np.random.default_rng([seed, epoch]).permutation(len(pool))
            files = pool[order[position]]
            entry = load_view(folder / random.Random(seed * 1_000_003 + iteration).choice(files))
            torch.manual_seed(seed * 1_000_003 + iteration)
            losses = cached_losses(model, part, entry)
            optimisation_step(sum(losses.values()), optimizer, scheduler, params, schedule.clip_grad_norm)
            for k, v in losses.items():
                window.setdefault(k, []).append(float(v.detach()))
            done = iteration + 1
            if done % schedule.log_every == 0 or done == schedule.iterations:
                steps = len(next(iter(window.values())))
                line = {"iteration": done, "lr": optimizer.param_groups[0]["lr"]}
                line["s_per_it"] = (time.time() - tic) / steps
                line |= {k: round(float(np.mean(v)), 4) for k, v in window.items()}
                line["loss"] = round(sum(line[k] for k in window), 4)
                log.write(json.dumps(line) + "\n")
                log.flush()
                if on_log is not None:
                    on_log(line)
                window, tic = {}, time.time()
            if done % schedule.checkpoint_every == 0 or done == schedule.iterations:
                state = {
                    part: module.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "iteration": done,
                }
                torch.save(state, last.with_suffix(".tmp"))
                last.with_suffix(".tmp").replace(last)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)


@torch.inference_mode()
def cached_candidates(
    model: torch.nn.Module,
    folder: Path,
    index: list[dict],
    progress: bool = True,
    fresh_proposals: bool = False,
) -> list[LabelledCandidates]:
    """The rescorer's labelled training candidates (as `deepace train-rescorer --cache` stores them) from
    the cached unflipped views, in the index's order: what `deepace train-rescorer` collects, without
    running the backbone again. `fresh_proposals`: `model`'s RPN proposes again on the cached features
    (after it was trained on them) instead of the cached proposals being used."""
    model.eval()
    samples = []
    for item in tqdm(
        [item for item in index if item["view"] == 0], desc="candidates", unit="img", disable=not progress
    ):
        entry = load_view(folder / item["file"])
        if fresh_proposals:
            images = cached_image_list(entry, finest_stride(model))
            entry["proposals"] = model.rpn(images, entry["features"])[0][0]
        found = model.roi_heads.candidates(entry["features"], [entry["proposals"]], [entry["image_size"]])[0]
        candidates = in_image_pixels(found, *entry["to_image"])
        samples.append(LabelledCandidates(candidates, match_labels(candidates.boxes, entry["truth"])))
    return samples


def is_head_weight(name: str) -> bool:
    """A head stage's weight: what `train_heads` trains (not the backbone, the RPN or the rescorer)."""
    return name.startswith("roi_heads.") and not name.startswith("roi_heads.rescorer.")


def is_rpn_weight(name: str) -> bool:
    return name.startswith("rpn.")


def average_heads(states: list[dict[str, torch.Tensor]], tolerance: float = 1e-2) -> dict[str, torch.Tensor]:
    """The first state dict with its head stages' weights replaced by their mean over `states`: a "model
    soup" (Wortsman et al. 2022, uniform soup) of head fine-tunes of one base model, which costs nothing at
    inference. The backbone's and the RPN's weights must agree across `states` up to `tolerance` (absolute;
    the shipped file is float16): heads trained on different features cannot be averaged. The rescorer is
    the first model's, to be refitted on the averaged heads' candidates."""
    if not states:
        raise ValueError("no models to average")
    first = states[0]
    for other in states[1:]:
        if other.keys() != first.keys():
            raise ValueError("the models have different layers")
        for name, value in first.items():
            if name.startswith("roi_heads.") or not value.is_floating_point():
                continue
            if (
                value.shape != other[name].shape
                or (value.float() - other[name].float()).abs().max() > tolerance
            ):
                raise ValueError(f"{name} differs: not head fine-tunes of one base model")
    averaged = dict(first)
    for name, value in first.items():
        if is_head_weight(name) and value.is_floating_point():
            averaged[name] = torch.stack([s[name].float() for s in states]).mean(0)
    return averaged
