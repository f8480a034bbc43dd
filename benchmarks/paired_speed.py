"""Two model files' counting time on the same spreads, each spread counted by one model then the other
right after, so that the machine's drift (10-20% within minutes on the shared 2-core machine) cancels in the
per-spread ratio:

    python benchmarks/paired_speed.py --coco ~/deepace-runs/data/taichung/val.json --a NEW.pt --b OLD.pt
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from deepace.data.coco import read_coco
from deepace.inference import Counter


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--coco", type=Path, required=True)
    parser.add_argument("--a", type=Path, required=True, help="model file A")
    parser.add_argument("--b", type=Path, required=True, help="model file B")
    parser.add_argument("--n", type=int, default=20)
    args = parser.parse_args()
    records = read_coco(args.coco)[: args.n]
    counters = [Counter(weights=w, stain="brightfield") for w in (args.a, args.b)]
    for counter in counters:  # warm-up: ONNX export or cache read, first-call allocations
        counter.count_image(records[0].path)
    seconds: list[list[float]] = [[], []]
    for record in records:
        for counter, times in zip(counters, seconds, strict=True):
            tic = time.perf_counter()
            counter.count_image(record.path)
            times.append(time.perf_counter() - tic)
    ratios = [a / b for a, b in zip(*seconds, strict=True)]
    print(
        f"{len(records)} spreads, seconds per spread (median): A {statistics.median(seconds[0]):.3f}, "
        f"B {statistics.median(seconds[1]):.3f}; median per-spread ratio A/B {statistics.median(ratios):.3f}"
    )


if __name__ == "__main__":
    main()
