"""Each validation cell counted in its eight orientations (the dihedral group: quarter turns and mirror
images), and what `deepace count --views N` (deepace/views.py: the median orientation of the first N) gives.

    python benchmarks/view_counts.py --coco ~/deepace-runs/data/taichung/val.json \
        --save ~/deepace-runs/views30/taichung.json

A cell's count should not depend on how the slide lay under the camera; how much it does measures how
much of the model's exact-count figure is chance, and a median over orientations is a test-time
augmentation that trades time per cell for steadier counts. --load re-reads saved counts (no model run).
The last column: cells counted alike in every orientation counted, and how many of those are exact.
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
from deepace.views import ORIENTATIONS, median_index, oriented


def in_library_order(counts: np.ndarray, saved_orientations: list[list]) -> np.ndarray:
    """Columns of saved counts put in deepace.views.ORIENTATIONS order (files from before that order)."""
    index = [tuple(o) for o in saved_orientations]
    return counts[:, [index.index(o) for o in ORIENTATIONS]]


def median_counts(counts: np.ndarray, views: int) -> np.ndarray:
    """Per cell (row), the count `deepace count --views` gives: the median orientation's of the first
    `views` (deepace.views.median_index)."""
    return np.array([row[median_index(list(row[:views]))] for row in counts])


def table(counts: np.ndarray, truth: np.ndarray) -> str:
    lines = [
        "| orientations counted (--views) | exact % | ±1 % | MAE | bias | counted alike in all (exact) |",
        "|---|---|---|---|---|---|",
    ]
    singles = [count_accuracy(counts[:, v].tolist(), truth.tolist()) for v in range(counts.shape[1])]
    exact = [s["exact"] for s in singles]
    within1, mae, bias = (np.median([s[k] for s in singles]) for k in ("within1", "mae", "bias"))
    lines.append(
        f"| one, each of the {counts.shape[1]} (min / median / max) "
        f"| {min(exact):.1f} / {np.median(exact):.1f} / {max(exact):.1f} "
        f"| {within1:.1f} | {mae:.2f} | {bias:+.2f} | |"
    )
    for views in range(1, counts.shape[1] + 1, 2):
        chosen = median_counts(counts, views)
        a = count_accuracy(chosen.tolist(), truth.tolist())
        alike = (counts[:, :views] == counts[:, :1]).all(axis=1)
        lines.append(
            f"| {views} | {a['exact']:.1f} | {a['within1']:.1f} | {a['mae']:.2f} | {a['bias']:+.2f} "
            f"| {alike.sum()} ({int((alike & (chosen == truth)).sum())}) |"
        )
    return "\n".join(lines)


def box_offsets(detector, records) -> str:  # noqa: ANN001
    """Per orientation, the median offset (x1, y1, x2, y2, in pixels) of the counted boxes found in it and
    mapped back (deepace.views.boxes_to_original) from the counted boxes found in the image as it is, over
    box pairs at IoU > 0.5, and the median offset of the latter from the annotated boxes."""
    from deepace.metrics.detection import box_iou
    from deepace.views import boxes_to_original

    def paired(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """b's best match minus a, for the boxes of a with a match at IoU > 0.5."""
        if not len(a) or not len(b):
            return np.zeros((0, 4))
        iou = box_iou(a, b)
        keep = iou.max(1) > 0.5
        return (b[iou.argmax(1)] - a)[keep]

    offsets: dict[str, list[np.ndarray]] = {}
    for record in records:
        raw, stain = detector.read(record.path)
        threshold = detector.threshold_for(stain)
        base = detector.detect_read(raw, stain)
        own = base.boxes[base.scores >= threshold]
        offsets.setdefault("as it is, from the annotated boxes", []).append(paired(record.boxes, own))
        for turns, mirrored in ORIENTATIONS[1:]:
            seen = oriented(raw, turns, mirrored)
            found = detector.detect_read(seen, stain)
            back = boxes_to_original(found.boxes[found.scores >= threshold], seen.shape, turns, mirrored)
            offsets.setdefault(f"{turns} quarter turns{', mirrored' if mirrored else ''}", []).append(
                paired(own, back)
            )
    lines = ["| orientation | median offset x1 | y1 | x2 | y2 | box pairs |", "|---|---|---|---|---|---|"]
    for name, parts in offsets.items():
        d = np.concatenate(parts)
        x1, y1, x2, y2 = np.median(d, axis=0)
        lines.append(f"| {name} | {x1:+.2f} | {y1:+.2f} | {x2:+.2f} | {y2:+.2f} | {len(d)} |")
    return "\n".join(lines)


def case_table(counts: np.ndarray, records: list, cases: int) -> str:
    """Simulated 20-cell normal cases (benchmarks/case_level.py: cells of constitutionally normal
    patients, drawn without replacement) read by the median of their automatic counts, as the case report
    reads them: per orientation and per `--views`, the share read as 46 and the share raising a count
    alert (ABNORMAL_MODE or TIED_MODE)."""
    from case_level import CONSTITUTIONALLY_46, simulate_cases

    normal = [i for i, r in enumerate(records) if r.meta.get("list", "normal") in CONSTITUTIONALLY_46]
    recorded = np.array(expected_counts([records[i] for i in normal]))
    readings = [(f"orientation {o} alone", counts[normal, o]) for o in range(counts.shape[1])]
    readings += [(f"--views {v}", median_counts(counts[normal], v)) for v in range(3, counts.shape[1] + 1, 2)]
    lines = [
        f"| reading ({len(normal)} cells, {cases} cases of 20) | case read as 46 | count alert |",
        "|---|---|---|",
    ]
    for name, model in readings:
        rows, _ = simulate_cases(recorded, model, 20, cases)
        median = rows["model, by the median"]
        alert = np.mean([max(r["abnormal_mode"], r["tied_mode"]) for r in median])
        lines.append(
            f"| {name} | {100 * np.mean([r['mode'] == 46 for r in median]):.1f}% | {100 * alert:.1f}% |"
        )
    return "\n".join(lines)


def saved_counts(path: Path, records: list) -> np.ndarray:
    """A `--save` file's counts in ORIENTATIONS order, one row per record (matched by file name)."""
    saved = json.loads(path.read_text())
    row_of = {Path(name).name: i for i, name in enumerate(saved["images"])}
    counts = in_library_order(np.array(saved["counts"]), saved["orientations"])
    return counts[[row_of[r.path.name] for r in records]]


def paired_table(counts: np.ndarray, other: np.ndarray, truth: np.ndarray, name: str) -> str:
    """Per --views, the cells only these counts get right against only `other`'s (two-sided sign test)."""
    from scipy.stats import binomtest

    lines = [f"| `--views` | only this one right / only {name} right | sign test p |", "|---|---|---|"]
    for views in (1, 3, 5, 7):
        mine, theirs = median_counts(counts, views) == truth, median_counts(other, views) == truth
        a, b = int((mine & ~theirs).sum()), int((theirs & ~mine).sum())
        p = binomtest(a, a + b).pvalue if a + b else 1.0
        lines.append(f"| {views} | {a} / {b} | {p:.2g} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--coco", type=Path, required=True)
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--save", type=Path, default=None)
    parser.add_argument("--load", type=Path, default=None)
    parser.add_argument(
        "--against", type=Path, action="append", default=[], help="another model's --save file: paired table"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cases", type=int, default=0, help="also simulate this many 20-cell normal cases")
    parser.add_argument(
        "--offsets", action="store_true", help="where each orientation's boxes land, mapped back (no counts)"
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="model.KEY=VALUE")
    args = parser.parse_args()
    records = read_coco(args.coco)[: args.n]
    truth = np.array(expected_counts(records))
    if args.load:
        counts = saved_counts(args.load, records)
    else:
        from deepace.inference import Detector

        detector = Detector.load(args.weights, num_threads=args.threads, optimise=True)
        detector.config = with_overrides(detector.config, args.overrides)
        if args.offsets:
            print(box_offsets(detector, records))
            return
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
    print(table(counts, truth))
    for other in args.against:
        print()
        print(paired_table(counts, saved_counts(other, records), truth, other.name))
    if args.cases:
        print()
        print(case_table(counts, records, args.cases))


if __name__ == "__main__":
    main()
