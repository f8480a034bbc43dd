"""`deepace train` and `deepace predict`."""

from __future__ import annotations

from dataclasses import replace
from enum import Enum
from pathlib import Path

import typer

from deepace.cli.count_cmd import views_option
from deepace.cli.output_paths import ready_file
from deepace.config import PRESETS, Config, ModelConfig, with_overrides


def _read_records(paths: list[Path]):  # noqa: ANN202
    from deepace.data.coco import read_coco

    records = []
    for p in paths:
        records.extend(read_coco(p))
    return records


def _init_path(init: str | None, param_hint: str = "--init") -> Path | None:
    from deepace.inference import DEFAULT_WEIGHTS

    if init is None:
        return None
    path = DEFAULT_WEIGHTS if init == "shipped" else Path(init)
    if not path.exists():
        raise typer.BadParameter(f"no such model file: {path}", param_hint=param_hint)
    return path


def device_option(default: str | None, what: str) -> typer.models.OptionInfo:
    """`--device` (train, predict, export, train-rescorer; deepace.devices)."""
    return typer.Option(
        default, "--device", help=f"{what}: auto (a CUDA GPU if there is one, else the CPU), cpu, cuda[:N]."
    )


def train_command(
    train: list[Path] = typer.Option(..., "--train", help="COCO file(s) to train on (repeat to combine)."),
    val: list[Path] = typer.Option([], "--val", help="COCO file(s) for validation (never trained on)."),
    out: Path = typer.Option(..., "--out", help="Run folder: config, log, metrics, last.pt, best.pt."),
    config_file: Path | None = typer.Option(None, "--config", help="JSON config (see deepace/config.py)."),
    preset: str | None = typer.Option(
        None, "--preset", help=f"One of: {', '.join(PRESETS)} (default: paper, or the --init model's own)."
    ),
    overrides: list[str] = typer.Option([], "--set", help="Override, e.g. --set model.hnas=false."),
    backbone_weights: Path | None = typer.Option(
        None, "--backbone-weights", help="ImageNet weights (.pth, or VGG16 .onnx)."
    ),
    init: str | None = typer.Option(
        None,
        "--init",
        help="Fine-tune: start from this model file or checkpoint, or 'shipped' for the bundled model; "
        "its configuration is used unless --config/--preset is given.",
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/last.pt."),
    stop_after_minutes: float | None = typer.Option(
        None,
        "--stop-after-minutes",
        help="Stop this call after so many minutes of training, keeping OUT/last.pt for --resume (for a "
        "wall-clock limit per job; train.max_minutes, unlike this, sets the whole run's schedule).",
    ),
    device: str | None = device_option(None, "Train on (default: the config's train.device, auto)"),
) -> None:
    """Train DeepACE (SGD, step decay, flips, periodic validation, exact resume)."""
    from deepace.engine import train as run_training
    from deepace.inference import read_model_file

    init_path = _init_path(init)
    init_config = Config.from_dict(read_model_file(init_path)["config"]) if init_path is not None else None
    if config_file is not None:
        config = Config.load(config_file)
    elif resume and (out / "config.json").exists():
        config = Config.load(out / "config.json")  # the interrupted run's settings; --set still applies
    elif preset is None and init_config is not None:
        config = init_config
    elif (preset or "paper") in PRESETS:
        config = PRESETS[preset or "paper"]
    else:
        raise typer.BadParameter(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    if init_config is not None and config.model.backbone_weights is None:
        # The model started from ImageNet weights froze its first stages; a fine-tune under another
        # config keeps them frozen (the path only marks an ImageNet start: with --init it is not read).
        config = replace(
            config, model=replace(config.model, backbone_weights=init_config.model.backbone_weights)
        )
    if backbone_weights is not None:
        overrides = [*overrides, f"model.backbone_weights={backbone_weights}"]
    if init_path is not None:
        overrides = [*overrides, f"train.init_weights={init_path}"]
    if device is not None:
        overrides = [*overrides, f"train.device={device}"]
    config = with_overrides(config, overrides)
    if config.model.rescorer:
        typer.echo(
            "note: this model's learned overlap rescorer was fitted to the detector as it was before this "
            f"training; refit it afterwards: deepace train-rescorer {out}/best.pt --train … --calibrate-on …",
            err=True,
        )
    records = _read_records(train)
    if not records:
        raise typer.BadParameter("no training images in " + ", ".join(map(str, train)), param_hint="--train")
    resuming = resume and (out / "config.json").exists()
    if not resuming and not any(o.startswith("model.typical_chromosome_width=") for o in overrides):
        config = replace(config, model=measured_typical_widths(config.model, records))
    stop_after_seconds = stop_after_minutes * 60.0 if stop_after_minutes is not None else None
    run_training(
        config,
        records,
        _read_records(val) if val else [],
        out,
        resume=resume,
        stop_after_seconds=stop_after_seconds,
    )


def measured_typical_widths(model: ModelConfig, records: list) -> ModelConfig:  # noqa: ANN001
    """`model` with `typical_chromosome_width` measured on the training images (deepace.magnification), so
    that `deepace count` advises --magnification against the size this model is trained at."""
    from deepace.magnification import training_widths

    paths = [r.path for r in records]
    widths = training_widths(
        paths,
        model.stain_scale,
        model.preprocess_threshold,
        levels=model.brightfield_levels,
        denoise_above=model.denoise_above,
    )
    measured = model.with_typical_widths(widths)
    shown = ", ".join(f"{stain} {width:.1f} px" for stain, width in sorted(widths.items())) or "none measured"
    typer.echo(f"typical chromosome width of the training images: {shown}", err=True)
    return measured


def predict_command(
    images: Path = typer.Option(..., "--coco", help="COCO file whose images to run on."),
    out: Path = typer.Option(..., "--out", help="Prediction json (the format `deepace evaluate` reads)."),
    weights: Path | None = typer.Option(None, "--weights", help="Model file (default: the shipped model)."),
    score_threshold: float | None = typer.Option(None, "--score-threshold"),
    device: str = device_option("cpu", "Run on (cpu: as `deepace count` runs)"),
    views: int = views_option(),
) -> None:
    """Run a model over the images of a COCO file and write predictions down to a low score."""
    from deepace.data.predictions import write_predictions
    from deepace.engine import predict_records
    from deepace.inference import Detector

    ready_file(out, "--out")
    detector = Detector.load(weights, optimise=True, device=device)  # on the CPU, what `deepace count` runs
    if score_threshold is not None:
        detector.score_threshold = score_threshold
    write_predictions(predict_records(detector, _read_records([images]), progress=True, views=views), out)
    typer.echo(f"wrote {out}")


def export_command(
    model_file: Path = typer.Argument(..., help="A model file, e.g. RUN/best.pt."),
    out: Path = typer.Option(..., "--out", help="Where to write the exported model."),
    half: bool = typer.Option(True, "--half/--float", help="Store weights as float16 (half the size)."),
    score_threshold: float | None = typer.Option(None, "--score-threshold", help="Override the threshold."),
    calibrate_on: list[Path] = typer.Option(
        [], "--calibrate-on", help="COCO file(s) of validation images: tune one counting threshold per stain."
    ),
    device: str = device_option("auto", "Calibrate on"),
) -> None:
    """Write a model file for shipping (float16 weights by default; loads back as float32)."""
    import torch

    from deepace.inference import Detector, save_model

    ready_file(out, "--out")
    detector = Detector.load(model_file)
    payload = torch.load(model_file, map_location="cpu", weights_only=False)
    meta = payload.get("meta", {"iteration": payload.get("iteration")})
    threshold = detector.score_threshold if score_threshold is None else score_threshold
    stain_thresholds = dict(detector.stain_thresholds)
    if calibrate_on:
        running = detector.optimised_copy(device=device)
        stain_thresholds = calibrate_stain_thresholds(
            running, _read_records(calibrate_on), meta, keep=detector.stain_thresholds
        )
        meta["calibration"] = {"files": [str(p) for p in calibrate_on], "thresholds": stain_thresholds}
        threshold = stain_thresholds.get("brightfield", threshold)
    save_model(
        out,
        detector.model,
        detector.config,
        threshold,
        meta=meta,
        half=half,
        stain_thresholds=stain_thresholds,
    )
    typer.echo(
        f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, threshold {threshold:.3f}, "
        f"per stain {stain_thresholds or '-'})"
    )


def calibrate_stain_thresholds(  # noqa: ANN201
    detector,  # noqa: ANN001
    records,  # noqa: ANN001
    model_meta: dict | None = None,
    keep: dict[str, float] | None = None,
):
    """Per stain, the counting threshold with the best exact-count accuracy on these images; given the
    model file's meta, first a warning if some of them trained it (deepace.provenance). `keep`: thresholds
    that stand for the stains these images do not show (the same model's earlier calibration); a stain
    left with none is named, since its images will be counted at the model's single threshold."""
    if not records:
        raise typer.BadParameter("no images to calibrate on", param_hint="--calibrate-on")
    from deepace.engine import predict_records_with_stains
    from deepace.inference import Detector
    from deepace.metrics import expected_counts
    from deepace.metrics.threshold import COUNT_LEAN_WARNING, count_bias, tune_score_threshold
    from deepace.provenance import calibration_warning

    warning = calibration_warning(model_meta, [r.path for r in records])
    if warning:
        typer.echo(warning, err=True)

    expected = expected_counts(records)
    predictions = predict_records_with_stains(detector, records, True)
    stains = sorted({stain for _pred, stain in predictions})

    def read_as(stain: str) -> list[int]:
        return [i for i, (_pred, found) in enumerate(predictions) if found == stain]

    def tuned(stain: str) -> tuple[float, float, list, list]:
        scores = [predictions[i][0].scores for i in read_as(stain)]
        counts = [expected[i] for i in read_as(stain)]
        return (*tune_score_threshold(scores, counts), scores, counts)

    thresholds = {stain: tuned(stain)[0] for stain in stains}
    faint_pass = detector.config.model.faint_fluorescence_level is not None
    if faint_pass and "fluorescence" in thresholds:
        # Which fluorescence images get the faint second pass (deepace/faint.py) depends on the boxes
        # counted at the stain's threshold: predict them again at the tuned one and tune again, until the
        # threshold stays (three rounds at most).
        chosen = read_as("fluorescence")
        used = detector.threshold_for("fluorescence")
        for _round in range(3):
            if thresholds["fluorescence"] == used:
                break
            used = thresholds["fluorescence"]
            at_tuned = Detector(
                detector.model, detector.config, detector.score_threshold, stain_thresholds=thresholds
            )
            again = predict_records_with_stains(at_tuned, [records[i] for i in chosen], True)
            for i, prediction in zip(chosen, again, strict=True):
                predictions[i] = prediction
            thresholds["fluorescence"] = tuned("fluorescence")[0]
    for stain in stains:
        thresholds[stain], exact, scores, counts = tuned(stain)
        bias = count_bias(scores, counts, thresholds[stain])
        typer.echo(
            f"{stain}: {len(scores)} images, threshold {thresholds[stain]:.3f}, exact count {exact:.1f}%, "
            f"bias {bias:+.2f} a cell"
        )
        if abs(bias) >= COUNT_LEAN_WARNING:
            typer.echo(
                f"  {stain} counts lean {'high' if bias > 0 else 'low'}: the case report reads unreviewed "
                f"counts by their median, which a lean moves; check cases with benchmarks/case_level.py "
                f"(MODEL_CARD.md, 'Known weaknesses')"
            )
    kept = {stain: t for stain, t in (keep or {}).items() if stain not in thresholds}
    for stain in ("brightfield", "fluorescence"):
        if stain in kept:
            typer.echo(f"{stain}: no such images to calibrate on; its threshold {kept[stain]:.3f} is kept")
        elif stain not in thresholds:
            typer.echo(
                f"note: no {stain} images to calibrate on: {stain} images will be counted at the model's "
                f"single threshold {detector.score_threshold:.3f}, uncalibrated",
                err=True,
            )
    return {**kept, **thresholds}


class Flips(str, Enum):
    """`deepace.rescoring.FLIP_VIEWS`' names (kept here so the CLI starts without importing torch)."""

    none = "none"
    horizontal = "horizontal"
    all = "all"


class RescorerKind(str, Enum):
    """`model.rescorer_kind`'s values."""

    greedy = "greedy"
    set = "set"


def train_rescorer_command(
    model_file: Path = typer.Argument(..., help="A trained model file or checkpoint, or 'shipped'."),
    train: list[Path] = typer.Option(..., "--train", help="COCO file(s) of training images (repeatable)."),
    out: Path = typer.Option(..., "--out", help="Where to write the model with its rescorer."),
    flips: Flips = typer.Option(
        "none", "--flips", help="Also each mirror image (horizontal: 2x time) or every flip (all: 4x)."
    ),
    kind: RescorerKind = typer.Option(
        "greedy", "--kind", help="greedy: decide in falling score; set: decide all candidates at once."
    ),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Default: 30 greedy, 8 set."),
    overrides: list[str] = typer.Option(
        [], "--set", help="Inference settings, e.g. --set model.rpn_post_nms_top_n_test=400."
    ),
    calibrate_on: list[Path] = typer.Option(
        [], "--calibrate-on", help="COCO file(s) of validation images: tune one counting threshold per stain."
    ),
    cache: Path | None = typer.Option(
        None,
        "--cache",
        help="Save the labelled candidates here, or reuse them if the file exists (as they are: delete it "
        "when the model, the training files or --set change).",
    ),
    half: bool = typer.Option(True, "--half/--float", help="Store weights as float16."),
    device: str = device_option("auto", "Run the detector on"),
) -> None:
    """Learn which overlapping detections are separate chromosomes (learned overlap rescoring, replacing the
    heads' NMS + Soft-NMS at inference); the detector itself is not changed."""
    import torch

    from deepace.inference import Detector, read_model_file, save_model
    from deepace.provenance import META_KEY, fingerprints
    from deepace.rescoring import collect_candidates, detector_with_rescorer, fit_any_rescorer

    base = Detector.load(_init_path(model_file.as_posix()))
    detector = detector_with_rescorer(base, [f"model.rescorer_kind={kind.value}", *overrides])
    train_records = _read_records(train)
    if cache is not None and cache.exists():
        samples = torch.load(cache, weights_only=False)
    else:
        samples = collect_candidates(
            detector.optimised_copy(device=device),
            train_records,
            flips=flips.value,
            counting=base.optimised_copy(device=device),
        )
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            torch.save(samples, cache)
    result = fit_any_rescorer(detector.model.roi_heads.rescorer, samples, epochs=epochs)
    typer.echo(
        f"rescorer: {result['samples']:.0f} candidates ({100 * result['positives']:.1f}% chromosomes), "
        f"training loss {result['loss']:.4f}, accuracy {100 * result['accuracy']:.2f}%"
    )
    stain_thresholds: dict[str, float] = {}
    meta = {
        "base_model": str(model_file),
        "base_meta": read_model_file(_init_path(model_file.as_posix())).get("meta", {}),  # its provenance
        "rescorer": {**result, "train": [str(p) for p in train]},
        META_KEY: fingerprints(r.path for r in train_records),
    }
    if calibrate_on:
        running = detector.optimised_copy(device=device)
        stain_thresholds = calibrate_stain_thresholds(running, _read_records(calibrate_on), meta)
        meta["calibration"] = {"files": [str(p) for p in calibrate_on], "thresholds": stain_thresholds}
    else:
        typer.echo(f"no --calibrate-on: counting threshold {detector.score_threshold} (uncalibrated)")
    threshold = stain_thresholds.get("brightfield", detector.score_threshold)
    save_model(out, detector.model, detector.config, threshold, meta, half, stain_thresholds)
    typer.echo(f"wrote {out} (threshold {threshold:.3f}, per stain {stain_thresholds or '-'})")


def register(app: typer.Typer) -> None:
    app.command("train-rescorer")(train_rescorer_command)
    app.command("export")(export_command)
    app.command("train")(train_command)
    app.command("predict")(predict_command)
