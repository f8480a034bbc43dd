"""How often the magnification advice fires for batches of n cells (deepace/magnification.py): per-cell
chromosome widths of the first 100 validation cells, resized by each factor, and 2,000 random batches of n
of them per factor; a batch is flagged when its median width is more than the tolerance from the training
width.

    python benchmarks/magnification_batches.py --coco ~/deepace-runs/data/taichung/val.json --typical 14.4
    python benchmarks/magnification_batches.py --coco ~/deepace-runs/data/mfish/val.json --typical 13.4 \
        --stain-scale 2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from deepace.data.coco import read_coco
from deepace.data.dataset import prepare_image_and_stain
from deepace.data.images import rescale_gray
from deepace.magnification import chromosome_width


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--coco", type=Path, required=True)
    parser.add_argument("--typical", type=float, required=True)
    parser.add_argument("--stain-scale", type=float, default=1.0)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--factors", type=float, nargs="+", default=[1.0, 0.7, 1.4])
    parser.add_argument("--tolerances", type=float, nargs="+", default=[1.25, 1.3, 1.4])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    grays = [prepare_image_and_stain(r.path)[0] for r in read_coco(args.coco)[: args.n]]
    columns = " | ".join(f"flagged at {t:g}" for t in args.tolerances)
    print(f"| cells resized by | batch size | {columns} |")
    print("|---|---|" + "---|" * len(args.tolerances))
    for factor in args.factors:
        widths = [chromosome_width(rescale_gray(g, factor), args.stain_scale) for g in grays]
        widths = np.array([w for w in widths if w])
        for size in (1, 3, 5, 8):
            medians = np.array([np.median(rng.choice(widths, size, replace=False)) for _ in range(2000)])
            ratio = args.typical / medians
            shares = [np.mean((ratio > t) | (ratio < 1 / t)) for t in args.tolerances]
            cells = " | ".join(f"{100 * s:.1f}%" for s in shares)
            print(f"| {factor:g} | {size} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
