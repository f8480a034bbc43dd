"""`deepace case DIR`: count a patient's cells and write the case report; `deepace serve`: the review app."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from deepace.cli.count_cmd import (
    Runtime,
    counter_maker,
    loaded,
    magnification_option,
    runtime_option,
    views_option,
)
from deepace.cli.output_paths import ready_folder
from deepace.inference import CellResult
from deepace.report import case as case_io
from deepace.report import page as case_report

STAINS = ("auto", "brightfield", "fluorescence")
LOOPBACK = ("127.0.0.1", "localhost", "::1")

err = Console(stderr=True)


def _check_stain(stain: str) -> str:
    if stain not in STAINS:
        raise typer.BadParameter(f"must be one of {', '.join(STAINS)}", param_hint="--stain")
    return stain


def count_case(
    case_dir: Path,
    counter: Any,
    out_dir: Path | None = None,
    stain: str = "auto",
    progress: bool = True,
) -> tuple[list[CellResult], dict[str, Path]]:
    """Count every image of a case with `counter` (anything with count_image(path) -> CellResult), save the
    raw output to CASE/deepace-review/model.json and build the report. Returns (results, report paths)."""
    images = case_io.case_images(case_dir)
    results: list[CellResult] = []
    with Progress(
        TextColumn("counting"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.description}"),
        console=err,
        disable=not progress,
        transient=True,
    ) as bar:
        task = bar.add_task("", total=len(images))
        for path in images:
            bar.update(task, description=path.name)
            results.append(counter.count_image(path))
            bar.advance(task)
    advice = None
    if hasattr(counter, "detector"):  # a Counter (tests pass stand-ins)
        from deepace.magnification import counted_images_advice

        advice = counted_images_advice(counter.detector, results, counter.stain, counter.magnification)
    case_io.write_model_json(case_dir, results, stain=stain, magnification_advice=advice)
    paths = case_report.build_case_report(case_dir, results, out_dir, stain=stain)
    return results, paths


def _print_summary(case_dir: Path, paths: dict[str, Path]) -> None:
    import json

    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    out = Console()
    count = case_io.case_count_text(data["case_count"], data["tied_with"], data["count_basis"])
    cells = f"{data['n_cells']} cell" + ("" if data["n_cells"] == 1 else "s")
    table = Table(title=f"{case_dir.name}: count {count} over {cells}")
    for col in ("image", "count", "low-conf.", "P(exact)", "status"):
        table.add_column(col, justify="right" if col in ("count", "low-conf.", "P(exact)") else "left")
    for c in data["cells"]:
        if c["error"]:
            table.add_row(c["name"], "—", "", "", f"[red]not counted: {c['error']}[/red]")
            continue
        status = "reviewed" if c["reviewed"] else ("corrected" if c["corrected"] else "automatic")
        if c["empty"]:
            status += ", no chromosome found: left out of the case's counts"
        if c.get("unsteady") and not c["reviewed"]:
            views = c["orientation_counts"]
            status += f", unsteady {min(views)}–{max(views)}"
        count = f"[bold red]{c['count']}[/bold red]" if c["off_mode"] else str(c["count"])
        # the model's chance for its own count, which a reviewer's count replaces
        automatic = not (c["reviewed"] or c["corrected"] or c["empty"]) and c["exact_chance"] is not None
        chance = f"{c['exact_chance']:.0%}" if automatic else ""
        table.add_row(c["name"], count, str(c["low_confidence"] or ""), chance, status)
    out.print(table)
    colour = {"alert": "red", "warning": "yellow", "info": "cyan"}
    for f in data["flags"]:
        out.print(f"[{colour[f['severity']]}]{f['severity'].upper()}[/] {f['message']}")
    out.print(f"Report: {paths['html']}")


def register(app: typer.Typer) -> None:
    @app.command("case")
    def case_command(
        case_dir: Path = typer.Argument(..., help="Folder with one patient's metaphase images."),
        out: Path | None = typer.Option(None, "--out", help="Report folder (default: DIR/deepace-report)."),
        weights: Path | None = typer.Option(
            None, "--weights", help="Model weights (default: the bundled model)."
        ),
        score_threshold: float | None = typer.Option(
            None, "--score-threshold", min=0.0, max=1.0, help="Count detections scoring at least this."
        ),
        stain: str = typer.Option("auto", "--stain", help="auto, brightfield or fluorescence."),
        magnification: float = magnification_option(),
        runtime: Runtime = runtime_option(),
        views: int = views_option(),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    ) -> None:
        """Count every cell of a case and write the case report (HTML, CSV, JSON)."""

        _check_stain(stain)
        if not case_dir.is_dir():
            err.print(f"[red]{case_dir}: not a folder[/red]")
            raise typer.Exit(2)
        if not case_io.case_images(case_dir):
            err.print(f"[red]{case_dir}: no image found (TIFF, PNG, JPEG or BMP)[/red]")
            raise typer.Exit(1)
        for read in (case_io.read_corrections, case_io.read_model_json):  # before the counting, not after
            try:
                read(case_dir)
            except ValueError as e:
                err.print(f"[red]{e}: mend it or move it away, then count again[/red]")
                raise typer.Exit(2) from e
        if out is not None:
            ready_folder(out, "--out")
        counter = loaded(counter_maker(weights, stain, score_threshold, magnification, runtime, views), err)
        _, paths = count_case(case_dir, counter, out, stain=stain, progress=progress)
        _print_summary(case_dir, paths)
        err.print(f"Model output for the review app: {case_io.model_json_path(case_dir)}")

    @app.command("serve")
    def serve_command(
        case_dirs: list[Path] = typer.Argument(None, help="Case folders to review (default: this folder)."),
        host: str = typer.Option(
            "127.0.0.1",
            "--host",
            help="Address to listen on (default: this machine only; another address opens the cases, with no "
            "login, to anyone who can reach it).",
        ),
        port: int = typer.Option(8000, "--port", min=1, max=65535, help="Port to listen on."),
        weights: Path | None = typer.Option(
            None, "--weights", help="Model weights for cells not yet counted."
        ),
        score_threshold: float | None = typer.Option(
            None,
            "--score-threshold",
            min=0.0,
            max=1.0,
            help="Count detections scoring at least this, in cells not yet counted (default: the model's).",
        ),
        stain: str = typer.Option("auto", "--stain", help="auto, brightfield or fluorescence."),
        magnification: float = magnification_option(),
        runtime: Runtime = runtime_option(),
        views: int = views_option(),
    ) -> None:
        """Open the review app: check and correct the automatic counts in a browser."""
        import uvicorn

        from deepace.app.server import LOOPBACK_HOSTS, create_app

        _check_stain(stain)
        if weights is not None and not weights.is_file():
            err.print(f"[red]{weights}: model file not found[/red]")
            raise typer.Exit(2)
        dirs: Sequence[Path] = case_dirs or [Path(".")]
        for d in dirs:
            if not d.is_dir():
                err.print(f"[red]{d}: not a folder[/red]")
                raise typer.Exit(2)

        counter_factory = counter_maker(weights, stain, score_threshold, magnification, runtime, views)

        allowed: Sequence[str] = LOOPBACK_HOSTS
        if host not in LOOPBACK:
            err.print(
                f"[yellow]Listening on {host}: anyone who can reach this machine can see and change these "
                "cases (no login). Use only on a trusted network.[/yellow]"
            )
            allowed = ("*",)
        app_ = create_app(list(dirs), counter_factory=counter_factory, allowed_hosts=allowed)
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        err.print(f"DeepACE review: http://{shown}:{port}/  (Ctrl+C to stop)")
        uvicorn.run(app_, host=host, port=port, log_level="warning")
