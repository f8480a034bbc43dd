"""`deepace train-heads`: adapt a trained model to a lab's own annotated images in minutes on a CPU, by
fine-tuning its head stages alone on features computed once (deepace.head_finetune)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import typer

from deepace.cli.train_cmds import _init_path, _read_records, calibrate_stain_thresholds


def train_heads_command(
    model_file: str = typer.Argument(..., help="A trained model file, or 'shipped' for the bundled model."),
    train: list[Path] = typer.Option(
        ..., "--train", help="COCO file(s) of annotated images; one given N times is drawn N times as often."
    ),
    out: Path = typer.Option(..., "--out", help="Where to write the fine-tuned model file."),
    work_dir: Path = typer.Option(
        ...,
        "--work-dir",
        help="Feature cache, checkpoint and loss log. Run again with the same folder to resume; delete it "
        "when the model, the images or --views change.",
    ),
    iterations: int = typer.Option(2000, "--iterations", min=1, help="One cached image view per iteration."),
    lr: float = typer.Option(0.001, "--lr", help="Peak learning rate (÷10 at 50% and 85%)."),
    warmup: int = typer.Option(100, "--warmup", min=0, help="Linear warm-up iterations."),
    views: int = typer.Option(2, "--views", min=1, max=4, help="Cached views per image: 1 + flips."),
    seed: int = typer.Option(0, "--seed"),
    overrides: list[str] = typer.Option(
        [],
        "--set",
        help="The heads' losses, e.g. --set model.repulsion_all_stages=true, or their first layers' rank "
        "(model.fc6_rank=256: a file half the size).",
    ),
    calibrate_on: list[Path] = typer.Option(
        [], "--calibrate-on", help="COCO file(s) of validation images: tune one counting threshold per stain."
    ),
    rescorer_epochs: int | None = typer.Option(None, "--rescorer-epochs", min=1),
    half: bool = typer.Option(True, "--half/--float", help="Store weights as float16."),
) -> None:
    """Fine-tune the head stages of a trained model on your annotated images, its backbone and region
    proposals frozen (computed once and cached, ~8x the iterations per CPU-second of `deepace train`);
    then refit its overlap rescorer on the new heads' candidates and, with --calibrate-on, its counting
    thresholds."""
    from deepace.data.coco import read_coco
    from deepace.head_finetune import (
        HeadSchedule,
        cache_views,
        cached_candidates,
        train_heads,
        training_pool,
    )
    from deepace.inference import Detector, network_from_payload, read_model_file, save_model
    from deepace.models.rescorer import ACCEPT_PROBABILITY
    from deepace.provenance import META_KEY, fingerprints
    from deepace.rescoring import fit_any_rescorer

    base = _init_path(model_file, param_hint="MODEL_FILE")
    assert base is not None
    settings = {
        "model_sha256": file_sha256(base),
        "train": [str(p) for p in train],
        "iterations": iterations,
        "lr": lr,
        "warmup": warmup,
        "views": views,
        "seed": seed,
        "set": overrides,
    }
    claim_work_dir(work_dir, settings)
    payload = read_model_file(base)
    model, config = network_from_payload(payload, overrides)
    runner = Detector(model, config).optimised_copy().model  # backbone and RPN as `deepace count` runs them
    sources = {path: read_coco(path) for path in dict.fromkeys(train)}
    folder = work_dir / "features"
    index = cache_views(runner, config, sources, views, folder)
    del runner
    pool = training_pool(index, {str(path): n for path, n in Counter(train).items()})
    schedule = HeadSchedule(iterations=iterations, lr=lr, warmup_iterations=warmup, seed=seed)
    train_heads(model, folder, pool, schedule, work_dir)
    meta: dict = {
        "base_model": str(base),
        "base_meta": payload.get("meta", {}),
        "train_heads": settings,
        META_KEY: fingerprints(r.path for records in sources.values() for r in records),
    }
    threshold = float(payload.get("score_threshold", config.score_threshold))
    if config.model.rescorer:
        samples = cached_candidates(model, folder, index)
        result = fit_any_rescorer(model.roi_heads.rescorer, samples, epochs=rescorer_epochs)
        meta["rescorer"] = {**result, "train": settings["train"]}
        threshold = ACCEPT_PROBABILITY
        typer.echo(
            f"rescorer refitted: {result['samples']:.0f} candidates, accuracy {100 * result['accuracy']:.2f}%"
        )
    stain_thresholds: dict[str, float] = {}
    if calibrate_on:
        running = Detector(model, config).optimised_copy()
        stain_thresholds = calibrate_stain_thresholds(running, _read_records(calibrate_on), meta)
        meta["calibration"] = {"files": [str(p) for p in calibrate_on], "thresholds": stain_thresholds}
        threshold = stain_thresholds.get("brightfield", threshold)
    else:
        typer.echo(f"no --calibrate-on: counting threshold {threshold} (uncalibrated for the new heads)")
    save_model(out, model, config, threshold, meta, half, stain_thresholds)
    typer.echo(f"wrote {out} (threshold {threshold:.3f}, per stain {stain_thresholds or '-'})")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def claim_work_dir(work_dir: Path, settings: dict) -> None:
    """Record the run's settings in `work_dir/run.json`; a folder holding another run's cache or checkpoint
    (another model, images or schedule) is refused rather than silently mixed in."""
    record = work_dir / "run.json"
    if record.exists():
        before = json.loads(record.read_text())
        changed = sorted(k for k in settings.keys() | before.keys() if settings.get(k) != before.get(k))
        if changed:
            raise typer.BadParameter(
                f"{work_dir} holds a run with other {', '.join(changed)}: use another folder or delete it",
                param_hint="--work-dir",
            )
        typer.echo(f"resuming the run in {work_dir}")
        return
    work_dir.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(settings, indent=1))


def register(app: typer.Typer) -> None:
    app.command("train-heads")(train_heads_command)
