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

`--mosaic F` with `--shift 1` (or -1) simulates a mosaic patient instead: a share F (< 0.5) of each case's
cells, chosen at random, carries the gain (loss) and the rest count 46, so the case's count is still 46
and what matters is whether the clone / mosaicism alert fires. Compare its row with the normal cases' (no
`--mosaic`, no `--shift`): an alert that fires as often in both tells the reviewer nothing.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np

from deepace.data.coco import read_coco
from deepace.data.predictions import match_predictions, read_predictions
from deepace.report.rules import NORMAL_COUNT, case_count, cells_off_mode, count_histogram, evaluate_counts

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
        "clone_gain": float("POSSIBLE_CLONE_GAIN" in codes),
        "clone_loss": float("POSSIBLE_CLONE_LOSS" in codes),
        "off_mode": float(len(cells_off_mode(counts, mode))),
    }


def simulate_cases(
    recorded: np.ndarray,
    model: np.ndarray,
    cells: int,
    cases: int,
    seed: int = 0,
    shift: int = 0,
    shifted_cells: int | None = None,
) -> tuple[dict[str, list[dict[str, float]]], list[int]]:
    """`cases` cases of `cells` cells drawn without replacement from the cells whose recorded and model
    counts are given; `shift` added to both counts of `shifted_cells` of each case's cells (all of them
    by default: a constitutional gain or loss; fewer: a mosaic). The summaries of the recorded counts, the
    model's by their mode and by their median, and per case the cells the model counts at its mode whose
    recorded count differs (errors a reviewer who checks only the cells off the mode would not see)."""
    shifted_cells = cells if shifted_cells is None else shifted_cells
    offsets = np.zeros(cells, dtype=int)
    offsets[:shifted_cells] = shift  # the draw's order is random, so these are random cells
    rng = np.random.default_rng(seed)
    rows: dict[str, list[dict[str, float]]] = {"recorded": [], "model": [], "model, by the median": []}
    hidden = []
    for _ in range(cases):
        chosen = rng.choice(len(recorded), cells, replace=False)
        truth, counts = recorded[chosen] + offsets, model[chosen] + offsets
        rows["recorded"].append(case_summary(truth.tolist()))
        model_summary = case_summary(counts.tolist())
        rows["model"].append(model_summary)
        # what the case report shows while the counts are unreviewed (deepace.report.rules.median_count)
        rows["model, by the median"].append(case_summary(counts.tolist(), basis="median"))
        hidden.append(int(np.sum(truth[counts == model_summary["mode"]] != model_summary["mode"])))
    return rows, hidden


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gt", type=Path, required=True)
    parser.add_argument("--pred", type=Path, required=True)
    parser.add_argument("--cells", type=int, default=20)
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--thresholds", type=float, nargs="*", default=[])
    parser.add_argument("--shift", type=int, default=0, help="constitutional gain (+1) or loss (-1)")
    parser.add_argument("--mosaic", type=float, default=0.0, help="share of cells with --shift (mosaicism)")
    args = parser.parse_args()
    mosaic_cells = round(args.mosaic * args.cells) if args.mosaic else args.cells
    if args.mosaic and (args.shift == 0 or not 0 < 2 * mosaic_cells < args.cells):
        parser.error("--mosaic needs --shift 1 or -1 and a share below 0.5 of at least one cell")
    constitutional = NORMAL_COUNT + args.shift if mosaic_cells == args.cells else NORMAL_COUNT

    records = read_coco(args.gt)
    preds, _ = match_predictions(records, read_predictions(args.pred))
    pairs = [
        (rec.expected_count, pred)
        for rec, pred in zip(records, preds, strict=True)
        if pred is not None
        and rec.expected_count is not None
        and rec.meta.get("list", "normal") in CONSTITUTIONALLY_46
    ]
    recorded = np.array([r for r, _ in pairs])
    model = np.array([p.count for _, p in pairs])
    every_cell = args.shift if mosaic_cells == args.cells else 0
    print(f"{len(pairs)} cells; recorded counts {count_histogram((recorded + every_cell).tolist())}")
    print(f"model's counts {count_histogram((model + every_cell).tolist())}")
    print(f"cells counted as recorded: {100 * np.mean(recorded == model):.1f}%")
    if mosaic_cells != args.cells:
        print(f"mosaic: {mosaic_cells} of {args.cells} cells a case {args.shift:+d}, the others as drawn")

    rows, hidden = simulate_cases(
        recorded, model, args.cells, args.cases, args.seed, args.shift, shifted_cells=mosaic_cells
    )

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
    print("\n| counts | POSSIBLE_CLONE_GAIN | POSSIBLE_CLONE_LOSS |\n|---|---|---|")
    for name, summaries in rows.items():
        gain, loss = (100 * np.mean([s[key] for s in summaries]) for key in ("clone_gain", "clone_loss"))
        print(f"| {name} | {gain:.1f}% | {loss:.1f}% |")
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
        if mosaic_cells != args.cells:
            break  # the threshold table is for constitutional cases
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
