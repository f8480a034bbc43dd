"""`deepace data ...`: convert, split, import and inspect annotation sets."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from enum import Enum
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from deepace.data.overlaps import identical_box_pairs, largest_pair_iou
from deepace.data.records import AnnotationError, ImageRecord
from deepace.provenance import identical_images

data_app = typer.Typer(
    help="Convert, split, import and inspect annotation sets (COCO json, Pascal VOC, YOLO).",
    no_args_is_help=True,
)
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


class Format(str, Enum):
    coco = "coco"
    voc = "voc"
    yolo = "yolo"


class GroupBy(str, Enum):
    none = "none"
    parent = "parent"


def detect_format(path: Path) -> str:
    """'coco', 'voc', 'yolo' or 'taichung' for an annotation file or folder."""
    if path.is_file():
        return "coco"
    if not path.is_dir():
        raise AnnotationError(f"{path}: no such file or folder")
    if (path / "annotations").is_dir() and (path / "counts.csv").is_file():
        return "taichung"
    if any(path.glob("*.xml")):
        return "voc"
    if any(p.name != "classes.txt" for p in path.glob("*.txt")):
        return "yolo"
    raise AnnotationError(f"{path}: neither a COCO json nor a folder of VOC xml or YOLO txt files")


def read_any(
    path: Path, images: Path | None, errors: list[AnnotationError], check_images: bool = True
) -> list[ImageRecord]:
    """Records from a COCO json, VOC folder, YOLO folder or Taichung folder (auto-detected)."""
    kind = detect_format(path)
    if kind == "coco":
        from deepace.data.coco import read_coco

        return read_coco(path, image_root=images, check_images=check_images, errors=errors)
    if kind == "voc":
        from deepace.data.voc import read_voc_folder

        return read_voc_folder(path, images, check_images=check_images, errors=errors)
    if kind == "yolo":
        from deepace.data.yolo import read_yolo_folder

        return read_yolo_folder(path, images, errors=errors)
    from deepace.data.taichung import read_taichung

    return read_taichung(path, check_images=check_images)


def _report_failures(errors: Sequence[Exception]) -> None:
    if not errors:
        return
    err_console.print(f"[red]{len(errors)} failed:[/red]")
    for e in errors:
        err_console.print(f"  {escape(str(e))}", soft_wrap=True)  # paths and messages may hold [brackets]
    raise typer.Exit(1)


def _fatal(e: Exception) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {escape(str(e))}", soft_wrap=True)
    return typer.Exit(1)


def _count_table(title: str, columns: dict[str, Sequence[ImageRecord]]) -> Table:
    table = Table(title=title)
    table.add_column("chromosomes (expected)", justify="right")
    counters = {name: Counter(r.expected_count for r in recs) for name, recs in columns.items()}
    for name in columns:
        table.add_column(name, justify="right")
    keys = sorted({k for c in counters.values() for k in c}, key=lambda k: (k is None, k or 0))
    for k in keys:
        table.add_row("unknown" if k is None else str(k), *(str(c.get(k, 0)) for c in counters.values()))
    table.add_row("total", *(str(len(recs)) for recs in columns.values()), style="bold")
    return table


def _agreement(records: Sequence[ImageRecord]) -> tuple[int, int, list[ImageRecord]]:
    """(images with an expected count, of which box count matches, the records that differ)."""
    known = [r for r in records if r.expected_count is not None]
    differ = [r for r in known if r.count != r.expected_count]
    return len(known), len(known) - len(differ), differ


def _print_agreement(records: Sequence[ImageRecord], list_differing: bool = True) -> None:
    known, same, differ = _agreement(records)
    if not known:
        console.print("No image has an expected chromosome count.")
        return
    share = 100.0 * same / known
    console.print(f"Boxes = expected count in {same} of {known} images with a known count ({share:.1f}%).")
    if differ and list_differing:
        table = Table(title="Images whose box count differs from the expected count")
        table.add_column("image", overflow="fold")
        for col in ("boxes", "expected", "difference"):
            table.add_column(col, justify="right")
        for r in differ:
            table.add_row(
                str(r.path), str(r.count), str(r.expected_count), f"{r.count - r.expected_count:+d}"
            )
        console.print(table)


def _write(records: Sequence[ImageRecord], fmt: Format, out: Path) -> None:
    if fmt is Format.coco:
        from deepace.data.coco import write_coco

        write_coco(records, out)
    elif fmt is Format.voc:
        from deepace.data.voc import write_voc_folder

        write_voc_folder(records, out)
    else:
        from deepace.data.yolo import write_yolo_folder

        write_yolo_folder(records, out)


@data_app.command("convert")
def convert(
    source: Path = typer.Argument(..., help="COCO .json, or a folder of VOC .xml or YOLO .txt files."),
    to: Format = typer.Option(..., "--to", help="Output format."),
    out: Path = typer.Option(..., "--out", help="Output .json (coco) or folder (voc, yolo)."),
    images: Path | None = typer.Option(None, "--images", help="Image folder (default: found next to IN)."),
) -> None:
    """Convert boxes between COCO json, Pascal VOC and YOLO."""
    errors: list[AnnotationError] = []
    try:
        records = read_any(source, images, errors)
        _write(records, to, out)
    except AnnotationError as e:
        raise _fatal(e) from None
    boxes = sum(r.count for r in records)
    console.print(f"Wrote {len(records)} images, {boxes} boxes as {to.value} to {out}")
    _report_failures(errors)


VAL_LIST_HELP = (
    "Text file naming the validation images, one path relative to the data folder per line (e.g. "
    "benchmarks/splits/taichung_val.txt): reproduces a recorded split instead of drawing one."
)


COPIES_HELP = (
    "Keep images with the same content (copies under other names) on one side of a drawn split, so that "
    "no validation cell is a training cell; --copies-anywhere draws as if they were different images."
)


def _split(  # noqa: ANN202
    records: list,
    val_fraction: float,
    seed: int,
    group,  # noqa: ANN001
    val_list: Path | None,
    copies_together: bool,
):
    """(train, val, copies): `copies` the sets of images with the same content, found once for the draw and
    for the warning."""
    from deepace.data.splits import split_by_list, split_records

    copies = identical_images(r.path for r in records)
    if val_list is None:
        together = copies if copies_together else []
        if together:
            console.print(f"{len(together)} set(s) of images with the same content kept on one side")
        train, val = split_records(
            records, val_fraction=val_fraction, seed=seed, group=group, together=together
        )
        return train, val, copies
    try:
        return (*split_by_list(records, val_list.read_text().splitlines()), copies)
    except (OSError, ValueError) as e:
        raise AnnotationError(f"{val_list}: {e}") from None


def _write_split(
    train: list, val: list, copies: list[list[Path]], out: Path, categories: list[str] | None = None
) -> None:
    """Write OUT/train.json and OUT/val.json and show the chromosome counts on each side."""
    from deepace.data.coco import write_coco

    write_coco(train, out / "train.json", categories=categories)
    write_coco(val, out / "val.json", categories=categories)
    console.print(f"train: {len(train)} images -> {out / 'train.json'}")
    console.print(f"val:   {len(val)} images -> {out / 'val.json'}")
    console.print(_count_table("Chromosome counts", {"train": train, "val": val}))
    _warn_identical_across(val, copies)


def _warn_identical_across(val: list, copies: list[list[Path]]) -> None:
    """Name validation images whose content is a training image's (a copy under another name): the model
    would be validated on a cell it was trained on. The split is not changed, so a recorded one stays."""
    in_val = {r.path for r in val}
    straddling = [g for g in copies if in_val & set(g) and set(g) - in_val]
    if straddling:
        shown = "; ".join(" = ".join(p.name for p in group) for group in straddling[:5])
        console.print(
            f"[yellow]warning: {len(straddling)} image(s) in val have the same content as a training image "
            f"({shown}{'; …' if len(straddling) > 5 else ''}): move them to one side to validate honestly"
        )


@data_app.command("taichung")
def taichung(
    root: Path = typer.Argument(..., help="The Taichung folder (images/, annotations/, counts.csv)."),
    out: Path = typer.Option(..., "--out", help="Folder for train.json and val.json."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", min=0.0, max=0.99),
    seed: int = typer.Option(0, "--seed"),
    val_list: Path | None = typer.Option(None, "--val-list", help=VAL_LIST_HELP),
    copies_together: bool = typer.Option(True, "--copies-together/--copies-anywhere", help=COPIES_HELP),
) -> None:
    """Split the Taichung set (stratified by chromosome count) into COCO train.json and val.json."""
    from deepace.data.taichung import TAICHUNG_CLASSES, read_taichung

    try:
        records = read_taichung(root)
        train, val, copies = _split(records, val_fraction, seed, None, val_list, copies_together)
        _write_split(train, val, copies, out, categories=TAICHUNG_CLASSES)
    except AnnotationError as e:
        raise _fatal(e) from None


@data_app.command("split")
def split(
    coco: Path = typer.Argument(..., help="COCO json to split."),
    out: Path = typer.Option(..., "--out", help="Folder for train.json and val.json."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", min=0.0, max=0.99),
    seed: int = typer.Option(0, "--seed"),
    group_by: GroupBy = typer.Option(
        GroupBy.none, "--group-by", help="'parent': all images of one folder (e.g. slide) on one side."
    ),
    val_list: Path | None = typer.Option(None, "--val-list", help=VAL_LIST_HELP),
    copies_together: bool = typer.Option(True, "--copies-together/--copies-anywhere", help=COPIES_HELP),
) -> None:
    """Split a COCO json into train.json and val.json, stratified by expected count."""
    from deepace.data.coco import read_coco
    from deepace.data.splits import parent_group

    try:
        records = read_coco(coco, check_images=False)
        group = parent_group if group_by is GroupBy.parent else None
        train, val, copies = _split(records, val_fraction, seed, group, val_list, copies_together)
        _write_split(train, val, copies, out)
    except AnnotationError as e:
        raise _fatal(e) from None


@data_app.command("import-masks")
def import_masks(
    root: Path = typer.Argument(..., help="Folder of images with expert label images (e.g. M-FISH)."),
    out: Path = typer.Option(..., "--out", help="COCO json to write."),
) -> None:
    """Turn expert label images into boxes (COCO json with karyotype and expected count)."""
    from deepace.data.coco import write_coco

    try:
        from deepace.data.masks import import_mask_folder

        records = import_mask_folder(root)
        write_coco(records, out)
    except (AnnotationError, OSError, ImportError) as e:
        raise _fatal(e) from None
    console.print(f"Wrote {len(records)} images, {sum(r.count for r in records)} boxes to {out}")
    _print_agreement(records)


def _percentile_table(records: Sequence[ImageRecord]) -> Table:
    boxes = np.concatenate([r.boxes for r in records]) if records else np.zeros((0, 4), np.float32)
    table = Table(title="Box size (pixels)")
    qs = (0, 5, 25, 50, 75, 95, 100)
    table.add_column("")
    for q in qs:
        table.add_column({0: "min", 100: "max"}.get(q, f"p{q}"), justify="right")
    if len(boxes):
        for name, values in (("width", boxes[:, 2] - boxes[:, 0]), ("height", boxes[:, 3] - boxes[:, 1])):
            table.add_row(name, *(f"{v:.1f}" for v in np.percentile(values, qs)))
    return table


@data_app.command("stats")
def stats(
    source: Path = typer.Argument(..., help="COCO .json, or a folder of VOC .xml or YOLO .txt files."),
    images: Path | None = typer.Option(None, "--images", help="Image folder (default: found next to FILE)."),
) -> None:
    """Images, boxes, box sizes and agreement of box counts with the expected counts."""
    errors: list[AnnotationError] = []
    try:
        records = read_any(source, images, errors, check_images=False)
    except AnnotationError as e:
        raise _fatal(e) from None
    counts = np.array([r.count for r in records]) if records else np.zeros(0)
    summary = Table(title=str(source))
    summary.add_column("")
    summary.add_column("value", justify="right")
    summary.add_row("images", str(len(records)))
    summary.add_row("boxes", str(int(counts.sum())))
    if len(counts):
        summary.add_row(
            "boxes per image (min / median / max)", f"{counts.min()} / {np.median(counts):g} / {counts.max()}"
        )
    missing = sum(not r.path.is_file() for r in records)
    summary.add_row("image files missing", str(missing))
    identical = [identical_box_pairs(r.boxes) for r in records]
    summary.add_row(
        "images with two identical boxes (boxes repeated)",
        f"{sum(n > 0 for n in identical)} ({sum(identical)})",
    )
    repeats = identical_images(r.path for r in records)
    summary.add_row(
        "images with the same content as another (extra copies)",
        f"{sum(len(g) for g in repeats)} ({sum(len(g) - 1 for g in repeats)})",
    )
    crowded = sum(largest_pair_iou(r.boxes) > 0.5 for r in records)
    summary.add_row("images with two boxes at IoU > 0.5 (NMS 0.5 keeps one)", str(crowded))
    console.print(summary)
    console.print(_percentile_table(records))
    _print_agreement(records)
    _report_failures(errors)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
