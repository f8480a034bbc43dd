"""YOLO txt folders: one `<image stem>.txt` per image, lines `class cx cy w h` (normalised to 0..1),
and `classes.txt` with one class name per line (line number = class index)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deepace.data.coco import DEFAULT_CATEGORY, atomic_write_text, natural_key, with_size
from deepace.data.images import ImageReadError, find_images, image_size
from deepace.data.records import AnnotationError, ImageRecord, check_unique_stems

CLASSES_FILE = "classes.txt"


def read_classes(label_dir: Path) -> list[str] | None:
    f = label_dir / CLASSES_FILE
    if not f.is_file():
        return None
    return [line.strip() for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]


def default_image_dir(label_dir: Path) -> Path:
    """`images/` beside a `labels/` folder (the usual YOLO layout), else the label folder itself."""
    if label_dir.name == "labels" and (label_dir.parent / "images").is_dir():
        return label_dir.parent / "images"
    return label_dir


def parse_yolo_txt(txt: Path, width: int, height: int) -> tuple[np.ndarray, list[int]]:
    """Absolute xyxy boxes and class indices of one label file."""
    boxes: list[list[float]] = []
    classes: list[int] = []
    try:
        lines = txt.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise AnnotationError(f"{txt}: cannot read ({e})") from None
    for n, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 5:
            raise AnnotationError(f"{txt}: line {n}: expected 'class cx cy w h', got {line.strip()!r}")
        try:
            cls = int(parts[0])
            cx, cy, w, h = (float(v) for v in parts[1:])
        except ValueError:
            raise AnnotationError(f"{txt}: line {n}: not numbers: {line.strip()!r}") from None
        if cls < 0 or not all(math.isfinite(v) for v in (cx, cy, w, h)):
            raise AnnotationError(f"{txt}: line {n}: bad values: {line.strip()!r}")
        if w <= 0 or h <= 0:
            raise AnnotationError(f"{txt}: line {n}: box has zero or negative size")
        boxes.append(
            [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height]
        )
        classes.append(cls)
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4), classes


def read_yolo_folder(
    label_dir: str | os.PathLike[str],
    image_dir: str | os.PathLike[str] | None = None,
    classes: Sequence[str] | None = None,
    errors: list[AnnotationError] | None = None,
) -> list[ImageRecord]:
    """Records of every image in `image_dir` (default: `../images` beside `labels/`, else `label_dir`).

    An image without a txt has no boxes (YOLO's convention); a txt without an image is an error.
    Class names come from `classes`, else `classes.txt`, else the class index as text; labels are None
    when the only class is 'chromosome'. Problems raise AnnotationError, or with an `errors` list are
    appended there and the image skipped.
    """
    labels_path = Path(label_dir)
    if not labels_path.is_dir():
        raise AnnotationError(f"{labels_path}: not a folder")
    images_path = Path(image_dir) if image_dir is not None else default_image_dir(labels_path)
    names = list(classes) if classes is not None else read_classes(labels_path)
    by_stem: dict[str, Path] = {}
    for p in find_images(images_path) if images_path.is_dir() else []:
        by_stem.setdefault(p.stem, p)

    def report(e: AnnotationError) -> None:
        if errors is None:
            raise e
        errors.append(e)

    for txt in sorted(labels_path.glob("*.txt")):
        if txt.name != CLASSES_FILE and txt.stem not in by_stem:
            report(AnnotationError(f"{txt}: no image named {txt.stem}.* in {images_path}"))

    out: list[ImageRecord] = []
    for stem, image in sorted(by_stem.items(), key=lambda kv: kv[1]):
        try:
            try:
                width, height = image_size(image)
            except ImageReadError as e:
                raise AnnotationError(str(e)) from None
            txt = labels_path / f"{stem}.txt"
            boxes, cls = parse_yolo_txt(txt, width, height) if txt.is_file() else (None, [])
            labels = [_class_name(c, names, txt) for c in cls]
            plain = all(n == DEFAULT_CATEGORY for n in labels) and (
                names is None or names == [DEFAULT_CATEGORY]
            )
            record = ImageRecord(
                path=image,
                boxes=boxes if boxes is not None else np.zeros((0, 4), np.float32),
                labels=None if plain else labels,
                width=width,
                height=height,
            )
            try:
                record.validate()
            except AnnotationError as e:
                raise AnnotationError(f"{txt}: {e}") from None
            out.append(record)
        except AnnotationError as e:
            report(e)
    return out


def _class_name(cls: int, names: list[str] | None, txt: Path) -> str:
    if names is None:
        return DEFAULT_CATEGORY if cls == 0 else str(cls)
    if cls >= len(names):
        raise AnnotationError(f"{txt}: class {cls} but {CLASSES_FILE} has only {len(names)} names")
    return names[cls]


def write_yolo_folder(
    records: Sequence[ImageRecord],
    out_dir: str | os.PathLike[str],
    classes: Sequence[str] | None = None,
) -> list[Path]:
    """`<stem>.txt` per record plus `classes.txt` in `out_dir`; returns the label files written.

    Needs each image's size (from the record, else the image header): AnnotationError if unknown.
    """
    out = Path(out_dir)
    used: set[str] = set()
    for r in records:
        used.update(r.labels if r.labels is not None else [DEFAULT_CATEGORY] * bool(r.count))
    names = list(classes) if classes is not None else (sorted(used, key=natural_key) or [DEFAULT_CATEGORY])
    missing = used - set(names)
    if missing:
        raise AnnotationError(f"labels not among the classes: {', '.join(sorted(missing))}")
    index = {n: i for i, n in enumerate(names)}
    check_unique_stems(records, "YOLO")

    prepared = [with_size(r) for r in records]
    for r in prepared:
        if r.width is None or r.height is None:
            raise AnnotationError(f"{r.path}: image size unknown (and the image cannot be read)")
        r.validate()
    written: list[Path] = []
    for r in prepared:
        labels = r.labels if r.labels is not None else [DEFAULT_CATEGORY] * r.count
        lines = []
        for (x1, y1, x2, y2), label in zip(r.boxes.tolist(), labels, strict=True):
            w, h = float(r.width), float(r.height)  # type: ignore[arg-type]
            cx, cy, bw, bh = (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h
            lines.append(f"{index[label]} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}")
        dest = out / f"{r.path.stem}.txt"
        atomic_write_text(dest, "".join(line + "\n" for line in lines))
        written.append(dest)
    atomic_write_text(out / CLASSES_FILE, "".join(n + "\n" for n in names))
    return written
