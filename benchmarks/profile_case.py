"""Where a 20-cell case's time goes: `deepace case`'s steps under cProfile, the model loaded and warmed up.

    python benchmarks/profile_case.py --coco ~/deepace-runs/data/taichung/val.json [--n 20] [--top 25]

Prints the case's wall time, the seconds inside each step (counting, the magnification check, the case
report and its histogram, model.json) and the functions with the most cumulative time. cProfile adds its
own overhead (most to the many small torch calls of the counting), so read the shares, and take
seconds from `benchmarks/speed.py`. Imports done inside the steps (SciPy and scikit-image for the
magnification check) count towards them, as in a fresh `deepace case` process. Inside the counting,
`inference_profile.py` breaks a spread down by part of the model.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import tempfile
import time
from pathlib import Path

import torch
from speed import spread_arguments  # benchmarks/ is on the path when a script in it runs

from deepace.cli.case_cmds import count_case
from deepace.data.coco import read_coco
from deepace.inference import Counter

# (label, file suffix, function name) of the steps reported
STEPS = (
    ("counting (every image)", "deepace/inference.py", "count_image"),
    ("  of which the detector", "deepace/inference.py", "predict_gray"),
    ("magnification check", "deepace/magnification.py", "magnification_advice"),
    ("case report (HTML, CSV, JSON)", "deepace/report/page.py", "build_case_report"),
    ("  of which the histogram", "deepace/report/page.py", "histogram_svg"),
    ("  of which the thumbnails", "deepace/report/page.py", "annotated_thumbnail"),
    ("model.json", "deepace/report/case.py", "write_model_json"),
)


def step_seconds(stats: pstats.Stats, suffix: str, name: str) -> float:
    """Cumulative seconds in the function `name` of the file ending in `suffix` (0 if never called)."""
    return sum(
        row[3]
        for (filename, _, function), row in stats.stats.items()  # type: ignore[attr-defined]
        if function == name and filename.endswith(suffix)
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    spread_arguments(parser, n=20)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    paths = [r.path for r in read_coco(args.coco)[: args.n]]
    counter = Counter(args.weights)
    counter.count_image(paths[0])  # warm-up
    with tempfile.TemporaryDirectory() as tmp:
        case = Path(tmp) / "case"
        case.mkdir()
        for p in paths:
            shutil.copy(p, case / p.name)
        profile = cProfile.Profile()
        tic = time.perf_counter()
        profile.enable()
        count_case(case, counter, progress=False)
        profile.disable()
        wall = time.perf_counter() - tic
    stats = pstats.Stats(profile)
    print(f"{len(paths)}-cell case under cProfile: {wall:.2f} s")
    for label, suffix, name in STEPS:
        seconds = step_seconds(stats, suffix, name)
        print(f"{label:32s} {seconds:6.2f} s  {100 * seconds / wall:5.1f}%")
    stats.sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()
