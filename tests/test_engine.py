"""The training engine: it learns, it logs, it resumes exactly."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from deepace.config import Config
from deepace.engine import (
    DistInfo,
    accumulated_losses,
    lr_factor,
    samples_for_iteration,
    train,
    validate,
)
from deepace.inference import Detector, read_model_file, save_model
from deepace.models.detector import build_detector
from deepace.provenance import META_KEY, fingerprints
from tests.helpers_detection import tiny_config, write_blob_records


def _ap50(model: torch.nn.Module, config: Config, records: list) -> float:
    """AP at IoU 0.5 over all detections: recall weighted by precision, independent of the threshold."""
    metrics, _ = validate(model, config, records)
    return metrics["by_iou"]["0.5"]["AP"]


def test_tiny_training_lowers_loss_and_raises_ap(tmp_path: Path) -> None:
    records = write_blob_records(tmp_path / "imgs", 6, size=128)
    config = tiny_config(iterations=100)
    torch.manual_seed(0)
    before = _ap50(build_detector(config.model), config, records)
    result = train(config, records, records[:3], tmp_path / "run", progress=False)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < 0.7 * log[0]["loss"]
    after = _ap50(result["model"], config, records)
    assert after > before + 25, (before, after)
    # the run folder is complete and its model loads for counting
    assert {"config.json", "log.jsonl", "metrics.jsonl", "last.pt", "best.pt"} <= {
        p.name for p in (tmp_path / "run").iterdir()
    }
    meta = read_model_file(tmp_path / "run" / "best.pt")["meta"]
    assert meta[META_KEY] == fingerprints(r.path for r in records)  # its training images (provenance)
    detector = Detector.load(tmp_path / "run" / "best.pt")
    boxes, scores = detector.predict_gray(np.asarray(__import__("PIL.Image").Image.open(records[0].path)))
    assert len(boxes) == len(scores)


def test_interrupted_and_resumed_run_matches_uninterrupted(tmp_path: Path) -> None:
    records = write_blob_records(tmp_path / "imgs", 4)
    config = tiny_config(iterations=12)
    config = replace(config, train=replace(config.train, checkpoint_every=5))
    straight = train(config, records, [], tmp_path / "straight", progress=False)["model"]
    train(config, records, [], tmp_path / "resumed", progress=False, stop_after=5)
    resumed = train(config, records, [], tmp_path / "resumed", progress=False, resume=True)["model"]
    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_a_per_call_time_limit_checkpoints_and_the_run_resumes_under_its_own_budget(tmp_path: Path) -> None:
    records = write_blob_records(tmp_path / "imgs", 4)
    config = tiny_config(iterations=6)
    config = replace(config, train=replace(config.train, checkpoint_every=500))
    first = train(config, records, [], tmp_path / "run", progress=False, stop_after_seconds=1e-6)
    assert first["iteration"] == 1  # stopped after its first iteration, between checkpoints
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert state["iteration"] == 1 and state["elapsed_seconds"] > 0
    assert not (tmp_path / "run" / "best.pt").exists()  # an interrupted run is not a finished model
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [entry["iteration"] for entry in log] == [1]  # its last losses are logged, not lost
    rest = train(config, records, [], tmp_path / "run", progress=False, resume=True)
    assert rest["iteration"] == 6 and (tmp_path / "run" / "best.pt").exists()


def test_learning_rate_schedule_steps_at_40_and_80_percent() -> None:
    config = tiny_config(iterations=100)
    config = replace(config, train=replace(config.train, warmup_iterations=0))
    assert [lr_factor(i, config.train) for i in (0, 39, 40, 79, 80, 99)] == [1, 1, 0.1, 0.1, 0.1**2, 0.1**2]


def test_learning_rate_steps_fall_at_fractions_of_a_time_budget() -> None:
    config = tiny_config(iterations=100)
    t = replace(config.train, warmup_iterations=0)
    # 10 of 100 iterations done, but 40% (then 80%) of the time spent: the steps fall on time
    assert [lr_factor(10, t, f) for f in (0.0, 0.39, 0.4, 0.79, 0.8, 1.0)] == [1, 1, 0.1, 0.1, 0.1**2, 0.1**2]
    assert lr_factor(80, t, 0.1) == 0.1**2  # and on iterations, whichever comes first


def test_a_time_budget_stops_the_run_and_keeps_a_resumable_model(tmp_path: Path) -> None:
    records = write_blob_records(tmp_path / "imgs", 4)
    config = tiny_config(iterations=1000)
    config = replace(config, train=replace(config.train, max_minutes=1e-6, checkpoint_every=500))
    result = train(config, records, records[:2], tmp_path / "run", progress=False)
    assert result["iteration"] == 1  # the budget was spent by the first iteration
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert state["iteration"] == 1 and state["elapsed_seconds"] > 0
    assert len(result["history"]) == 1  # validated once, at the stop
    assert read_model_file(tmp_path / "run" / "best.pt")["meta"]["iteration"] == 1
    # resumed with the budget already spent, it trains no further
    again = train(config, records, [], tmp_path / "run", progress=False, resume=True)
    assert again["iteration"] == 2  # the one iteration in flight when the clock is read again


def test_loader_workers_feed_the_same_batches(tmp_path: Path) -> None:
    records = write_blob_records(tmp_path / "imgs", 4)
    config = tiny_config(iterations=4)
    inline = train(config, records, [], tmp_path / "inline", progress=False)["model"].state_dict()
    workers = replace(config, train=replace(config.train, loader_workers=2))
    fed = train(workers, records, [], tmp_path / "fed", progress=False)["model"].state_dict()
    for key, value in inline.items():
        assert torch.equal(fed[key], value), key


def test_accumulated_parts_give_the_whole_batchs_gradient() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    x, y = torch.randn(8, 3), torch.randn(8, 2)

    def losses(part: slice) -> dict[str, torch.Tensor]:  # each term a mean over its part, as a detector's
        error = model(x[part]) - y[part]
        return {"squared": (error**2).mean(), "absolute": error.abs().mean()}

    whole = losses(slice(0, 8))
    sum(whole.values()).backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    parts: list[slice] = []
    terms = accumulated_losses(lambda part: parts.append(part) or losses(part), 8, 4)
    assert parts == [slice(0, 2), slice(2, 4), slice(4, 6), slice(6, 8)]
    for p, e in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, e)
    assert terms.keys() == whole.keys()
    for key, value in terms.items():
        torch.testing.assert_close(value, whole[key].detach())
    # more parts than images: one image a part; a part's loss that is not finite stops the step
    model.zero_grad()
    assert accumulated_losses(lambda part: parts.append(part) or losses(part), 2, 8)
    assert parts[-2:] == [slice(0, 1), slice(1, 2)]
    with pytest.raises(FloatingPointError):
        accumulated_losses(lambda part: {"nan": torch.tensor(float("nan"), requires_grad=True)}, 2, 2)
    with pytest.raises(ValueError, match="micro_batches"):
        accumulated_losses(losses, 8, 0)


def test_a_batch_in_micro_batches_trains_one_image_at_a_time(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    records = write_blob_records(tmp_path / "imgs", 4)
    config = tiny_config(iterations=3)
    config = replace(config, train=replace(config.train, batch_size=2, micro_batches=2))
    model = build_detector(config.model)
    seen: list[int] = []
    model.register_forward_pre_hook(lambda _module, args: seen.append(len(args[0])))
    monkeypatch.setattr("deepace.engine.build_detector", lambda *args, **kwargs: model)
    result = train(config, records, [], tmp_path / "run", progress=False)
    assert result["iteration"] == 3
    assert seen == [1] * 6  # two parts of one image per iteration
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(entry["loss"]) for entry in log)


def test_sampling_is_deterministic_and_splits_across_processes() -> None:
    config = tiny_config()
    seen = [samples_for_iteration(i, 10, config, DistInfo())[0] for i in range(10)]
    assert sorted(s[0] for s in seen) == list(range(10))  # one epoch visits each image once
    assert seen == [samples_for_iteration(i, 10, config, DistInfo())[0] for i in range(10)]
    two = [samples_for_iteration(0, 10, config, DistInfo(rank, 2))[0][0] for rank in (0, 1)]
    assert two == [seen[0][0], seen[1][0]]  # rank r at iteration i takes global sample 2i + r


def test_fine_tuning_starts_from_the_given_model(tmp_path: Path) -> None:
    records = write_blob_records(tmp_path / "imgs", 6, size=128)
    config = tiny_config(iterations=60)
    source = train(config, records, [], tmp_path / "source", progress=False)["model"]
    save_model(tmp_path / "model.pt", source, config, 0.5, half=True)
    # lr 0: the weights after one step are the starting weights (a float16 model file, read back exactly)
    frozen = replace(
        config, train=replace(config.train, iterations=1, lr=0.0, init_weights=str(tmp_path / "model.pt"))
    )
    tuned = train(frozen, records, [], tmp_path / "frozen", progress=False)["model"].state_dict()
    for key, value in source.state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(tuned[key], value.half().float()), key
    # a trained start (checkpoint) begins at a far lower loss than ImageNet/random initialisation
    short = replace(config.train, iterations=3, log_every=3)
    train(replace(config, train=short), records, [], tmp_path / "scratch", progress=False)
    init = replace(short, init_weights=str(tmp_path / "source" / "last.pt"))
    train(replace(config, train=init), records, [], tmp_path / "tuned", progress=False)
    first = {
        name: json.loads((tmp_path / name / "log.jsonl").read_text().splitlines()[0])["loss"]
        for name in ("scratch", "tuned")
    }
    assert first["tuned"] < 0.7 * first["scratch"], first
    assert json.loads((tmp_path / "tuned" / "config.json").read_text())["train"]["init_weights"].endswith(
        "last.pt"
    )


def test_fine_tuning_can_add_the_stride_4_pyramid_level(tmp_path: Path) -> None:
    records = write_blob_records(tmp_path / "imgs", 2, size=128)
    config = tiny_config(iterations=1, fpn=True)
    source = train(config, records, [], tmp_path / "source", progress=False)["model"]
    finer = replace(
        config,
        model=replace(config.model, fpn_finest_stride=4),
        train=replace(config.train, lr=0.0, init_weights=str(tmp_path / "source" / "last.pt")),
    )
    tuned = train(finer, records, [], tmp_path / "finer", progress=False)["model"]
    # lr 0: every trained weight arrives, the pyramid's under its new index
    tuned_state, source_state = tuned.state_dict(), source.state_dict()
    for key, value in source_state.items():
        moved = (
            key.replace("blocks.1.", "blocks.2.").replace("blocks.0.", "blocks.1.") if ".fpn." in key else key
        )
        assert torch.equal(tuned_state[moved], value), key


def test_train_cli_fine_tunes_a_model_with_its_own_configuration(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from deepace.cli import app
    from deepace.data.coco import write_coco

    records = write_blob_records(tmp_path / "imgs", 3, size=128)
    write_coco(records, tmp_path / "train.json")
    config = tiny_config(iterations=2)
    save_model(tmp_path / "model.pt", build_detector(config.model), config, 0.5)
    args = ["train", "--train", str(tmp_path / "train.json"), "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(
        app, [*args, "--init", str(tmp_path / "model.pt"), "--set", "train.iterations=1"]
    )
    assert result.exit_code == 0, result.output
    used = Config.load(tmp_path / "run" / "config.json")
    assert used.model.backbone == "resnet18" and used.train.iterations == 1  # the model's config, then --set
    assert used.train.init_weights == str(tmp_path / "model.pt")
    missing = CliRunner().invoke(app, [*args, "--init", str(tmp_path / "nothing.pt")])
    assert missing.exit_code == 2 and "no such" in missing.output  # a usage error, before any training


def test_train_cli_fine_tune_under_another_config_keeps_the_models_frozen_stages(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from deepace.cli import app
    from deepace.data.coco import write_coco

    records = write_blob_records(tmp_path / "imgs", 2, size=128)
    write_coco(records, tmp_path / "train.json")
    imagenet_start = tiny_config(backbone_weights="/elsewhere/imagenet.pth")  # marks the start; never read
    save_model(
        tmp_path / "model.pt",
        build_detector(imagenet_start.model, load_backbone_weights=False),
        imagenet_start,
        0.5,
    )
    tiny_config(iterations=1).save(tmp_path / "other.json")  # like a preset: no backbone_weights
    args = ["train", "--train", str(tmp_path / "train.json"), "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(
        app, [*args, "--init", str(tmp_path / "model.pt"), "--config", str(tmp_path / "other.json")]
    )
    assert result.exit_code == 0, result.output
    assert Config.load(tmp_path / "run" / "config.json").model.backbone_weights == "/elsewhere/imagenet.pth"
