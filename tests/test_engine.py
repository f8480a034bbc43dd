"""The training engine: it learns, it logs, it resumes exactly."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from deepace.config import Config
from deepace.engine import DistInfo, lr_factor, samples_for_iteration, train, validate
from deepace.inference import Detector
from deepace.models.detector import build_detector
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


def test_learning_rate_schedule_steps_at_40_and_80_percent() -> None:
    config = tiny_config(iterations=100)
    config = replace(config, train=replace(config.train, warmup_iterations=0))
    assert [lr_factor(i, config) for i in (0, 39, 40, 79, 80, 99)] == [1, 1, 0.1, 0.1, 0.1**2, 0.1**2]


def test_sampling_is_deterministic_and_splits_across_processes() -> None:
    config = tiny_config()
    seen = [samples_for_iteration(i, 10, config, DistInfo())[0] for i in range(10)]
    assert sorted(s[0] for s in seen) == list(range(10))  # one epoch visits each image once
    assert seen == [samples_for_iteration(i, 10, config, DistInfo())[0] for i in range(10)]
    two = [samples_for_iteration(0, 10, config, DistInfo(rank, 2))[0][0] for rank in (0, 1)]
    assert two == [seen[0][0], seen[1][0]]  # rank r at iteration i takes global sample 2i + r
