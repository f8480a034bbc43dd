"""Training and evaluation loops (the recipe; the model's parts live in deepace.models).

Data order, flips and every random draw of the samplers are functions of (seed, iteration), so a run that
is interrupted and resumed from its last checkpoint reaches the same weights as one that was not (under a
time budget, `train.max_minutes`, the learning-rate steps fall by the clock, so only the data order is).
Distributed training: launch with `torchrun --nproc_per_node N -m deepace train ...`; each process
takes its share of every iteration's images and DistributedDataParallel averages the gradients.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from deepace.config import Config
from deepace.data.dataset import DetectionDataset
from deepace.data.predictions import ImagePrediction
from deepace.data.records import ImageRecord
from deepace.devices import resolve_device
from deepace.inference import Detector, float_weights, read_model_file, save_model
from deepace.metrics import evaluate_records, expected_counts
from deepace.metrics.threshold import tune_score_threshold
from deepace.models.detector import adapt_state_dict, build_detector
from deepace.provenance import META_KEY, fingerprints, trained_on


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistInfo:
    """Join the process group torchrun set up (gloo on CPU, nccl on GPUs); a no-op for one process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size())


class StepSchedule(Protocol):
    """What the learning-rate schedule reads: TrainConfig, or head_finetune.HeadSchedule."""

    iterations: int
    lr_steps: tuple[float, ...]
    warmup_iterations: int


def lr_factor(iteration: int, t: StepSchedule, time_fraction: float = 0.0) -> float:
    """Step decay ÷10 at each fraction of `t.lr_steps` (§3.2), after an optional linear warm-up.

    time_fraction: the share of a time budget spent (TrainConfig.max_minutes); a step falls when either
    the iterations or the time reach its fraction.
    """
    factor = 0.1 ** sum(iteration >= int(s * t.iterations) or time_fraction >= s for s in t.lr_steps)
    if t.warmup_iterations and iteration < t.warmup_iterations:
        factor *= 0.001 + (1 - 0.001) * iteration / t.warmup_iterations
    return factor


def optimisation_step(
    loss: torch.Tensor | None,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    params: list[torch.nn.Parameter],
    clip_grad_norm: float | None,
) -> None:
    """Backward, the gradient norm clipped (if set), then the optimiser's and the schedule's step.
    `loss` None: the gradients are already in place (`accumulated_losses`)."""
    if loss is not None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
    if clip_grad_norm:
        torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
    optimizer.step()
    scheduler.step()


def accumulated_losses(
    compute_losses: Callable[[slice], dict[str, torch.Tensor]],
    batch_size: int,
    micro_batches: int,
    defer_sync: Callable[[], AbstractContextManager[Any]] | None = None,
) -> dict[str, torch.Tensor]:
    """Gradient accumulation: the batch's images in `micro_batches` consecutive parts, each part's summed
    loss ÷ `micro_batches` sent backward as soon as it is computed, so only one part's graph is held in
    memory. The gradients are those of the mean of the parts' losses, which is the whole batch's loss when
    the parts sample alike (each loss term is a mean over its part's sampled anchors or RoIs). Returns
    each loss term averaged over the parts, detached. `compute_losses(part)` gets the part's slice of the
    batch. The caller zeroes the gradients before and steps after. `defer_sync`: DistributedDataParallel's
    `no_sync`, so that the processes average their gradients once, at the last part's backward."""
    if micro_batches < 1:
        raise ValueError(f"train.micro_batches must be at least 1, not {micro_batches}")
    parts = min(micro_batches, batch_size)
    bounds = np.linspace(0, batch_size, parts + 1).round().astype(int)
    totals: dict[str, torch.Tensor] = {}
    for n, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True), start=1):
        deferred = defer_sync is not None and n < parts
        with defer_sync() if deferred else nullcontext():
            losses = compute_losses(slice(int(a), int(b)))
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {float(loss.detach())}: {losses}")
            (loss / parts).backward()
        for k, v in losses.items():
            totals[k] = totals.get(k, 0.0) + v.detach() / parts
    return totals


def samples_for_iteration(
    iteration: int, n_images: int, config: Config, dist_info: DistInfo
) -> list[tuple[int, bool, bool]]:
    """(image index, horizontal flip, vertical flip) for this process at this iteration."""
    batch = config.train.batch_size
    out = []
    for b in range(batch):
        g = (iteration * dist_info.world_size + dist_info.rank) * batch + b
        epoch, position = divmod(g, n_images)
        order = np.random.default_rng([config.train.seed, epoch]).permutation(n_images)
        rng = random.Random(config.train.seed * 1_000_003 + g)
        flips = config.train.flips
        out.append((int(order[position]), flips and rng.random() < 0.5, flips and rng.random() < 0.5))
    return out


class IterationBatches(torch.utils.data.Dataset):
    """Item i: the loaded (image, target) pairs of training iteration i, so that a DataLoader's workers can
    prepare the next iterations while the model trains on this one."""

    def __init__(
        self, dataset: DetectionDataset, iterations: int, config: Config, dist_info: DistInfo
    ) -> None:
        self.dataset, self.iterations, self.config, self.dist_info = dataset, iterations, config, dist_info

    def __len__(self) -> int:
        return self.iterations

    def __getitem__(self, iteration: int) -> list[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
        samples = samples_for_iteration(iteration, len(self.dataset), self.config, self.dist_info)
        return [self.dataset.load(i, h, v) for i, h, v in samples]


def iteration_loader(
    batches: IterationBatches, start: int, end: int, workers: int
) -> torch.utils.data.DataLoader:
    """Iterations start … end−1 in order, read by `workers` processes ahead of the training loop. Not
    pinned: the images are expanded views of one grey plane, which pinning refuses (seen on a GPU)."""
    return torch.utils.data.DataLoader(
        batches,
        batch_size=None,
        sampler=range(start, end),
        num_workers=workers,
        prefetch_factor=4 if workers else None,
    )


def predict_records_with_stains(
    detector: Detector, records: list[ImageRecord], progress: bool = False, views: int = 1
) -> list[tuple[ImagePrediction, str]]:
    """Each record's prediction and the stain its image was read as; `views`: orientations each image is
    counted in, the median one kept (deepace/views.py)."""
    out = []
    for record in tqdm(records, desc="predicting", unit="img", disable=not progress, leave=False):
        found = detector.detect(record.path, views=views)
        threshold = detector.threshold_for(found.stain)
        prediction = ImagePrediction(record.path, found.boxes, found.scores, threshold, found.view_counts)
        out.append((prediction, found.stain))
    return out


def predict_records(
    detector: Detector, records: list[ImageRecord], progress: bool = False, views: int = 1
) -> list[ImagePrediction]:
    return [pred for pred, _stain in predict_records_with_stains(detector, records, progress, views)]


def validate(
    model: torch.nn.Module,
    config: Config,
    records: list[ImageRecord],
    tune_threshold: bool = True,
    progress: bool = False,
) -> tuple[dict[str, Any], float]:
    """Paper metrics on `records`; with tune_threshold the counting threshold that maximises exact-count
    accuracy on these records is chosen first (and returned)."""
    was_training = model.training
    detector = Detector(model, config, config.score_threshold)
    preds = predict_records(detector, records, progress)
    threshold = config.score_threshold
    if tune_threshold:
        expected = expected_counts(records)
        threshold, _ = tune_score_threshold([p.scores for p in preds], expected)
    metrics = evaluate_records(records, preds, score_threshold=threshold, on_warning=lambda _m: None)
    metrics["score_threshold"] = threshold
    model.train(was_training)
    return metrics, threshold


def _selection_key(metrics: dict[str, Any]) -> tuple[float, float]:
    at50 = metrics["by_iou"]["0.5"]
    return (metrics["count"]["exact"] or 0.0, -(at50["AER"] if at50["AER"] is not None else math.inf))


def training_fingerprints(records: list[ImageRecord], init_weights: str | None) -> list[str]:
    """The training images' fingerprints (deepace.provenance), with those of the model fine-tuned from."""
    found = set(fingerprints(r.path for r in records))
    if init_weights is not None and Path(init_weights).exists():
        found |= trained_on(read_model_file(Path(init_weights)).get("meta", {}))
    return sorted(found)


def train(
    config: Config,
    train_records: list[ImageRecord],
    val_records: list[ImageRecord],
    out_dir: Path,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    stop_after_seconds: float | None = None,
    on_log: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train, validate periodically, keep `last.pt` (resumable) and `best.pt` (model file) in out_dir.

    stop_after: stop (as if interrupted) after this many iterations of this call; used by tests.
    stop_after_seconds: stop this call (checkpointing, as if interrupted) once it has trained this long; a
        run under a wall-clock limit per job (a batch queue, a lent machine) goes on with `resume`. Unlike
        `train.max_minutes` it does not shape the learning-rate schedule.
    """
    dist_info = init_distributed()
    t = config.train
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(t.seed)
    device = resolve_device(t.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True  # TensorFloat-32: fp32 training at tensor-core speed
        torch.backends.cudnn.allow_tf32 = True
    model = build_detector(config.model, load_backbone_weights=t.init_weights is None)
    last_path = out_dir / "last.pt"
    resuming = resume and last_path.exists()
    if not resuming and t.init_weights is not None:  # fine-tuning: a trained model, not ImageNet weights
        payload = read_model_file(Path(t.init_weights))
        source = Config.from_dict(payload["config"]).model
        model.load_state_dict(adapt_state_dict(float_weights(payload), source, model))
    # on its device before the optimizer exists: a resumed optimizer's momentum buffers are moved to their
    # parameters' device as they are loaded
    model.to(device).train()
    net: torch.nn.Module = model
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    budget_s = t.max_minutes * 60.0 if t.max_minutes else None
    clock = {"before": 0.0, "since": time.time()}  # seconds trained by earlier calls; this call's start

    def elapsed() -> float:
        return clock["before"] + time.time() - clock["since"]

    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: lr_factor(it, config.train, elapsed() / budget_s if budget_s else 0.0)
    )
    start, best_key, history = 0, None, []
    if resuming:
        state = torch.load(last_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, best_key, history = state["iteration"], state["best_key"], state["history"]
        clock["before"] = state.get("elapsed_seconds", 0.0)
    if dist_info.world_size > 1:
        ids = [device.index] if device.type == "cuda" else None
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)
    if dist_info.is_main:
        config.save(out_dir / "config.json")
    provenance = {META_KEY: training_fingerprints(train_records, t.init_weights)}  # into best.pt's meta
    dataset = DetectionDataset(
        train_records,
        config.model.preprocess_threshold,
        stain_scale=config.model.stain_scale,
        levels=config.model.brightfield_levels,
        denoise_above=config.model.denoise_above,
    )
    log_file = (out_dir / "log.jsonl").open("a") if dist_info.is_main else None
    end = t.iterations if stop_after is None else min(t.iterations, start + stop_after)
    bar = tqdm(
        range(start, end),
        initial=start,
        total=t.iterations,
        desc="training",
        unit="it",
        disable=not (progress and dist_info.is_main),
        dynamic_ncols=True,
    )
    loader = iteration_loader(
        IterationBatches(dataset, t.iterations, config, dist_info), start, end, t.loader_workers
    )
    window: dict[str, list[float]] = {}
    tic = time.time()
    clock["since"] = tic
    done, out_of_time, interrupted = start, False, False
    for iteration, batch in zip(bar, loader, strict=True):
        torch.manual_seed(t.seed * 1_000_003 + iteration * dist_info.world_size + dist_info.rank)
        images = [b[0].to(device, non_blocking=True) for b in batch]
        targets = [{k: v.to(device, non_blocking=True) for k, v in b[1].items()} for b in batch]
        optimizer.zero_grad(set_to_none=True)
        try:
            losses = accumulated_losses(
                lambda part, images=images, targets=targets: net(images[part], targets[part]),
                len(images),
                t.micro_batches,
                getattr(net, "no_sync", None),
            )
        except FloatingPointError as error:
            raise FloatingPointError(f"at iteration {iteration}: {error}") from error
        optimisation_step(None, optimizer, scheduler, params, t.clip_grad_norm)
        for k, v in losses.items():
            window.setdefault(k, []).append(float(v.detach()))
        done = iteration + 1
        out_of_time = budget_s is not None and elapsed() >= budget_s
        interrupted = stop_after_seconds is not None and time.time() - clock["since"] >= stop_after_seconds
        if dist_info.world_size > 1 and (budget_s is not None or stop_after_seconds is not None):
            flags = torch.tensor([float(out_of_time), float(interrupted)], device=device)
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)  # every process stops at the same iteration
            out_of_time, interrupted = bool(flags[0].item()), bool(flags[1].item())
        stopping = done == end or out_of_time or interrupted
        if done % t.log_every == 0 or stopping:
            entry = {
                "iteration": done,
                "lr": optimizer.param_groups[0]["lr"],
                "seconds_per_it": (time.time() - tic) / len(next(iter(window.values()))),
                **{k: float(np.mean(v)) for k, v in window.items()},
            }
            entry["loss"] = sum(float(np.mean(v)) for v in window.values())
            window, tic = {}, time.time()
            bar.set_postfix(
                {k.replace("loss_", ""): f"{v:.3f}" for k, v in entry.items() if k.startswith("loss")}
            )
            if log_file:
                log_file.write(json.dumps(entry) + "\n")
                log_file.flush()
            if on_log:
                on_log(entry)
        finished = done == t.iterations or out_of_time
        if dist_info.is_main and val_records and (done % t.val_every == 0 or finished):
            subset = val_records[: t.val_max_images] if t.val_max_images else val_records
            metrics, threshold = validate(model, config, subset)
            metrics["iteration"] = done
            history.append(metrics)
            with (out_dir / "metrics.jsonl").open("a") as f:
                f.write(json.dumps(metrics) + "\n")
            key = _selection_key(metrics)
            if best_key is None or key > tuple(best_key):
                best_key = list(key)
                best_config = Config.from_dict({**config.to_dict(), "score_threshold": threshold})
                save_model(
                    out_dir / "best.pt",
                    model,
                    best_config,
                    threshold,
                    meta={"iteration": done, "val": metrics, **provenance},
                )
            at50 = metrics["by_iou"]["0.5"]
            tqdm.write(
                f"[val @ {done}] AP50 {at50['AP']:.2f}  WCR {at50['WCR']:.1f}%  AER {at50['AER']:.2f}%  "
                f"exact count {metrics['count']['exact']:.1f}%  (threshold {threshold:.3f})"
            )
        if dist_info.is_main and (done % t.checkpoint_every == 0 or stopping):
            tmp = last_path.with_suffix(".tmp")
            torch.save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "iteration": done,
                    "best_key": best_key,
                    "history": history,
                    "config": config.to_dict(),
                    "elapsed_seconds": elapsed(),
                },
                tmp,
            )
            tmp.replace(last_path)
        if out_of_time:
            if dist_info.is_main:
                tqdm.write(f"time budget of {t.max_minutes:g} minutes spent after {done} iterations")
            break
        if interrupted:
            if dist_info.is_main:
                tqdm.write(f"this call's {stop_after_seconds:g} s spent at iteration {done} (resumable)")
            break
    bar.close()
    if log_file:
        log_file.close()
    if dist_info.is_main and not (out_dir / "best.pt").exists() and (done == t.iterations or out_of_time):
        meta = {"iteration": done, **provenance}
        save_model(out_dir / "best.pt", model, config, config.score_threshold, meta=meta)
    if dist_info.world_size > 1:
        dist.barrier()
    return {"iteration": done, "history": history, "model": model}
