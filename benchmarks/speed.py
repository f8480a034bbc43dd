"""Inference speed on this CPU: seconds per cell for `deepace count`'s model, a 1600x1200 spread, a 20-cell
case end to end, and torchvision's fasterrcnn_resnet50_fpn on the same images in the same run.

    python benchmarks/speed.py --coco ~/deepace-runs/data/taichung/val.json --n 20 [--weights FILE]

--no-optimise runs the model as trained (batch norms not folded, channels-first), to measure what
`deepace count`'s inference optimisations buy. With them, it also times each spread with the RoIs pooled
by torchvision's roi_align (one thread, as before session 14) right after and, when the backbone runs in ONNX
Runtime (`--runtime auto|onnx`, `deepace count`'s default), with the backbone in torch right after (as
before session 15) and with ONNX Runtime's idle threads spinning right after (as before session 17), and
reports the medians of the per-spread ratios, which the machine's drift between
runs does not touch.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.ops import MultiScaleRoIAlign

from deepace.cli.case_cmds import count_case
from deepace.data.coco import read_coco
from deepace.inference import Counter, Detector
from deepace.models.matrix_roi_align import MatrixRoIAlign
from deepace.models.onnx_backbone import OnnxBackbone
from deepace.models.transform import gray_to_tensor


def median_seconds(fn, items) -> float:  # noqa: ANN001
    """The median over `items` of the seconds `fn(item)` takes."""
    times = []
    for item in items:
        tic = time.perf_counter()
        fn(item)
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def swap_modules(model: torch.nn.Module, replacements: dict[int, torch.nn.Module]) -> None:
    """Replace every child module whose id is a key of `replacements` by its value."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if id(child) in replacements:
                setattr(module, name, replacements[id(child)])


def torchvision_poolers(
    model: torch.nn.Module,
) -> tuple[dict[int, torch.nn.Module], dict[int, torch.nn.Module]]:
    """For each MatrixRoIAlign in `model`, a torchvision MultiScaleRoIAlign pooling the same: the maps
    from the one to the other and back (by id), for `swap_modules`."""
    to_torchvision: dict[int, torch.nn.Module] = {}
    back: dict[int, torch.nn.Module] = {}
    for pool in {id(m): m for m in model.modules() if isinstance(m, MatrixRoIAlign)}.values():
        plain = MultiScaleRoIAlign(
            pool.featmap_names,
            pool.output_size,
            pool.sampling_ratio,
            canonical_scale=pool.canonical_scale,
            canonical_level=pool.canonical_level,
        )
        to_torchvision[id(pool)], back[id(plain)] = plain, pool
    return to_torchvision, back


def paired_speedup(counter: Counter, paths: list[Path], use_faster: Callable[[bool], None]) -> float:
    """The median over `paths` of (seconds without a speed-up) / (seconds with it), each spread counted
    both ways back to back; `use_faster(on)` switches the speed-up on or off (it is left on)."""
    ratios = []
    for path in paths:
        times = []
        for on in (True, False):
            use_faster(on)
            times.append(median_seconds(counter.count_image, [path]))
        ratios.append(times[1] / times[0])
    use_faster(True)
    return statistics.median(ratios)


def spread_arguments(parser: argparse.ArgumentParser, n: int) -> None:
    """--coco, --n (the first n spreads), --weights and --threads: what the timing scripts here share."""
    parser.add_argument("--coco", type=Path, required=True)
    parser.add_argument("--n", type=int, default=n)
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2)


def main() -> None:
    parser = argparse.ArgumentParser()
    spread_arguments(parser, n=20)
    parser.add_argument("--no-optimise", dest="optimise", action="store_false")
    parser.add_argument("--runtime", default="auto", choices=["auto", "onnx", "torch"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    paths = [r.path for r in read_coco(args.coco)[: args.n]]
    tic = time.perf_counter()
    counter = Counter(args.weights, optimise=args.optimise, runtime=args.runtime)
    load_seconds = time.perf_counter() - tic
    model = counter.detector.model
    counter.count_image(paths[0])  # warm-up
    results: dict[str, float | str | bool] = {
        "images": len(paths),
        "threads": args.threads,
        "optimised": args.optimise,
        "model_load_s": load_seconds,
        "matrix_roi_pooling": any(isinstance(m, MatrixRoIAlign) for m in model.modules()),
        "onnx_backbone": isinstance(model.backbone, OnnxBackbone),
    }
    results["deepace_s_per_cell"] = median_seconds(counter.count_image, paths)
    if results["matrix_roi_pooling"]:
        to_torchvision, back = torchvision_poolers(model)
        results["matrix_roi_pooling_speedup"] = paired_speedup(
            counter, paths, lambda on: swap_modules(model, back if on else to_torchvision)
        )
    if results["onnx_backbone"]:
        quiet = model.backbone
        spinning = OnnxBackbone(quiet.source, quiet.names, quiet.out_channels, args.threads, spin=True)
        results["onnx_threads_not_spinning_speedup"] = paired_speedup(
            counter, paths, lambda on: setattr(model, "backbone", quiet if on else spinning)
        )
        backbones = {
            True: model.backbone,
            False: Detector.load(args.weights, optimise=True, runtime="torch").model.backbone,
        }
        results["onnx_backbone_speedup"] = paired_speedup(
            counter, paths, lambda on: setattr(model, "backbone", backbones[on])
        )

    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "spread_1600x1200.png"
        Image.open(paths[0]).convert("L").resize((1600, 1200), Image.BILINEAR).save(big)
        results["deepace_s_1600x1200"] = median_seconds(counter.count_image, [big] * 3)
        case = Path(tmp) / "case"
        case.mkdir()
        for p in paths[:20]:
            shutil.copy(p, case / p.name)
        tic = time.perf_counter()
        count_case(case, counter, progress=False)
        results["case_20_cells_s"] = time.perf_counter() - tic

    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    peer = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=2).eval()
    gray = [np.asarray(Image.open(p).convert("L")) for p in paths]

    def run_peer(g: np.ndarray) -> None:
        with torch.inference_mode():
            peer([gray_to_tensor(g)])

    run_peer(gray[0])
    results["fasterrcnn_resnet50_fpn_s_per_cell"] = median_seconds(run_peer, gray)
    results["speedup_vs_resnet50_fpn"] = (
        results["fasterrcnn_resnet50_fpn_s_per_cell"] / results["deepace_s_per_cell"]
    )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
