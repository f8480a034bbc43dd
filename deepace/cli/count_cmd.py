"""`deepace count`: the main job — count chromosomes in images with the shipped model."""

from __future__ import annotations

import csv
import glob
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from deepace.cli.output_paths import ready_file, ready_folder

if TYPE_CHECKING:
    from deepace.inference import Counter

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"


def magnification_option() -> typer.models.OptionInfo:
    """`--magnification` (count, case, serve)."""
    return typer.Option(
        1.0,
        "--magnification",
        min=0.2,
        max=5.0,
        help="Resize images by this factor before counting, for spreads imaged at another magnification than "
        "the model's training images: 2 when the chromosomes are about half their size (median length about "
        "84 px in the G-band training spreads, 37 px in the DAPI ones).",
    )


def _odd(views: int) -> int:
    if views % 2 == 0:
        raise typer.BadParameter("give 1, 3, 5 or 7 (odd, so that the median count is one orientation's)")
    return views


def views_option() -> typer.models.OptionInfo:
    """`--views` (count, case, serve, predict)."""
    return typer.Option(
        1,
        "--views",
        min=1,
        max=7,
        callback=_odd,
        help="Count each image in this many orientations (1, 3, 5 or 7: mirror images, then quarter turns) "
        "and keep the one whose count is the median: steadier counts (G-band mean error 0.91 -> 0.69 with 5) "
        "at one more detection's time each; the table shows the counts' spread (deepace/views.py).",
    )


class Runtime(str, Enum):
    """Where the backbone runs (`deepace.models.onnx_backbone.RUNTIMES`; kept here so the CLI starts
    without importing torch)."""

    auto = "auto"
    onnx = "onnx"
    torch = "torch"


def runtime_option() -> typer.models.OptionInfo:
    """`--runtime` (count, case, serve)."""
    return typer.Option(
        "auto",
        "--runtime",
        help="Run the backbone in ONNX Runtime (onnx; exported once per model into ~/.cache/deepace), in "
        "torch (torch), or in ONNX Runtime when that works, else torch with a warning (auto).",
    )


def count_command(
    paths: list[Path] = typer.Argument(None, help="Image files and folders (searched recursively)."),
    examples: bool = typer.Option(False, "--examples", help="Count the example images shipped with DeepACE."),
    out: Path | None = typer.Option(None, "--out", help="Folder for annotated images (numbered boxes)."),
    json_file: Path | None = typer.Option(None, "--json", help="Write detections (down to 0.05) as json."),
    csv_file: Path | None = typer.Option(None, "--csv", help="Write image, count, low-confidence as CSV."),
    stain: str = typer.Option("auto", "--stain", help="auto | brightfield | fluorescence"),
    score_threshold: float | None = typer.Option(
        None,
        "--score-threshold",
        min=0.0,
        max=1.0,
        help="Count detections scoring at least this (default: the model's validated threshold).",
    ),
    weights: Path | None = typer.Option(None, "--weights", help="Model file (default: the shipped model)."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="CPU threads (default: all)."),
    magnification: float = magnification_option(),
    runtime: Runtime = runtime_option(),
    views: int = views_option(),
) -> None:
    """Count the chromosomes in each metaphase image."""
    from deepace.data.images import find_images

    if stain not in ("auto", "brightfield", "fluorescence"):
        raise typer.BadParameter("--stain must be auto, brightfield or fluorescence")
    inputs = list(paths or [])
    if examples:
        inputs.append(EXAMPLES_DIR)
    if not inputs:
        raise typer.BadParameter("give image files or folders, or --examples")
    err = Console(stderr=True)
    if out is not None:
        ready_folder(out, "--out")
    for path, option in ((json_file, "--json"), (csv_file, "--csv")):
        if path is not None:
            ready_file(path, option)
    missing = [p for p in inputs if not Path(p).exists()]
    images = find_images([p for p in inputs if Path(p).exists()])
    if out is not None:  # annotated copies from an earlier run into a folder among the inputs are no cells
        images = [p for p in images if not p.resolve().is_relative_to(out.resolve())]
    if not images and not missing:
        err.print("no images found")
        raise typer.Exit(1)
    counter = loaded(
        counter_maker(weights, stain, score_threshold, magnification, runtime, views, threads), err
    )
    results = counter.count_paths(images, progress=True)
    _print_table(results, counter)
    warn_about_magnification(counter, results, err)
    warn_about_repeated_pixels(results, err)
    note_faint_images(results, err)
    note_denoised_images(results, err)
    warn_about_forced_stain(results, stain, err)
    failed = [r for r in results if r.error] + [_missing(p) for p in missing]
    if out is not None:
        _write_annotated(results, out)
    if json_file is not None:
        from deepace.data.predictions import ImagePrediction, write_predictions

        write_predictions([ImagePrediction.from_result(r) for r in results if not r.error], json_file)
    if csv_file is not None:
        _write_csv(results, csv_file)
    if failed:
        err.print(f"[red]{len(failed)} file(s) could not be counted:[/red]")
        for r in failed:
            err.print(f"  {r.error}")
        raise typer.Exit(1)


def counter_maker(
    weights: Path | None,
    stain: str,
    score_threshold: float | None,
    magnification: float,
    runtime: Runtime,
    views: int,
    num_threads: int | None = None,
) -> Callable[[], Counter]:
    """A function that loads the model into a Counter with these options (`count` and `case` call it at
    once, `serve` when a cell first needs counting)."""

    def make() -> Counter:
        from deepace.inference import Counter

        return Counter(
            weights=weights,
            stain=stain,
            score_threshold=score_threshold,
            num_threads=num_threads,
            magnification=magnification,
            runtime=runtime.value,
            views=views,
        )

    return make


def loaded(make_counter: Callable[[], Counter], err: Console) -> Counter:
    """`make_counter()`, or exit 2 with one line when its model file cannot be read."""
    from deepace.inference import ModelFileError

    try:
        return make_counter()
    except ModelFileError as e:
        err.print(f"[red]cannot load the model: {e}[/red]")
        raise typer.Exit(2) from e


def warn_about_magnification(counter, results, console: Console) -> None:  # noqa: ANN001
    """Advise --magnification when the chromosomes of the counted images look far from the training size
    (deepace.magnification)."""
    from deepace.magnification import counted_images_advice

    advice = counted_images_advice(counter.detector, results, counter.stain, counter.magnification)
    for stain, factor in advice.items():
        console.print(
            f"[yellow]warning: the chromosomes in these {stain} images look about "
            f"{counter.magnification / factor:.1f}x the size of the model's training images' (at "
            f"--magnification {counter.magnification:g}); counts may be far off. Try --magnification "
            f"{factor:g}.[/yellow]"
        )


def warn_about_repeated_pixels(results, console: Console, listed: int = 5) -> None:  # noqa: ANN001
    """Warn about images enlarged by repeating pixels, which the model miscounts
    (CellResult.pixel_repetition): the first `listed` by name, the rest as a number."""
    blocky = [r for r in results if not r.error and r.pixel_repetition > 1]
    for r in blocky[:listed]:
        console.print(
            f"[yellow]warning: {r.image} looks enlarged {r.pixel_repetition}x by repeating pixels "
            f"(nearest-neighbour zoom); counts on such blocky images can be far off. Count the camera's "
            f"original image.[/yellow]"
        )
    if len(blocky) > listed:
        console.print(f"[yellow]warning: {len(blocky) - listed} more images look enlarged that way.[/yellow]")


def note_faint_images(results, console: Console) -> None:  # noqa: ANN001
    """Say which fluorescence images were faint and counted again with darkened chromosomes
    (CellResult.faint_ink_level, deepace/faint.py)."""
    faint = [r for r in results if not r.error and r.faint_ink_level is not None]
    if faint:
        names = _named(faint)
        console.print(
            f"note: {len(faint)} faint fluorescence image(s) counted again with their chromosomes darkened "
            f"(the paper's pre-processing whitens faint chromosomes): {names}"
        )


def note_denoised_images(results, console: Console) -> None:  # noqa: ANN001
    """Say which images were noisier than the training images and denoised before counting
    (CellResult.denoised_noise, deepace/data/noise.py)."""
    noisy = [r for r in results if not r.error and r.denoised_noise is not None]
    if noisy:
        names = _named(noisy)
        worst = max(r.denoised_noise for r in noisy)
        console.print(
            f"note: {len(noisy)} noisy image(s) (pixel noise up to σ {worst:.1f} grey levels; the training "
            f"images' is under 3) smoothed before counting; noise costs counts even so: {names}"
        )


def warn_about_forced_stain(results, stain: str, console: Console) -> None:  # noqa: ANN001
    """Warn about images that, read as the --stain given, look like the other stain
    (CellResult.other_stain_look)."""
    other = [r for r in results if not r.error and r.other_stain_look]
    if other:
        console.print(
            f"[yellow]warning: {len(other)} image(s) read with --stain {stain} look like the other stain "
            f"(a dark background where a light one was expected); their counts are likely wrong. Count them "
            f"with --stain auto: {_named(other)}[/yellow]"
        )


def _named(results, listed: int = 5) -> str:  # noqa: ANN001
    """The first `listed` results' image names, comma-separated, with an ellipsis if there are more."""
    more = " …" if len(results) > listed else ""
    return ", ".join(_display_name(r.image) for r in results[:listed]) + more


def _missing(path: Path):  # noqa: ANN202
    from deepace.inference import CellResult

    return CellResult(image=path, error=f"{path}: no such file or folder")


def _print_table(results, counter) -> None:  # noqa: ANN001
    table = Table(title="Chromosome counts")
    table.add_column("image", overflow="fold")
    table.add_column("count", justify="right")
    table.add_column("low-confidence", justify="right")
    table.add_column("threshold", justify="right")  # boxes scoring at least this are counted
    table.add_column("P(exact)", justify="right")
    several = counter.views > 1
    if several:
        table.add_column(f"counts in {counter.views} orientations", justify="right")
    for r in results:
        name = _display_name(Path(r.image))
        if r.error:
            table.add_row(name, "[red]error[/red]", "", "", "", *([""] if several else []))
        else:
            lo, hi = r.low_confidence_band
            low = f"{r.low_confidence} ({lo:.2f}-{hi:.2f})"
            row = [name, str(r.count), low, f"{r.score_threshold:.2f}", f"{r.exact_chance:.0%}"]
            table.add_row(*row, *([orientation_spread(r.view_counts)] if several else []))
    Console().print(table)


def orientation_spread(view_counts: tuple[int, ...] | None) -> str:
    """'46 in all' for a steady cell, else the lowest and highest count, e.g. '45-47'."""
    if not view_counts:
        return ""
    low, high = min(view_counts), max(view_counts)
    return f"{low} in all" if low == high else f"{low}-{high}"


def _display_name(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path) if not path.is_relative_to(EXAMPLES_DIR) else f"examples/{path.name}"


def _write_annotated(results, out: Path) -> None:  # noqa: ANN001
    from deepace.data.images import load_image
    from deepace.report.render import draw_detections

    out.mkdir(parents=True, exist_ok=True)
    names = annotated_names([Path(r.image) for r in results])
    for r in results:
        if r.error:
            continue
        picture = draw_detections(
            load_image(r.image), r.boxes, r.scores, r.score_threshold, r.low_confidence_band
        )
        name = names[Path(r.image)]
        for earlier in out.glob(f"{glob.escape(name)}_count*.png"):  # an earlier run's copy, other count
            earlier.unlink()
        picture.save(out / f"{name}_count{r.count}.png")


def annotated_names(images: list[Path]) -> dict[Path, str]:
    """A name per image for its annotated copy: its stem, or where two images share a stem (a.tif and
    a.png, or sub/a.jpg) its path from the images' common folder, so that no copy overwrites another."""
    from collections import Counter as Tally  # not deepace's Counter
    from os.path import commonpath

    stems = Tally(p.stem for p in images)
    if not images or max(stems.values()) == 1:
        return {p: p.stem for p in images}
    root = Path(commonpath([str(p.resolve().parent) for p in images]))
    return {
        p: p.stem if stems[p.stem] == 1 else "__".join(p.resolve().relative_to(root).parts) for p in images
    }


def _write_csv(results, path: Path) -> None:  # noqa: ANN001
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        header = ["image", "count", "low_confidence", "score_threshold", "exact_chance"]
        header += ["orientation_counts", "error"]
        writer.writerow(header)
        for r in results:
            writer.writerow(
                [
                    r.image,
                    "" if r.error else r.count,
                    "" if r.error else r.low_confidence,
                    r.score_threshold,
                    "" if r.error else round(r.exact_chance, 3),
                    " ".join(str(c) for c in r.view_counts or ()),
                    r.error or "",
                ]
            )


def register(app: typer.Typer) -> None:
    app.command("count")(count_command)
