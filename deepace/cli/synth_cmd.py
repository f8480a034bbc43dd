"""`deepace synth`: write a synthetic data set of metaphase spreads with exact boxes (COCO json)."""

from __future__ import annotations

from pathlib import Path

import typer


def synth_command(
    n: int = typer.Option(..., "--n", min=1, help="Number of images."),
    out: Path = typer.Option(..., "--out", help="Output folder (images/ and annotations.json)."),
    count: int = typer.Option(46, "--count", min=1, help="Chromosomes per image."),
    seed: int = typer.Option(0, "--seed", help="Random seed (the same seed gives the same images)."),
    size: int = typer.Option(512, "--size", min=64, help="Image side in pixels."),
) -> None:
    """Write N synthetic G-banded metaphase spreads and their boxes as COCO json."""
    from deepace.data.synth import write_synthetic_dataset

    try:
        path = write_synthetic_dataset(out, n, count=count, seed=seed, size=(size, size))
    except ValueError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from error
    typer.echo(f"wrote {n} images with {count} chromosomes each: {path}")


def register(app: typer.Typer) -> None:
    app.command("synth")(synth_command)
