"""Training and prediction follow the chosen device (deepace/devices.py)."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from deepace.devices import model_device, resolve_device
from deepace.engine import train
from deepace.inference import Detector
from tests.helpers_detection import tiny_config, write_blob_records


@pytest.fixture
def gpus(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """Pretend this machine has n CUDA GPUs (resolve_device only asks torch.cuda how many)."""

    def have(n: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)

    return have


def test_auto_takes_a_gpu_when_there_is_one_else_the_cpu(gpus, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    gpus(0)
    assert resolve_device("auto") == torch.device("cpu")
    gpus(2)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert resolve_device("auto") == torch.device("cuda", 0)
    monkeypatch.setenv("LOCAL_RANK", "1")  # torchrun's second process on this machine
    assert resolve_device("auto") == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)


@pytest.mark.parametrize(
    ("n_gpus", "name", "message"),
    [(0, "cuda", "no CUDA GPU"), (2, "cuda:2", "only 2"), (1, "mps", "'cpu' or 'cuda'")],
)
def test_a_device_this_machine_lacks_is_an_error(gpus, n_gpus: int, name: str, message: str) -> None:  # noqa: ANN001
    gpus(n_gpus)
    with pytest.raises(ValueError, match=message):
        resolve_device(name)


def test_a_run_asked_for_a_gpu_stops_at_once_without_one(gpus, tmp_path: Path) -> None:  # noqa: ANN001
    gpus(0)
    config = tiny_config(iterations=2)
    config = replace(config, train=replace(config.train, device="cuda"))
    with pytest.raises(ValueError, match="no CUDA GPU"):
        train(config, [], [], tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_model_device_is_where_the_weights_are() -> None:
    assert model_device(torch.nn.Linear(2, 2)) == torch.device("cpu")
    assert model_device(torch.nn.ReLU()) == torch.device("cpu")
    assert model_device(lambda images: images) == torch.device("cpu")  # a stand-in for a model


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_on_a_gpu_resumes_there_and_its_model_counts_on_a_cpu(tmp_path: Path) -> None:
    records = write_blob_records(tmp_path / "imgs", 4)
    config = tiny_config(iterations=6)
    config = replace(config, train=replace(config.train, device="cuda", checkpoint_every=3, val_every=6))
    train(config, records, records[:2], tmp_path / "run", progress=False, stop_after=3)
    model = train(config, records, records[:2], tmp_path / "run", progress=False, resume=True)["model"]
    assert model_device(model).type == "cuda"
    on_gpu = Detector(model, config).predict_gray(_gray(records[0].path))
    on_cpu = Detector.load(tmp_path / "run" / "best.pt").predict_gray(_gray(records[0].path))
    assert len(on_gpu[0]) > 0 and len(on_cpu[0]) > 0
    # the same best box either way (GPU kernels round differently, so boxes near the score floor may differ)
    best_gpu, best_cpu = torch.from_numpy(on_gpu[0][0]), torch.from_numpy(on_cpu[0][0])
    torch.testing.assert_close(best_gpu, best_cpu, atol=1.0, rtol=0)


def _gray(path: Path):  # noqa: ANN202
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(path).convert("L"))


def test_the_train_command_records_the_device_it_was_given(gpus, tmp_path: Path) -> None:  # noqa: ANN001
    from typer.testing import CliRunner

    from deepace.cli import app
    from deepace.config import Config
    from deepace.data.coco import write_coco
    from deepace.inference import save_model
    from deepace.models.detector import build_detector

    records = write_blob_records(tmp_path / "imgs", 2, size=96)
    write_coco(records, tmp_path / "train.json")
    config = tiny_config(iterations=1)
    save_model(tmp_path / "model.pt", build_detector(config.model), config, 0.5)
    args = ["train", "--train", str(tmp_path / "train.json"), "--init", str(tmp_path / "model.pt")]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "run"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert Config.load(tmp_path / "run" / "config.json").train.device == "cpu"
    gpus(0)
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "gpu"), "--device", "cuda"])
    assert result.exit_code != 0 and "no CUDA GPU" in str(result.exception)
