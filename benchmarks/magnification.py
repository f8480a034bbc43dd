"""Spreads at other magnifications: the first N cells of a validation split resized by each factor (a
lab whose camera sees chromosomes larger or smaller than the training images'), counted by `deepace
count`'s counter as they are (`--magnification 1`) and with the factor that undoes the resize
(`--magnification 1/f`).

    python benchmarks/magnification.py --coco ~/deepace-runs/data/taichung/val.json --n 40
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deepace.data.coco import read_coco
from deepace.inference import Counter


def _resized_copy(path: Path, factor: float, folder: Path) -> Path:
    image = Image.open(path)
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    out = folder / f"{path.stem}_x{factor:g}.png"
    image.resize(size, Image.Resampling.BILINEAR).save(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--coco", type=Path, required=True)
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--factors", type=float, nargs="+", default=[0.5, 0.7, 1.0, 1.4, 2.0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    records = read_coco(args.coco)[: args.n]
    counter = Counter(args.weights)
    print("| image resized by | --magnification | exact % | ±1 % | MAE | bias | s per cell |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for factor in args.factors:
            paths = [_resized_copy(r.path, factor, Path(tmp)) for r in records]
            truth = np.array([r.expected_count or r.count for r in records])
            for magnification in sorted({1.0, 1 / factor}):
                counter.magnification = magnification
                tic = time.perf_counter()
                results = [counter.count_image(p) for p in paths]
                seconds = (time.perf_counter() - tic) / len(paths)
                errors = np.array([r.count for r in results]) - truth
                print(
                    f"| {factor:g} | {magnification:.3g} | {100 * np.mean(errors == 0):.1f} "
                    f"| {100 * np.mean(np.abs(errors) <= 1):.1f} | {np.mean(np.abs(errors)):.2f} "
                    f"| {np.mean(errors):+.2f} | {seconds:.3f} |",
                    flush=True,
                )
            for p in paths:
                p.unlink()


if __name__ == "__main__":
    main()
