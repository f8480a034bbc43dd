"""Spreads at other magnifications: the first N cells of a validation split resized by each factor (a
lab whose camera sees chromosomes larger or smaller than the training images'), counted by `deepace
count`'s counter as they are (`--magnification 1`) and with the factor that undoes the resize
(`--magnification 1/f`).

    python benchmarks/magnification.py --coco ~/deepace-runs/data/taichung/val.json --n 37 --advice

--advice instead prints what `deepace count` would advise (deepace/magnification.py) for the N cells at
each factor, as one batch, and how often each cell alone would be flagged; --advice with factor 1 on a
training split gives the training cells' median width (ModelConfig.typical_chromosome_width).

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
    if image.mode in ("1", "P"):  # Pillow resizes these by nearest neighbour whatever is asked: blocky cells
        image = image.convert("L")
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    out = folder / f"{path.stem}_x{factor:g}.png"
    image.resize(size, Image.Resampling.BILINEAR).save(out)
    return out


def advice_table(args: argparse.Namespace) -> None:
    from deepace.inference import Detector
    from deepace.magnification import chromosome_width, magnification_advice, suggested_magnification

    detector = Detector.load(args.weights)
    records = read_coco(args.coco)[: args.n]
    print("| image resized by | median width (px) | advice for the batch | single cells flagged % |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for factor in args.factors:
            paths = [_resized_copy(r.path, factor, Path(tmp)) for r in records]
            widths, flagged = [], 0
            for path in paths:
                gray, stain = detector.prepare_with_stain(path)
                widths.append(chromosome_width(gray, detector.config.model.stain_scale(stain)))
                typical = detector.config.model.typical_width(stain)
                flagged += suggested_magnification([widths[-1]], typical) is not None
            advice = magnification_advice(detector, paths)
            print(
                f"| {factor:g} | {np.median([w for w in widths if w]):.1f} | {advice or 'none'} "
                f"| {100 * flagged / len(paths):.0f} |",
                flush=True,
            )
            for p in paths:
                p.unlink()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--coco", type=Path, required=True)
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--factors", type=float, nargs="+", default=[0.5, 0.7, 1.0, 1.4, 2.0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--advice", action="store_true")
    args = parser.parse_args()
    if args.advice:
        advice_table(args)
        return
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
