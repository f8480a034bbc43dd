"""Each validation cell counted in its eight orientations (the dihedral group: quarter turns and mirror
images), and what taking the median of several orientations' counts would give.

    python benchmarks/view_counts.py --coco ~/deepace-runs/data/taichung/val.json \
        --save ~/deepace-runs/views30/taichung.json

A cell's count should not depend on how the slide lay under the camera; how much it does measures how
much of the model's exact-count figure is chance, and a median over orientations is a test-time
augmentation that trades time per cell for steadier counts. --load re-reads saved counts (no model run).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from deepace.config import with_overrides
from deepace.data.coco import read_coco
from deepace.metrics import expected_counts
from deepace.metrics.counting import count_accuracy

# (quarter turns, mirrored left-right first); the first is the image as it is
ORIENTATIONS = [(0, False), (1, False), (2, False), (3, False), (0, True), (1, True), (2, True), (3, True)]


def oriented(gray: np.ndarray, turns: int, mirrored: bool) -> np.ndarray:
    out = gray[:, ::-1] if mirrored else gray
    return np.ascontiguousarray(np.rot90(out, turns))


def median_count(counts: np.ndarray) -> np.ndarray:
    """Per cell (row), the median of its views' counts, halves rounded to even as numpy does."""
    return np.rint(np.median(counts, axis=1)).astype(int)


def table(counts: np.ndarray, truth: np.ndarray, subsets: list[list[int]]) -> str:
    lines = [
        "| orientations counted | exact % | ±1 % | MAE | bias |",
        "|---|---|---|---|---|",
    ]
    singles = [count_accuracy(counts[:, v].tolist(), truth.tolist()) for v in range(counts.shape[1])]
    exact = [s["exact"] for s in singles]
    within1, mae, bias = (np.median([s[k] for s in singles]) for k in ("within1", "mae", "bias"))
    lines.append(
        f"| one (each of {counts.shape[1]}: min / median / max) "
        f"| {min(exact):.1f} / {np.median(exact):.1f} / {max(exact):.1f} "
        f"| {within1:.1f} | {mae:.2f} | {bias:+.2f} |"
    )
    for views in subsets:
        a = count_accuracy(median_count(counts[:, views]).tolist(), truth.tolist())
        lines.append(
            f"| median of {views} | {a['exact']:.1f} | {a['within1']:.1f} | {a['mae']:.2f} "
            f"| {a['bias']:+.2f} |"
        )
    agree = (counts == counts[:, :1]).all(axis=1)
    right = counts == truth[:, None]
    lines.append("")
    lines.append(
        f"Cells counted alike in all {counts.shape[1]} orientations: {agree.sum()} of {len(truth)} "
        f"({100 * agree.mean():.1f}%), of which exact {int((agree & right[:, 0]).sum())}; cells exact in "
        f"every orientation {int(right.all(axis=1).sum())}, in none {int((~right).all(axis=1).sum())}."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--coco", type=Path, required=True)
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--save", type=Path, default=None)
    parser.add_argument("--load", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="model.KEY=VALUE, e.g. model.brightfield_levels=null",
    )
    args = parser.parse_args()
    records = read_coco(args.coco)[: args.n]
    truth = np.array(expected_counts(records))
    if args.load:
        counts = np.array(json.loads(args.load.read_text())["counts"])
    else:
        from deepace.inference import Detector

        detector = Detector.load(args.weights, num_threads=args.threads, optimise=True)
        detector.config = with_overrides(detector.config, args.overrides)
        rows = []
        tic = time.perf_counter()
        for record in records:
            raw, stain = detector.read(record.path)
            threshold = detector.threshold_for(stain)
            rows.append(
                [
                    int((detector.detect_read(oriented(raw, t, m), stain).scores >= threshold).sum())
                    for t, m in ORIENTATIONS
                ]
            )
        counts = np.array(rows)
        print(f"{(time.perf_counter() - tic) / counts.size:.3f} s per view")
        if args.save:
            args.save.parent.mkdir(parents=True, exist_ok=True)
            names = [str(r.path) for r in records]
            args.save.write_text(json.dumps({"images": names, "orientations": ORIENTATIONS, "counts": rows}))
    print(table(counts, truth, [[0, 1, 2], [0, 4, 6], [0, 1, 2, 3, 4], list(range(8))]))


if __name__ == "__main__":
    main()
