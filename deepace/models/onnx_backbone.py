"""The backbone (body + feature pyramid) run by ONNX Runtime instead of torch, for CPU inference.

Why: the backbone's convolutions are most of a spread's time on a CPU, and ONNX Runtime fuses each
convolution with the activation after it (MobileNetV2's ReLU6 is a separate `clamp` pass in eager torch)
and picks its own kernels: on the 2-core development CPU it made a whole spread 1.1–1.2× faster with the
same counts (BENCHMARKS.md, "Speed"). The RPN, the RoI heads and the post-processing stay in torch.

The backbone is exported once per model and machine set-up and cached on disk (keyed by its weights,
architecture and the library versions), so later runs only open the file. The export uses torch's
TorchScript-based exporter (2–3 s; the newer torch.export-based one needs `onnxscript` and takes about
25 s). Anything that goes wrong falls back to torch: ONNX Runtime is a speed-up, never a requirement.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import warnings
from collections import OrderedDict
from pathlib import Path

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

OPSET = 17
RUNTIMES = ("auto", "onnx", "torch")
KEEP_CACHED = 8  # exported backbones kept in the cache (each model a lab fine-tunes adds one, ~9 MB)

__all__ = ["OPSET", "RUNTIMES", "OnnxBackbone", "cache_dir", "onnx_backbone", "use_onnx_backbone"]


def cache_dir() -> Path:
    """Where exported backbones are kept: $DEEPACE_CACHE, else $XDG_CACHE_HOME/deepace or ~/.cache/deepace."""
    if os.environ.get("DEEPACE_CACHE"):
        return Path(os.environ["DEEPACE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "deepace"


class OnnxBackbone(nn.Module):
    """Drop-in for a detector's backbone: an image batch (N, 3, H, W) -> OrderedDict of feature maps, as
    the torch backbone it was exported from returns them."""

    def __init__(
        self, model: bytes | Path, names: list[str], out_channels: int, threads: int, spin: bool = False
    ) -> None:
        """`spin`: let idle ONNX Runtime threads spin (its default). Off here: spinning threads take the
        cores from the torch operations that run between backbone calls; without it whole spreads ran
        1.04–1.10× faster in paired runs (BENCHMARKS.md, "Speed")."""
        import onnxruntime as ort

        super().__init__()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        self.source = model
        source = str(model) if isinstance(model, Path) else model
        self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        self.names = names
        self.out_channels = out_channels
        self.eval()

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor]:
        if self.training or images.requires_grad:
            raise RuntimeError("an ONNX Runtime backbone only runs inference")
        outputs = self.session.run(None, {"image": images.detach().contiguous().numpy()})
        return OrderedDict(
            (name, torch.from_numpy(out)) for name, out in zip(self.names, outputs, strict=True)
        )


class _Outputs(nn.Module):
    """The backbone with its feature maps as a tuple, which the exporter takes as the graph's outputs."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        features = self.backbone(images)
        return (features,) if isinstance(features, Tensor) else tuple(features.values())


def _feature_names(backbone: nn.Module, channels: int = 3) -> list[str]:
    with torch.no_grad():
        features = backbone(torch.zeros(1, channels, 64, 64))
    return ["0"] if isinstance(features, Tensor) else list(features.keys())


def _fingerprint(backbone: nn.Module) -> str:
    """A key for the exported file: the weights, the architecture and the versions that export and run it."""
    import onnxruntime as ort

    digest = hashlib.sha256(f"{torch.__version__} {ort.__version__} {OPSET} {backbone!r}".encode())
    for name, tensor in backbone.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to(torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:24]


def _export(backbone: nn.Module, names: list[str]) -> bytes:
    image = torch.zeros(1, 3, 224, 224)
    outputs = [f"features_{name}" for name in names]  # ONNX names must not be bare numbers
    dynamic = {"image": {2: "height", 3: "width"}}
    dynamic.update({out: {2: f"{out}_height", 3: f"{out}_width"} for out in outputs})
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(
            _Outputs(backbone).eval(),
            (image,),
            buffer,
            input_names=["image"],
            output_names=outputs,
            dynamic_axes=dynamic,
            opset_version=OPSET,
            dynamo=False,
        )
    return buffer.getvalue()


def _prune(folder: Path) -> None:
    """Delete all but the KEEP_CACHED most recently written exported backbones in `folder`."""
    files = sorted(folder.glob("backbone-*.onnx"), key=lambda f: f.stat().st_mtime, reverse=True)
    for old in files[KEEP_CACHED:]:
        old.unlink(missing_ok=True)


def onnx_backbone(backbone: nn.Module, threads: int | None = None, cache: Path | None = None) -> OnnxBackbone:
    """`backbone` (in eval mode, as it will run) exported to ONNX and opened in ONNX Runtime; the file is
    taken from, or written to, `cache` (default `cache_dir()`); an unwritable cache only costs the export
    again next time. Raises when onnxruntime is missing or the export fails."""
    backbone = backbone.eval()
    threads = threads or torch.get_num_threads()
    names = _feature_names(backbone)
    path = (cache or cache_dir()) / f"backbone-{_fingerprint(backbone)}.onnx"
    if path.is_file():
        try:
            return OnnxBackbone(path, names, backbone.out_channels, threads)
        except Exception as exc:  # noqa: BLE001 - a damaged cache file is exported again
            log.info("re-exporting the damaged cached backbone %s: %s", path, exc)
    model = _export(backbone, names)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(model)
        tmp.replace(path)
        _prune(path.parent)
    except OSError as exc:
        log.info("could not cache the exported backbone in %s: %s", path.parent, exc)
    return OnnxBackbone(model, names, backbone.out_channels, threads)


def use_onnx_backbone(model: nn.Module, runtime: str = "auto", cache: Path | None = None) -> bool:
    """Replace `model.backbone` by its ONNX Runtime export: with runtime 'auto' when that works (a warning
    and torch otherwise), always with 'onnx' (errors raise), never with 'torch'. Returns whether it did."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r} ({' | '.join(RUNTIMES)})")
    if runtime == "torch" or isinstance(model.backbone, OnnxBackbone):
        return isinstance(model.backbone, OnnxBackbone)
    try:
        model.backbone = onnx_backbone(model.backbone, cache=cache)
    except Exception as exc:
        if runtime == "onnx":
            raise
        log.warning("running the backbone in torch (ONNX Runtime unavailable: %s)", exc)
        return False
    return True
