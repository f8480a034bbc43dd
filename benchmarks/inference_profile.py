"""Where a spread's time goes in `deepace count`'s model, and the two hand-written speed-ups against what
they replace, on this CPU.

    python benchmarks/inference_profile.py --coco ~/deepace-runs/data/taichung/val.json --n 12

1. Per part of the model (forward hooks), the median over spreads 3…n of the seconds per spread.
2. RoI pooling of 400 random boxes on a 128×124×136 map (the shipped model's stride-8 level for a Taichung
   spread): MatrixRoIAlign against torchvision's roi_align (one thread, whatever the thread count).
3. Soft-NMS keeping 400 of 1,000 random proposals: deepace's against the algorithm written pick by pick in
   torch (tests/test_soft_nms.py's reference), and torchvision's box_iou against pairwise_iou.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch
from speed import median_seconds, spread_arguments  # benchmarks/ is on the path when a script in it runs
from torchvision.ops import MultiScaleRoIAlign, box_iou

from deepace.data.coco import read_coco
from deepace.inference import Counter
from deepace.models.matrix_roi_align import MatrixRoIAlign
from deepace.models.soft_nms import pairwise_iou, soft_nms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests/
from tests.test_soft_nms import reference_soft_nms  # noqa: E402


def repeated_seconds(fn: Callable[[], object], repeats: int = 7) -> float:
    """The median seconds of `repeats` calls of `fn`."""
    return median_seconds(lambda _: fn(), range(repeats))


def part_times(counter: Counter, paths: list[Path]) -> dict[str, float]:
    """Median seconds per spread in each part of the model, over all but the first two spreads."""
    model = counter.detector.model
    parts = {
        "backbone": model.backbone,
        "rpn head": model.rpn.head,
        "rpn (all)": model.rpn,
        "roi pooling (all stages)": model.roi_heads.box_roi_pool,
        "box heads' fc layers (all stages)": None,
        "roi heads (all)": model.roi_heads,
    }
    heads = [model.roi_heads, *getattr(model.roi_heads, "stages", ())]
    spent: dict[str, float] = defaultdict(float)
    started: dict[int, float] = {}

    def attach(name: str, module: torch.nn.Module) -> None:
        module.register_forward_pre_hook(lambda m, _i: started.__setitem__(id(m), time.perf_counter()))
        module.register_forward_hook(
            lambda m, _i, _o: spent.__setitem__(name, spent[name] + time.perf_counter() - started[id(m)])
        )

    for name, module in parts.items():
        if module is not None:
            attach(name, module)
    for stage in heads:
        attach("box heads' fc layers (all stages)", stage.box_head)
    per_spread: dict[str, list[float]] = defaultdict(list)
    for i, path in enumerate(paths):
        spent.clear()
        tic = time.perf_counter()
        counter.count_image(path)
        spent["whole spread (read, pre-process, detect)"] = time.perf_counter() - tic
        if i >= 2:
            for name, seconds in spent.items():
                per_spread[name].append(seconds)
    return {name: statistics.median(values) for name, values in per_spread.items()}


def pooling_times(threads: int) -> dict[str, float]:
    g = torch.Generator().manual_seed(0)
    features = {"0": torch.rand(1, 128, 124, 136, generator=g)}
    xy = torch.rand(400, 2, generator=g) * 1000
    boxes = [torch.cat([xy, xy + 20 + torch.rand(400, 2, generator=g) * 150], dim=1)]
    shapes = [(992, 1088)]
    out = {}
    for name, pool in (
        ("MatrixRoIAlign", MatrixRoIAlign(["0"], 7, 2)),
        ("torchvision roi_align", MultiScaleRoIAlign(["0"], 7, 2)),
    ):
        torch.set_num_threads(threads)
        out[f"{name}, 7×7, sampling 2"] = repeated_seconds(lambda p=pool: p(features, boxes, shapes))
    return out


def suppression_times() -> dict[str, float]:
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(1000, 2, generator=g) * 1000
    boxes = torch.cat([xy, xy + 10 + torch.rand(1000, 2, generator=g) * 150], dim=1)
    scores = torch.rand(1000, generator=g)
    return {
        "deepace soft_nms (numpy loop)": repeated_seconds(lambda: soft_nms(boxes, scores, max_output=400)),
        "plain Soft-NMS, pick by pick in torch": repeated_seconds(
            lambda: reference_soft_nms(boxes, scores, "gaussian", 0.5, 0.5, 1e-3, 400)
        ),
        "torchvision box_iou, 1,000 × 1,000": repeated_seconds(lambda: box_iou(boxes, boxes)),
        "pairwise_iou, 1,000 × 1,000": repeated_seconds(lambda: pairwise_iou(boxes)),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    spread_arguments(parser, n=12)
    args = parser.parse_args()
    counter = Counter(args.weights, num_threads=args.threads)
    paths = [r.path for r in read_coco(args.coco)[: args.n]]
    print(f"| part of a spread ({len(paths) - 2} spreads, median) | seconds |\n|---|---|")
    for name, seconds in part_times(counter, paths).items():
        print(f"| {name} | {seconds:.3f} |")
    print("\n| operation | seconds |\n|---|---|")
    for name, seconds in {**pooling_times(args.threads), **suppression_times()}.items():
        print(f"| {name} | {seconds:.4f} |")


if __name__ == "__main__":
    main()
