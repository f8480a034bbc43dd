"""Blank and near-blank images, and what dropping boxes without ink (deepace/blank_boxes.py) costs.

    python benchmarks/blank_images.py --coco ~/deepace-runs/data/taichung/train.json \
        --coco ~/deepace-runs/data/taichung/val.json --coco ~/deepace-runs/data/mfish/val.json

First the shipped model (or --weights) counts images with no chromosome in them, with the filter at
`ModelConfig.min_box_ink` and switched off, and the filter's own time on a spread is taken. Then, for
each --coco split: the share of ink (grey <= 200 in the image the model counts) in each ground-truth box,
how many boxes fall below the filter's share, and how many of the model's detections (score >= 0.05) the
filter drops, with the highest score it drops and how many of them were counted.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from deepace.blank_boxes import ink_shares
from deepace.cli.count_cmd import EXAMPLES_DIR
from deepace.data.coco import read_coco
from deepace.inference import Counter, Detector


def blank_images(folder: Path, seed: int = 1) -> list[Path]:
    """White, black and grey-noise frames, a few interphase-nucleus-like discs and a few specks of dust."""
    rng = np.random.default_rng(seed)
    noise = np.clip(rng.normal(230, 10, (900, 1000)), 0, 255).astype(np.uint8)
    images = {
        "white.png": Image.new("L", (800, 600), 255),
        "black.png": Image.new("L", (800, 600), 0),
        "noise_field.png": Image.fromarray(noise),
    }
    for name, discs, radius in (("nuclei.png", 6, (60, 110)), ("specks.png", 30, (1, 4))):
        image = Image.new("L", (1000, 900), 245)
        draw = ImageDraw.Draw(image)
        for _ in range(discs):
            x, y = rng.uniform(100, 800, 2)
            r = rng.uniform(*radius)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=int(rng.uniform(60, 120)))
        images[name] = image
    paths = []
    for name, image in images.items():
        image.save(folder / name)
        paths.append(folder / name)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--coco", type=Path, action="append", default=[])
    args = parser.parse_args()

    counter = Counter(args.weights, optimise=True)
    min_share = counter.detector.config.model.min_box_ink
    with tempfile.TemporaryDirectory() as tmp:
        paths = blank_images(Path(tmp))
        for setting in (min_share, None):
            counter.detector.config.model.min_box_ink = setting
            counts = ", ".join(f"{p.name} {counter.count_image(p).count}" for p in paths)
            print(f"min_box_ink {setting}: {counts}")

    detector: Detector = counter.detector
    detector.config.model.min_box_ink = None
    example = detector.detect(EXAMPLES_DIR / "taichung_104062.jpg")
    times = []
    for _ in range(21):
        start = time.perf_counter()
        ink_shares(example.gray, example.boxes)
        times.append(time.perf_counter() - start)
    print(
        f"ink shares of the bundled Taichung spread's {len(example.boxes)} detections "
        f"({example.gray.shape[1]}x{example.gray.shape[0]}): median {1000 * np.median(times):.1f} ms of 21"
    )
    for split in args.coco:
        truth, found_shares, dropped_scores, counted = [], [], [], 0
        for record in read_coco(split):
            found = detector.detect(record.path)
            truth.append(ink_shares(found.gray, record.boxes))
            shares = ink_shares(found.gray, found.boxes)
            found_shares.append(shares)
            low = shares < min_share
            dropped_scores += list(found.scores[low])
            counted += int((found.scores[low] >= detector.threshold_for(found.stain)).sum())
        gt = np.concatenate(truth)
        n_found = sum(len(s) for s in found_shares)
        print(
            f"{split}: {len(truth)} cells; ground-truth boxes {len(gt)}, ink share min {gt.min():.4f}, "
            f"1st percentile {np.percentile(gt, 1):.3f}, median {np.median(gt):.3f}, below {min_share}: "
            f"{(gt < min_share).sum()}; detections {n_found}, dropped {len(dropped_scores)} (highest score "
            f"{max(dropped_scores, default=0.0):.3f}, counted {counted})"
        )


if __name__ == "__main__":
    main()
