"""What a lab sees per case: simulated 20-cell cases of validation cells, the counting rules of the case
report (deepace/report/rules.py) applied to the model's counts and to the recorded ones.

    deepace predict --coco ~/deepace-runs/data/taichung/val.json --out pred.json
    python benchmarks/case_level.py --gt ~/deepace-runs/data/taichung/val.json --pred pred.json

The Taichung cells carry no patient, so a case is `--cells` cells drawn at random (without replacement)
from the validation cells of the dataset's `normal` and `structural_abnormalities` lists: a patient whose
constitutional count is 46, with the cell-to-cell variation of real spreads (a tenth of those cells are
recorded 45 or 47: chromosomes lost or added in spreading). The cases overlap, so the shares below describe
this set of cells, not independent patients. Counts are the predictions' own (the model's calibrated
threshold); `--thresholds` also shows the cases at other counting thresholds.

`--shift 1` (or -1) simulates a patient with a constitutional gain (trisomy, 47) or loss (45) from the same
cells: one is added to (taken from) every drawn cell's recorded count and the model's count. This assumes
the model finds the extra chromosome as it finds the others, so its per-cell errors are those measured on
these cells; the validation split holds no such patients to check that on.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np

from deepace.data.coco import read_coco
from deepace.data.predictions import match_predictions, read_predictions
from deepace.report.rules import NORMAL_COUNT, case_count, cells_off_mode, evaluate_counts

CONSTITUTIONALLY_46 = ("normal", "structural_abnormalities")
CLONE_CODES = ("POSSIBLE_CLONE_GAIN", "POSSIBLE_CLONE_LOSS", "POSSIBLE_MOSAIC_NORMAL")


def case_summary(counts: list[int], basis: str = "mode") -> dict[str, float]:
    """The case's count (its modal count, or its median with `basis="median"`, as the case report reads
    automatic counts), whether the rules flag it as abnormal or tied or flag a clone, and the cells off it."""
    codes = {flag.code for flag in evaluate_counts(counts, basis=basis)}
    mode = case_count(counts, basis=basis)
    return {
        "mode": float(mode or 0),
        "abnormal_mode": float("ABNORMAL_MODE" in codes),
        "tied_mode": float("TIED_MODE" in codes),
        "clone_alert": float(bool(codes & set(CLONE_CODES))),
        "off_mode": float(len(cells_off_mode(counts, mode))),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gt", type=Path, required=True)
    parser.add_argument("--pred", type=Path, required=True)
    parser.add_argument("--cells", type=int, default=20)
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--thresholds", type=float, nargs="*", default=[])
    parser.add_argument("--shift", type=int, default=0, help="constitutional gain (+1) or loss (-1)")
    args = parser.parse_args()
    constitutional = NORMAL_COUNT + args.shift

    records = read_coco(args.gt)
    preds, _ = match_predictions(records, read_predictions(args.pred))
    pairs = [
        (rec.expected_count, pred)
        for rec, pred in zip(records, preds, strict=True)
        if pred is not None
        and rec.expected_count is not None
        and rec.meta.get("list", "normal") in CONSTITUTIONALLY_46
    ]
    recorded = np.array([r for r, _ in pairs]) + args.shift
    model = np.array([p.count for _, p in pairs]) + args.shift
    print(f"{len(pairs)} cells; recorded counts {dict(sorted(Counter(recorded.tolist()).items()))}")
    print(f"model's counts {dict(sorted(Counter(model.tolist()).items()))}")
    print(f"cells counted as recorded: {100 * np.mean(recorded == model):.1f}%")

    rng = np.random.default_rng(args.seed)
    rows: dict[str, list[dict[str, float]]] = {"recorded": [], "model": [], "model, by the median": []}
    hidden = []  # cells at the model's mode whose recorded count differs from it
    for _ in range(args.cases):
        chosen = rng.choice(len(pairs), args.cells, replace=False)
        rows["recorded"].append(case_summary(recorded[chosen].tolist()))
        model_summary = case_summary(model[chosen].tolist())
        rows["model"].append(model_summary)
        # what the case report shows while the counts are unreviewed (deepace.report.rules.median_count)
        rows["model, by the median"].append(case_summary(model[chosen].tolist(), basis="median"))
        at_mode = model[chosen] == model_summary["mode"]
        hidden.append(int(np.sum(recorded[chosen][at_mode] != model_summary["mode"])))

    print(f"\n{args.cases} cases of {args.cells} cells, seed {args.seed}:\n")
    header = (
        f"case count {constitutional} | case count {NORMAL_COUNT} | ABNORMAL_MODE alert | TIED_MODE alert "
        "| either | clone / mosaic alert | cells off the case count (mean)"
    )
    print(f"| counts | {header} |")
    print("|---|---|---|---|---|---|---|---|")
    for name, summaries in rows.items():
        modes = np.array([s["mode"] for s in summaries])
        print(
            f"| {name} | {100 * np.mean(modes == constitutional):.1f}% "
            f"| {100 * np.mean(modes == NORMAL_COUNT):.1f}% "
            f"| {100 * np.mean([s['abnormal_mode'] for s in summaries]):.1f}% "
            f"| {100 * np.mean([s['tied_mode'] for s in summaries]):.1f}% "
            f"| {100 * np.mean([max(s['abnormal_mode'], s['tied_mode']) for s in summaries]):.1f}% "
            f"| {100 * np.mean([s['clone_alert'] for s in summaries]):.1f}% "
            f"| {np.mean([s['off_mode'] for s in summaries]):.2f} |"
        )
    modes = Counter(int(s["mode"]) for s in rows["model"])
    print(f"\nthe model's modal counts: {dict(sorted(modes.items()))}")
    medians = Counter(int(s["mode"]) for s in rows["model, by the median"])
    print(f"the model's median counts: {dict(sorted(medians.items()))}")
    print(
        "cells the model counts at its mode whose recorded count differs (errors a reviewer who checks only "
        f"the cells off the mode would not see), per case: mean {np.mean(hidden):.2f}"
    )

    if args.thresholds:
        print(
            f"\n| threshold | cells exact | ±1 | bias | cases with modal count {constitutional} "
            "| ABNORMAL_MODE alert |"
        )
        print("|---|---|---|---|---|---|")
    for threshold in args.thresholds:
        counts = np.array([p.count_at(threshold) for _, p in pairs]) + args.shift
        cases = np.random.default_rng(args.seed)
        summaries = [
            case_summary(counts[cases.choice(len(pairs), args.cells, replace=False)].tolist())
            for _ in range(args.cases)
        ]
        print(
            f"| {threshold:g} | {100 * np.mean(counts == recorded):.1f}% "
            f"| {100 * np.mean(np.abs(counts - recorded) <= 1):.1f}% | {np.mean(counts - recorded):+.2f} "
            f"| {100 * np.mean([s['mode'] == constitutional for s in summaries]):.1f}% "
            f"| {100 * np.mean([s['abnormal_mode'] for s in summaries]):.1f}% |"
        )


if __name__ == "__main__":
    main()
