"""The Taichung G-band set (Tseng et al., Sci. Data 2023): images/, annotations/ (VOC), counts.csv."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from deepace.data.records import AnnotationError, ImageRecord
from deepace.data.voc import parse_voc_xml, voc_to_record

TAICHUNG_CLASSES: tuple[str, ...] = (
    "A1", "A2", "A3", "B4", "B5", "C6", "C7", "C8", "C9", "C10", "C11", "C12",
    "D13", "D14", "D15", "E16", "E17", "E18", "F19", "F20", "G21", "G22", "X", "Y",
)  # fmt: skip


def read_counts_csv(path: str | os.PathLike[str]) -> dict[str, dict[str, str]]:
    """Rows of counts.csv keyed by image file name."""
    src = Path(path)
    try:
        with open(src, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise AnnotationError(f"{src}: cannot read ({e.strerror or e})") from None
    if rows and not {"image", "chromosome_count"} <= set(rows[0]):
        raise AnnotationError(f"{src}: needs columns 'image' and 'chromosome_count'")
    return {row["image"]: row for row in rows}


def _apply_counts(record: ImageRecord, row: dict[str, str] | None, src: Path) -> None:
    if row is None:
        return
    count = (row.get("chromosome_count") or "").strip()
    if count:
        try:
            record.expected_count = int(count)
        except ValueError:
            raise AnnotationError(
                f"{src}: {record.path.name}: chromosome_count {count!r} is no integer"
            ) from None
    record.meta["list"] = row.get("list") or ""
    record.meta["abnormal_pair"] = row.get("abnormal_pair") or ""
    record.meta["difficult"] = (row.get("difficult") or "0").strip() not in ("0", "")


def read_taichung(root: str | os.PathLike[str], check_images: bool = True) -> list[ImageRecord]:
    """All annotated images of a Taichung folder, sorted by file name.

    Boxes carry their 24 class names (A1…Y); `expected_count` comes from counts.csv, and `meta` holds
    'list' (normal / number_abnormalities / structural_abnormalities), 'abnormal_pair' and 'difficult'.
    """
    base = Path(root)
    ann_dir, image_dir = base / "annotations", base / "images"
    if not ann_dir.is_dir():
        raise AnnotationError(f"{base}: no annotations/ folder (is this the Taichung set?)")
    counts_path = base / "counts.csv"
    counts = read_counts_csv(counts_path) if counts_path.is_file() else {}
    existing = {p.name for p in image_dir.iterdir()} if image_dir.is_dir() else set()
    records: list[ImageRecord] = []
    for xml in sorted(ann_dir.glob("*.xml")):
        voc = parse_voc_xml(xml)
        name = voc.filename or f"{xml.stem}.jpg"
        if check_images and name not in existing:
            raise AnnotationError(f"{xml}: image file not found: {image_dir / name}")
        record = voc_to_record(voc, image_dir / name)
        _apply_counts(record, counts.get(name), counts_path)
        records.append(record)
    return records
