"""The backbone in ONNX Runtime (deepace/models/onnx_backbone.py): same feature maps as torch at any image
size, exported once and then read from the cache, torch whenever ONNX Runtime cannot run it."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.ops.misc import FrozenBatchNorm2d

from deepace.inference import Detector, save_model
from deepace.models import onnx_backbone as ob
from deepace.models.detector import build_detector
from deepace.models.fuse import fold_frozen_batchnorm
from tests.helpers_detection import blob_image, tiny_config


def trained_like_detector() -> torch.nn.Module:
    """A tiny MobileNetV2 detector with non-trivial batch-norm statistics, in eval mode."""
    torch.manual_seed(0)
    model = build_detector(tiny_config(backbone="mobilenet_v2").model).eval()
    for m in model.modules():
        if isinstance(m, FrozenBatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.8, 1.2)
    return model


def test_onnx_backbone_gives_the_torch_feature_maps_at_any_size(tmp_path: Path) -> None:
    backbone = trained_like_detector().backbone
    fold_frozen_batchnorm(backbone)
    onnx = ob.onnx_backbone(backbone, threads=1, cache=tmp_path)
    assert onnx.out_channels == backbone.out_channels
    for size in ((96, 128), (160, 96)):  # the export saw 224×224: the sizes must stay free
        x = torch.rand(1, 3, *size)
        with torch.no_grad():
            expected = backbone(x)
        got = onnx(x)
        assert list(got) == list(expected)
        for name in expected:
            assert got[name].shape == expected[name].shape
            torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-4)


def test_idle_threads_do_not_spin_unless_asked(tmp_path: Path) -> None:
    backbone = trained_like_detector().backbone
    quiet = ob.onnx_backbone(backbone, threads=2, cache=tmp_path)
    spinning = ob.OnnxBackbone(quiet.source, quiet.names, quiet.out_channels, threads=2, spin=True)
    setting = "session.intra_op.allow_spinning"
    assert quiet.session.get_session_options().get_session_config_entry(setting) == "0"
    assert spinning.session.get_session_options().get_session_config_entry(setting) == "1"
    x = torch.rand(1, 3, 96, 128)
    for name, maps in quiet(x).items():
        torch.testing.assert_close(spinning(x)[name], maps)


def test_the_export_is_cached_per_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backbone = trained_like_detector().backbone
    first = ob.onnx_backbone(backbone, threads=1, cache=tmp_path)
    files = list(tmp_path.glob("backbone-*.onnx"))
    assert len(files) == 1

    def no_export(*args: object) -> bytes:
        raise AssertionError("exported again although the cache holds this backbone")

    with monkeypatch.context() as patch:
        patch.setattr(ob, "_export", no_export)
        again = ob.onnx_backbone(backbone, threads=1, cache=tmp_path)
    x = torch.rand(1, 3, 64, 96)
    for name, value in first(x).items():
        torch.testing.assert_close(again(x)[name], value, rtol=0, atol=0)

    with torch.no_grad():  # other weights: another file, not the first model's features
        next(backbone.parameters()).mul_(2)
    ob.onnx_backbone(backbone, threads=1, cache=tmp_path)
    assert len(list(tmp_path.glob("backbone-*.onnx"))) == 2

    files[0].write_bytes(b"not an onnx model")  # a damaged file is exported again
    with torch.no_grad():
        next(backbone.parameters()).div_(2)
    repaired = ob.onnx_backbone(backbone, threads=1, cache=tmp_path)
    torch.testing.assert_close(repaired(x)["0"], first(x)["0"], rtol=0, atol=0)


def test_the_cache_keeps_the_newest_exports(tmp_path: Path) -> None:
    import os

    for i in range(ob.KEEP_CACHED + 2):
        old = tmp_path / f"backbone-old{i}.onnx"
        old.write_bytes(b"")
        os.utime(old, (1_000_000 + i, 1_000_000 + i))
    ob.onnx_backbone(trained_like_detector().backbone, threads=1, cache=tmp_path)
    kept = {f.name for f in tmp_path.glob("backbone-*.onnx")}
    assert len(kept) == ob.KEEP_CACHED
    assert "backbone-old0.onnx" not in kept and f"backbone-old{ob.KEEP_CACHED + 1}.onnx" in kept


def test_an_unwritable_cache_still_runs(tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    backbone = trained_like_detector().backbone
    onnx = ob.onnx_backbone(backbone, threads=1, cache=blocked / "cache")
    with torch.no_grad():
        expected = backbone(torch.ones(1, 3, 64, 64))
    got = onnx(torch.ones(1, 3, 64, 64))
    assert list(got) == list(expected)
    assert not (blocked / "cache").exists()


def test_runtime_choice_and_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:  # noqa: ANN001
    model = trained_like_detector()
    torch_backbone = model.backbone
    assert not ob.use_onnx_backbone(model, "torch", cache=tmp_path)
    assert model.backbone is torch_backbone
    with pytest.raises(ValueError, match="unknown runtime"):
        ob.use_onnx_backbone(model, "tensorrt", cache=tmp_path)

    def unavailable(*args: object, **kwargs: object) -> None:
        raise ImportError("No module named 'onnxruntime'")

    with monkeypatch.context() as patch:
        patch.setattr(ob, "onnx_backbone", unavailable)
        with caplog.at_level(logging.WARNING):
            assert not ob.use_onnx_backbone(model, "auto", cache=tmp_path)
        assert "running the backbone in torch" in caplog.text
        assert model.backbone is torch_backbone
        with pytest.raises(ImportError):
            ob.use_onnx_backbone(model, "onnx", cache=tmp_path)

    assert ob.use_onnx_backbone(model, "auto", cache=tmp_path)
    assert isinstance(model.backbone, ob.OnnxBackbone)
    model.train()
    with pytest.raises(RuntimeError, match="only runs inference"):
        model.backbone(torch.rand(1, 3, 64, 64))


def test_detector_with_onnx_backbone_finds_the_same_boxes(tmp_path: Path) -> None:
    """What `deepace count` runs by default: the optimised detector, backbone in ONNX Runtime."""
    model = trained_like_detector()
    config = tiny_config(backbone="mobilenet_v2")
    path = tmp_path / "m.pt"
    save_model(path, model, config, score_threshold=0.3)
    img, _ = blob_image(np.random.default_rng(0), size=160, n=3)
    in_torch = Detector.load(path, optimise=True, runtime="torch")
    in_onnx = Detector.load(path, optimise=True, runtime="onnx")
    assert isinstance(in_onnx.model.backbone, ob.OnnxBackbone)
    assert not isinstance(in_torch.model.backbone, ob.OnnxBackbone)
    boxes, scores = in_torch.predict_gray(img)
    onnx_boxes, onnx_scores = in_onnx.predict_gray(img)
    assert len(scores) > 0
    torch.testing.assert_close(torch.from_numpy(onnx_scores), torch.from_numpy(scores), rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(torch.from_numpy(onnx_boxes), torch.from_numpy(boxes), rtol=1e-3, atol=1e-2)
