"""Does `Counter` flag images enlarged by repeating pixels, and only those? (`CellResult.pixel_repetition`,
`deepace.magnification.pixel_repetition`, on the image as the counter reads it: stain detected, DAPI
inverted and stretched, the paper's thresholding.)

    python benchmarks/blocky_check.py --coco ~/deepace-runs/data/taichung/val.json \
        --coco ~/deepace-runs/data/mfish/val.json --n 30

Each of the first N cells of each list is saved losslessly (PNG) as it is, enlarged 2x and 3x by repeating
pixels, and enlarged 2x by bilinear interpolation; prints, per list and version, how many were called
repeated and with which factor, and the check's median time per image.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from deepace.data.coco import read_coco
from deepace.data.dataset import prepare_image_and_stain
from deepace.data.images import read_raw, to_gray_uint8
from deepace.magnification import pixel_repetition

VERSIONS = {
    "original": None,
    "nearest 2x": (2, Image.Resampling.NEAREST),
    "nearest 3x": (3, Image.Resampling.NEAREST),
    "bilinear 2x": (2, Image.Resampling.BILINEAR),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--coco", type=Path, action="append", required=True)
    parser.add_argument("--n", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for coco in args.coco:
            calls: dict[str, Counter[int]] = {name: Counter() for name in VERSIONS}
            seconds = []
            for record in read_coco(coco)[: args.n]:
                image = Image.fromarray(to_gray_uint8(read_raw(record.path)))  # palette TIFFs: grey first
                for name, resize in VERSIONS.items():
                    if resize is not None:
                        factor, method = resize
                        image_k = image.resize((image.width * factor, image.height * factor), method)
                    else:
                        image_k = image
                    path = Path(tmp) / "cell.png"
                    image_k.save(path)
                    gray, _ = prepare_image_and_stain(path)
                    tic = time.perf_counter()
                    calls[name][pixel_repetition(np.asarray(gray))] += 1
                    seconds.append(time.perf_counter() - tic)
            ms = statistics.median(seconds) * 1000
            print(f"{coco} ({args.n} cells); median check {ms:.1f} ms per image")
            for name, found in calls.items():
                print(f"  {name:12s} called repeated k: {dict(sorted(found.items()))}")


if __name__ == "__main__":
    main()
