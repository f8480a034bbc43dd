"""Faint fluorescence spreads (deepace/faint.py): which cells the second pass takes, and what darkening
them to each target grey level does to their counts.

For every cell of the given COCO files (fluorescence ones), the model's first pass and the grey level of
its counted chromosomes (faint.ink_level); for the cells above `--level`, the count again with the ink
scaled to each `--targets` level. With M-FISH cells, the share of the expert-labelled chromosome pixels
that the paper's pre-processing whitens is shown too, and the one-pass errors by the labelled pixels'
median grey (label image: the `...K.tif` beside each `...D.tif`).

    python benchmarks/faint_fluorescence.py --coco ~/deepace-runs/data/mfish/train.json \\
        --coco ~/deepace-runs/data/mfish/val.json --targets 102 124 140 150
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
from PIL import Image

from deepace.data.coco import read_coco
from deepace.data.images import load_image_and_stain, paper_preprocess
from deepace.faint import darkened, ink_level
from deepace.inference import DEFAULT_WEIGHTS, Detector


def labelled_chromosomes(gray: np.ndarray, image: Path) -> np.ndarray | None:
    """The grey levels of the expert-labelled chromosome pixels (M-FISH label images only)."""
    label_file = image.with_name(image.name[:-5] + "K.tif") if image.name.endswith("D.tif") else None
    if label_file is None or not label_file.exists():
        return None
    labels = np.asarray(Image.open(label_file))
    chromosome = (labels > 0) & (labels < 255)
    return gray[chromosome] if chromosome.any() else None


def summary(errors: list[int]) -> str:
    n = len(errors)
    exact = 100 * sum(e == 0 for e in errors) / n
    within1 = 100 * sum(abs(e) <= 1 for e in errors) / n
    mae, bias = statistics.mean(map(abs, errors)), statistics.mean(errors)
    return f"exact {exact:.1f}%  ±1 {within1:.1f}%  MAE {mae:.2f}  bias {bias:+.2f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--coco", type=Path, action="append", required=True)
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--level", type=float, default=None, help="default: the model's own")
    parser.add_argument("--targets", type=float, nargs="+", default=[102.0, 124.0, 140.0, 150.0])
    args = parser.parse_args()
    detector = Detector.load(args.weights, num_threads=2, optimise=True)
    model = detector.config.model
    level = args.level if args.level is not None else model.faint_fluorescence_level
    cut = model.preprocess_threshold if model.preprocess_threshold is not None else 255
    threshold = detector.threshold_for("fluorescence")
    print(f"level {level}, counting threshold {threshold}, targets {args.targets}")
    header = ["split", "cell", "expected", "ink level", "whitened %", "error: one pass"]
    print("| " + " | ".join(header + [f"→ {t:g}" for t in args.targets]) + " |")
    print("|" + "---|" * (len(header) + len(args.targets)))
    errors: dict[str, dict[float | None, list[int]]] = {}
    by_grey: list[tuple[float, int]] = []  # labelled chromosomes' median grey, one-pass |error|
    for coco in args.coco:
        split = f"{coco.parent.name}/{coco.stem}"
        errors[split] = {t: [] for t in [None, *args.targets]}
        for record in read_coco(coco):
            raw, stain = load_image_and_stain(record.path, "fluorescence")
            boxes, scores = detector.predict_gray(paper_preprocess(raw, cut), stain)
            first = int((scores >= threshold).sum()) - record.expected_count
            ink = ink_level(raw, boxes, scores, threshold)
            errors[split][None].append(first)
            labelled = labelled_chromosomes(raw, record.path)
            if labelled is not None:
                by_grey.append((float(np.median(labelled)), abs(first)))
            faint = ink is not None and ink > level
            row = []
            for target in args.targets:
                error = first
                if faint:
                    _, again = detector.predict_gray(paper_preprocess(darkened(raw, ink, target), cut), stain)
                    error = int((again >= threshold).sum()) - record.expected_count
                errors[split][target].append(error)
                row.append(f"{error:+d}")
            if faint:
                shown = "–" if labelled is None else f"{100 * (labelled > cut).mean():.0f}"
                cells = [split, record.path.name, str(record.expected_count), f"{ink:.0f}", shown]
                print("| " + " | ".join([*cells, f"{first:+d}", *row]) + " |")
    if by_grey:
        print("\none pass, by the labelled chromosomes' median grey after the stretch (all cells):")
        for low, high in ((0, 100), (100, 130), (130, 160), (160, 256)):
            errs = [e for grey, e in by_grey if low <= grey < high]
            if errs:
                print(f"  {low}-{high}: {len(errs)} cells, mean |error| {statistics.mean(errs):.2f}")
    for split, by_target in errors.items():
        print(f"\n{split} ({len(by_target[None])} cells)")
        for target, errs in by_target.items():
            print(f"  {'one pass' if target is None else f'faint → {target:g}':>12}: {summary(errs)}")


if __name__ == "__main__":
    main()
