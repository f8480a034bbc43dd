"""`deepace evaluate`: score a prediction file against COCO ground truth (the paper's Table 3 and more)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from deepace.data.predictions import PredictionFileError, match_predictions, read_predictions
from deepace.data.records import AnnotationError, ImageRecord
from deepace.metrics import evaluate_records

_err = Console(stderr=True)


def _fmt(value: float | int | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _detection_table(by_iou: dict[str, dict[str, Any]]) -> Table:
    table = Table(title="Detection by IoU threshold (paper Table 3)")
    for name in ("IoU", "AP %", "WCR %", "AER %", "FP", "FN"):
        table.add_column(name, justify="right")
    for key, row in by_iou.items():
        table.add_row(key, *(_fmt(row[k]) for k in ("AP", "WCR", "AER", "FP", "FN")))
    rows = list(by_iou.values())
    table.add_section()
    table.add_row("Mean", *(_fmt(_mean([r[k] for r in rows])) for k in ("AP", "WCR", "AER")), "", "")
    return table


def _images(n: int) -> str:
    return f"{n} image" + ("" if n == 1 else "s")


def _count_source(records: list[ImageRecord]) -> str:
    n_expected = sum(rec.expected_count is not None for rec in records)
    if n_expected == len(records):
        return f"expected_count ({_images(n_expected)})"
    if n_expected == 0:
        return f"number of ground-truth boxes ({_images(len(records))}, none has expected_count)"
    return (
        f"expected_count for {_images(n_expected)}, "
        f"number of ground-truth boxes for {_images(len(records) - n_expected)}"
    )


def _print_report(result: dict[str, Any], records: list[ImageRecord], threshold_note: str) -> None:
    out = Console(soft_wrap=True, highlight=False)
    out.print(f"{_images(len(records))} with ground truth; counted at {threshold_note}")
    out.print(_detection_table(result["by_iou"]))
    out.print("Matching: a prediction claims only its best-IoU ground truth (paper §3.1); IoU must exceed t.")
    c = result["count"]
    bias = "-" if c["bias"] is None else f"{c['bias']:+.2f}"
    out.print(f"Count accuracy, reference: {_count_source(records)}")
    out.print(
        f"  exact {_fmt(c['exact'], 1)}% {_interval(c['exact_ci95'])}   "
        f"within ±1 {_fmt(c['within1'], 1)}% {_interval(c['within1_ci95'])}   "
        f"MAE {_fmt(c['mae'])}   bias {bias} (predicted − expected)"
    )
    out.print(f"  (95% intervals over {c['n']} cells, Wilson)")
    out.print(
        "After a reviewer checks the boxes flagged in a band around the threshold (kept if a chromosome):"
    )
    for margin, r in result["review"].items():
        flagged = f"{_fmt(r['flagged_mean'], 1)} boxes per cell (median {_fmt(r['flagged_median'], 0)})"
        out.print(
            f"  ±{margin}: {flagged}; exact {_fmt(r['exact'], 1)}%   "
            f"within ±1 {_fmt(r['within1'], 1)}%   MAE {_fmt(r['mae'])}"
        )
        out.print(
            f"      before any check, the model's count is exact in {_fmt(r['unflagged_exact'], 1)}% "
            f"(±1 {_fmt(r['unflagged_within1'], 1)}%) of the {r['unflagged_cells']} cells with no box "
            f"in the band, {_fmt(r['flagged_exact'], 1)}% (±1 {_fmt(r['flagged_within1'], 1)}%) of the others"
        )
    out.print(_chance_line(result["count_chance"]))
    m = result["coco"]
    out.print(f"COCO box mAP@[.5:.95] {_fmt(m['mAP'])}%   AP50 {_fmt(m['AP50'])}%   (COCO matching rule)")


def _chance_line(chance: dict[str, Any]) -> str:
    """How the model's own chance that each count is exact compares with the exact counts."""
    if not chance["n"]:
        return "The model's chance of an exact count: no cell to compare it with"
    bands = "; ".join(
        f"{b['band'][0]:.0f}–{b['band'][1]:.0f}%: {b['cells']} cells, exact {_fmt(b['exact'], 1)}%"
        for b in chance["bands"]
        if b["cells"]
    )
    auc = chance["auc"]
    auc = "" if auc is None else f"; it tells exact cells from the others with AUC {auc:.2f}"
    return (
        f"The model's chance that its count is exact: mean {_fmt(chance['mean_chance'], 1)}% against "
        f"{_fmt(chance['exact'], 1)}% exact{auc}\n  by the chance it gave: {bands}"
    )


def _interval(bounds: list[float] | None) -> str:
    return "" if bounds is None else f"[{bounds[0]:.1f}–{bounds[1]:.1f}]"


def _fail(message: str) -> typer.Exit:
    _err.print(f"[red]error:[/red] {message}", markup=True, highlight=False, soft_wrap=True)
    return typer.Exit(code=1)


def evaluate(
    gt: Annotated[Path, typer.Option("--gt", help="Ground-truth COCO json.")],
    pred: Annotated[
        Path, typer.Option("--pred", help="Prediction json (as written by `deepace count --json`).")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as json.")] = False,
    score_threshold: Annotated[
        float | None,
        typer.Option(
            help="Count detections scoring at least this (default: the one in the prediction file)."
        ),
    ] = None,
    tune_threshold: Annotated[
        bool,
        typer.Option(
            "--tune-threshold",
            help="Count at the threshold that counts these same cells best (exact count; optimistic, as "
            "any threshold tuned on the cells it is scored on).",
        ),
    ] = False,
) -> None:
    """Score predictions against ground truth: AP/WCR/AER per IoU (Table 3), count accuracy, COCO mAP."""
    from deepace.data.coco import read_coco

    for path, what in ((gt, "ground-truth"), (pred, "prediction")):
        if not path.is_file():
            raise _fail(f"{what} file not found: {path}")
    try:
        records = read_coco(gt, check_images=False)  # evaluating needs no pixels
        predictions = read_predictions(pred)
    except (AnnotationError, PredictionFileError, ValueError, OSError) as exc:
        raise _fail(str(exc)) from None

    if not records:
        raise _fail(f"{gt}: no images")
    if predictions and all(p is None for p in match_predictions(records, predictions)[0]):
        raise _fail(
            f"none of the {len(predictions)} images in {pred} is among the {len(records)} of {gt}: "
            "are they predictions for other images?"
        )

    def warn(message: str) -> None:
        _err.print(
            f"[yellow]warning:[/yellow] {escape(message)}", markup=True, highlight=False, soft_wrap=True
        )

    if tune_threshold:
        if score_threshold is not None:
            raise _fail("give --score-threshold or --tune-threshold, not both")
    result = evaluate_records(
        records, predictions, score_threshold, on_warning=warn, tune_threshold=tune_threshold
    )
    score_threshold = result.get("tuned_threshold", score_threshold)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    if tune_threshold:
        note = f"score >= {score_threshold:g} (--tune-threshold: tuned on these cells)"
    elif score_threshold is not None:
        note = f"score >= {score_threshold:g} (--score-threshold)"
    else:
        found = sorted({p.score_threshold for p in predictions})
        note = "score >= " + (", ".join(f"{t:g}" for t in found) or "-") + " (from the prediction file)"
    _print_report(result, records, note)


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
