"""Inference speed on this CPU: seconds per cell for `deepace count`'s model, a 1600x1200 spread, a 20-cell
case end to end, and torchvision's fasterrcnn_resnet50_fpn on the same images in the same run.

    python benchmarks/speed.py --coco ~/deepace-runs/data/taichung/val.json --n 20 [--weights FILE]

--no-optimise runs the model as trained (batch norms not folded, channels-first), to measure what
`deepace count`'s inference optimisations buy. With them, it also times each spread with the RoIs pooled
on one thread (as before session 14) right after the threaded run, and reports the median of the per-spread
ratios, which the machine's drift between runs does not touch.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deepace.cli.case_cmds import count_case
from deepace.data.coco import read_coco
from deepace.inference import Counter
from deepace.models.fuse import ThreadedRoIPool
from deepace.models.transform import gray_to_tensor


def median_seconds(fn, items) -> float:  # noqa: ANN001
    """The median over `items` of the seconds `fn(item)` takes."""
    times = []
    for item in items:
        tic = time.perf_counter()
        fn(item)
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def set_roi_pooling(model: torch.nn.Module, threaded: dict[int, ThreadedRoIPool], on: bool) -> None:
    """Swap every RoI heads' pooler between its ThreadedRoIPool (kept in `threaded`, by heads) and the
    pooler inside it."""
    for module in model.modules():
        pool = getattr(module, "box_roi_pool", None)
        if isinstance(pool, ThreadedRoIPool):
            threaded[id(module)] = pool
        if id(module) in threaded:
            module.box_roi_pool = threaded[id(module)] if on else threaded[id(module)].pool


def paired_pooling_speedup(counter: Counter, paths: list[Path]) -> float:
    """The median over `paths` of (seconds with one-thread RoI pooling) / (seconds threaded), each spread
    counted both ways back to back."""
    threaded: dict[int, ThreadedRoIPool] = {}
    ratios = []
    for path in paths:
        times = []
        for on in (True, False):
            set_roi_pooling(counter.detector.model, threaded, on)
            times.append(median_seconds(counter.count_image, [path]))
        ratios.append(times[1] / times[0])
    set_roi_pooling(counter.detector.model, threaded, True)
    return statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--coco", type=Path, required=True)
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-optimise", dest="optimise", action="store_false")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    paths = [r.path for r in read_coco(args.coco)[: args.n]]
    counter = Counter(args.weights, optimise=args.optimise)
    counter.count_image(paths[0])  # warm-up
    results: dict[str, float | str | bool] = {
        "images": len(paths),
        "threads": args.threads,
        "optimised": args.optimise,
        "threaded_roi_pooling": any(isinstance(m, ThreadedRoIPool) for m in counter.detector.model.modules()),
    }
    results["deepace_s_per_cell"] = median_seconds(counter.count_image, paths)
    if results["threaded_roi_pooling"]:
        results["threaded_roi_pooling_speedup"] = paired_pooling_speedup(counter, paths)

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
