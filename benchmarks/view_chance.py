"""Counting in several orientations by the model's own count distributions instead of the median count.

`deepace count --views 5` keeps the orientation whose count is the median of five. Each orientation also
gives a distribution of the count (deepace/metrics/count_chance.py); this compares, on annotated cells,
reading the five by: the median count (as shipped), the orientation whose count is surest, the most likely
count of the distributions' mean, and of their product (the orientations taken as independent evidence).

    python benchmarks/view_chance.py detect --coco ~/deepace-runs/data/taichung/val.json --out V.json
    python benchmarks/view_chance.py compare --coco ~/deepace-runs/data/taichung/val.json --load V.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from deepace.data.coco import read_coco
from deepace.metrics import calibration, expected_counts
from deepace.metrics.count_chance import count_distribution, exact_chance
from deepace.metrics.counting import count_accuracy
from deepace.views import ORIENTATIONS, median_index, oriented

VIEWS = 5


def detect(args: argparse.Namespace) -> None:
    from deepace.inference import Detector

    detector = Detector.load(args.weights, num_threads=2, optimise=True)
    cells = []
    for record in tqdm(read_coco(args.coco), desc="cells"):
        raw, stain = detector.read(record.path)
        threshold = detector.threshold_for(stain)
        views = []
        for turns, mirrored in ORIENTATIONS[:VIEWS]:
            found = detector.detect_read(oriented(raw, turns, mirrored), stain)
            views.append([round(float(s), 5) for s in found.scores])
        cells.append({"image": str(record.path), "threshold": threshold, "scores": views})
    args.out.write_text(json.dumps(cells))


def median_view_chance(cell: dict) -> tuple[int, float]:
    """The median orientation's count (as `--views 5` keeps) and the model's chance that it is exact."""
    scores = [np.asarray(s) for s in cell["scores"]]
    counts = [int((s >= cell["threshold"]).sum()) for s in scores]
    kept = median_index(counts)
    return counts[kept], exact_chance(scores[kept], counts[kept])


def readings(cell: dict) -> dict[str, int]:
    """The count each way of reading a cell's orientations gives."""
    threshold = cell["threshold"]
    scores = [np.asarray(s) for s in cell["scores"]]
    counts = [int((s >= threshold).sum()) for s in scores]
    chances = [exact_chance(s, c) for s, c in zip(scores, counts, strict=True)]
    length = max(len(s) for s in scores) + 1
    distributions = np.zeros((len(scores), length))
    for i, s in enumerate(scores):
        d = count_distribution(s)
        distributions[i, : len(d)] = d
    log_product = np.log(np.clip(distributions, 1e-300, None)).sum(0)
    return {
        "one view (the image as it is)": counts[0],
        "median of 5 (shipped --views 5)": counts[median_index(counts)],
        "the surest orientation's count": counts[int(np.argmax(chances))],
        "most likely count of the mean distribution": int(np.argmax(distributions.mean(0))),
        "most likely count of the product": int(np.argmax(log_product)),
        "most likely count of one view's distribution": int(np.argmax(distributions[0])),
    }


def compare(args: argparse.Namespace) -> None:
    records = read_coco(args.coco, check_images=False)
    truth = {str(r.path): e for r, e in zip(records, expected_counts(records), strict=True)}
    cells = json.loads(args.load.read_text())
    rows: dict[str, list[int]] = {}
    for cell in cells:
        for name, count in readings(cell).items():
            rows.setdefault(name, []).append(count)
    expected = [truth[c["image"]] for c in cells]
    print(f"{len(cells)} cells")
    print("| reading | exact | ±1 | MAE | bias |\n|---|---|---|---|---|")
    for name, counts in rows.items():
        a = count_accuracy(counts, expected)
        print(f"| {name} | {a['exact']:.1f}% | {a['within1']:.1f}% | {a['mae']:.2f} | {a['bias']:+.2f} |")
    kept = [median_view_chance(c) for c in cells]
    table = calibration(
        [chance for _, chance in kept], [n == e for (n, _), e in zip(kept, expected, strict=True)]
    )
    print(f"--views 5, the kept orientation's chance: mean {table['mean_chance']:.1f}% against "
          f"{table['exact']:.1f}% exact, AUC {table['auc']:.3f}")  # fmt: skip
    for band in table["bands"]:
        exact = "-" if band["exact"] is None else f"{band['exact']:.1f}%"
        print(f"  chance {band['band'][0]:.0f}–{band['band'][1]:.0f}%: {band['cells']} cells, exact {exact}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("detect")
    d.add_argument("--coco", type=Path, required=True)
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--weights", type=Path, default=None)
    d.set_defaults(run=detect)
    c = sub.add_parser("compare")
    c.add_argument("--coco", type=Path, required=True)
    c.add_argument("--load", type=Path, required=True)
    c.set_defaults(run=compare)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
