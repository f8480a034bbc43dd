"""Other imaging conditions: the cells of a validation split as another lab's camera or export might give
them (JPEG compression, a dimmer or paler image, other gamma, sensor noise, blur, a 16-bit file, a
quarter turn), counted by `deepace count`'s counter, paired with the same cells as they are.

    python benchmarks/image_conditions.py --coco ~/deepace-runs/data/taichung/val.json
    python benchmarks/image_conditions.py --coco ~/deepace-runs/data/mfish/val.json

Ways to take noise out (`noise<σ>+<method>` for σ 4, 5, 8, 12, and `noise4`, `noise5`, `noise12`, not run
by default: the noise, then the method) are compared with the counter's own denoising switched off, so
that each method alone reads the image:

    python benchmarks/image_conditions.py --coco ~/deepace-runs/data/taichung/val.json --n 80 \
        --set model.denoise_above=null --conditions noise8 noise8+tv0.1 noise8+median3 ... \
        [--pair-with noise8+tv0.1]

Each condition is applied to the grey image `deepace count` reads (8-bit; bright-on-dark for fluorescence
files) and saved as a new file (PNG, or JPEG / 16-bit TIFF for those conditions), so the whole reading path
runs. "now right / wrong" pairs each cell with itself under the original condition (or `--pair-with`'s): how
many cells that were miscounted are now counted exactly, and how many counted exactly are now miscounted
(200 cells pin an exact-count share only to about ±7 points; a paired change is seen far more closely);
"box errors" counts, the same way, the cells with fewer / more false plus missed boxes at IoU 0.5 than
under that condition, with a Wilcoxon signed-rank p.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tifffile
import torch
from PIL import Image, ImageFilter
from scipy.stats import wilcoxon
from skimage.restoration import denoise_nl_means, denoise_tv_chambolle

from deepace.config import with_overrides
from deepace.data.coco import read_coco
from deepace.data.images import read_raw, to_gray_uint8
from deepace.data.noise import noise_sigma
from deepace.inference import CellResult, Counter
from deepace.metrics import expected_counts
from deepace.metrics.counting import count_accuracy
from deepace.metrics.detection import counted_box_errors, evaluate_detections
from deepace.views import turned_boxes

Gray = np.ndarray


def _u8(x: np.ndarray) -> Gray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _gamma(g: Gray, gamma: float) -> Gray:
    return _u8(255.0 * (g / 255.0) ** gamma)


def _noise(g: Gray, sigma: float, seed: int) -> Gray:
    return _u8(g + np.random.default_rng(seed).normal(0.0, sigma, g.shape))


def _blur(g: Gray, radius: float) -> Gray:
    return np.asarray(Image.fromarray(g).filter(ImageFilter.GaussianBlur(radius)))


def _tv(g: Gray, weight_at_sigma_8: float) -> Gray:
    """Chambolle's total variation with its weight scaled by the noise measured, as deepace/data/noise.py
    denoised in sessions 31–38."""
    weight = weight_at_sigma_8 * noise_sigma(g) / 8.0
    return _u8(255.0 * denoise_tv_chambolle(g / 255.0, weight=weight))


def _median3(g: Gray) -> Gray:
    return np.asarray(Image.fromarray(g).filter(ImageFilter.MedianFilter(3)))


def _nl_means(g: Gray) -> Gray:
    sigma = noise_sigma(g) / 255.0
    smooth = denoise_nl_means(g / 255.0, h=0.8 * sigma, sigma=sigma, patch_size=5, patch_distance=6)
    return _u8(255.0 * smooth)


# name -> (denoiser of an 8-bit grey image, what it is): applied after `noise<σ>` in `noise<σ>+<name>`.
DENOISERS: dict[str, tuple[Callable[[Gray], Gray], str]] = {
    "tv0.05": (lambda g: _tv(g, 0.05), "total variation, weight 0.05 at noise 8"),
    "tv0.1": (lambda g: _tv(g, 0.1), "total variation, weight 0.1 at noise 8 (sessions 31–38)"),
    "tv0.15": (lambda g: _tv(g, 0.15), "total variation, weight 0.15 at noise 8"),
    "tv0.2": (lambda g: _tv(g, 0.2), "total variation, weight 0.2 at noise 8"),
    "tv0.1x2": (lambda g: _tv(_tv(g, 0.1), 0.1), "total variation 0.1, twice"),
    "median3": (_median3, "3×3 median"),
    "gauss0.5": (lambda g: _blur(g, 0.5), "Gaussian blur, radius 0.5 px"),
    "gauss0.7": (lambda g: _blur(g, 0.7), "Gaussian blur, radius 0.7 px"),
    "gauss1.0": (lambda g: _blur(g, 1.0), "Gaussian blur, radius 1 px (deepace count's)"),
    "gauss_scaled": (
        lambda g: _blur(g, 0.1 * noise_sigma(g)),
        "Gaussian blur, radius 0.1 × the noise measured (0.7 px at σ 8)",
    ),
    "nlmeans": (_nl_means, "non-local means (scikit-image, fast mode)"),
}

# name -> (change to the 8-bit grey image, file suffix, what it stands for). Brightfield and fluorescence
# files get the same grey-level changes; for fluorescence "dimmer" is a weaker signal, "paler" a raised floor.
CONDITIONS: dict[str, tuple[Callable[[Gray, int], Gray], str, str]] = {
    "original": (lambda g, s: g, ".png", "the cell as it is, re-saved losslessly"),
    "jpeg90": (lambda g, s: g, ".jpg90", "JPEG quality 90"),
    "jpeg50": (lambda g, s: g, ".jpg50", "JPEG quality 50"),
    "dimmer": (lambda g, s: _u8(g * 0.8), ".png", "every grey level × 0.8 (an under-exposed image)"),
    "paler": (
        lambda g, s: _u8(255 - (255 - g.astype(np.float64)) * 0.7),
        ".png",
        "contrast to 70% toward white",
    ),
    "gamma0.7": (lambda g, s: _gamma(g, 0.7), ".png", "gamma 0.7 (mid-tones lighter)"),
    "gamma1.5": (lambda g, s: _gamma(g, 1.5), ".png", "gamma 1.5 (mid-tones darker)"),
    "noise8": (lambda g, s: _noise(g, 8.0, s), ".png", "Gaussian noise, σ 8 grey levels"),
    "blur1": (lambda g, s: _blur(g, 1.0), ".png", "Gaussian blur, radius 1 px (slightly out of focus)"),
    "uint16": (lambda g, s: g, ".tif16", "the same grey levels in a 16-bit TIFF (×257)"),
    "turned": (
        lambda g, s: np.ascontiguousarray(np.rot90(g)),
        ".png",
        "a quarter turn (boxes turned too)",
    ),
}
DEFAULT_CONDITIONS = list(CONDITIONS)
for _sigma in (4, 5, 12):
    CONDITIONS[f"noise{_sigma}"] = (
        lambda g, s, sigma=_sigma: _noise(g, sigma, s),
        ".png",
        f"Gaussian noise, σ {_sigma} grey levels",
    )
for _sigma in (4, 5, 8, 12):
    for _name, (_denoise, _what) in DENOISERS.items():
        CONDITIONS[f"noise{_sigma}+{_name}"] = (
            lambda g, s, sigma=_sigma, denoise=_denoise: denoise(_noise(g, sigma, s)),
            ".png",
            f"Gaussian noise, σ {_sigma}, then {_what}",
        )


def save_condition(gray: Gray, suffix: str, stem: Path) -> Path:
    if suffix.startswith(".jpg"):
        out = stem.with_suffix(".jpg")
        Image.fromarray(gray).save(out, quality=int(suffix[4:]))
    elif suffix == ".tif16":
        out = stem.with_suffix(".tif")
        tifffile.imwrite(out, gray.astype(np.uint16) * 257)
    else:
        out = stem.with_suffix(suffix)
        Image.fromarray(gray).save(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--coco", type=Path, required=True)
    parser.add_argument("--n", type=int, default=None, help="the first N cells (default all)")
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--conditions", nargs="+", default=DEFAULT_CONDITIONS, choices=list(CONDITIONS))
    parser.add_argument("--pair-with", default="original", choices=list(CONDITIONS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="model.KEY=VALUE")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = [args.pair_with, *[c for c in args.conditions if c != args.pair_with]]  # the first pairs
    records = read_coco(args.coco)[: args.n]
    truth = np.array(expected_counts(records))
    counter = Counter(args.weights)
    counter.detector.config = with_overrides(counter.detector.config, args.overrides)
    base: tuple[np.ndarray, np.ndarray] | None = None
    print(
        "| condition | exact % | ±1 % | MAE | bias | AER@0.5 | WCR@0.5 | now right / wrong "
        "| box errors fewer / more (p) | s per cell |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            change, suffix, _ = CONDITIONS[name]
            results: list[CellResult] = []
            gts = []
            tic = time.perf_counter()
            for index, record in enumerate(records):
                gray = to_gray_uint8(read_raw(record.path))
                path = save_condition(change(gray, index), suffix, Path(tmp) / f"{index:04d}")
                results.append(counter.count_image(path))
                path.unlink()
                gts.append(turned_boxes(record.boxes, gray.shape, 1) if name == "turned" else record.boxes)
            seconds = (time.perf_counter() - tic) / len(records)
            failed = [r.image for r in results if r.error]
            if failed:
                raise SystemExit(f"{name}: unreadable {failed[:3]}")
            counts = np.array([r.count for r in results])
            accuracy = count_accuracy(counts.tolist(), truth.tolist())
            boxes = evaluate_detections(
                gts, [(r.boxes, r.scores) for r in results], [0.5], [r.score_threshold for r in results]
            )["0.5"]
            right = counts == truth
            errors = np.array(
                [
                    counted_box_errors(gt, r.boxes, r.scores, r.score_threshold, 0.5)
                    for gt, r in zip(gts, results, strict=True)
                ]
            )
            if base is None:
                base = right, errors
            paired = f"{int((right & ~base[0]).sum())} / {int((~right & base[0]).sum())}"
            diff = errors - base[1]
            p = wilcoxon(diff).pvalue if diff.any() else 1.0
            print(
                f"| {name} | {accuracy['exact']:.1f} | {accuracy['within1']:.1f} | {accuracy['mae']:.2f} "
                f"| {accuracy['bias']:+.2f} | {boxes['AER']:.2f}% | {boxes['WCR']:.1f}% | {paired} "
                f"| {(diff < 0).sum()} / {(diff > 0).sum()} ({p:.2g}) | {seconds:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
