"""COCO json, DeepACE's exchange format for boxes.

Beyond plain COCO, each `images` entry may carry `expected_count` (the cell's chromosome count),
`karyotype` (ISCN) and `meta` (a json object of further facts); they are kept through read and write.
Boxes are COCO [x, y, w, h] in the file and (x1, y1, x2, y2) in `ImageRecord`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deepace.data.records import AnnotationError, ImageRecord

DEFAULT_CATEGORY = "chromosome"


def natural_key(name: str) -> tuple:
    """Sort key that puts 'C6' before 'C10' (and A1…G22 before X, Y)."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and os.replace, with the usual
    file permissions (not mkstemp's 0600)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def stored_path(image: Path, base: Path) -> str:
    """`image` relative to `base` (posix) when it lies inside it, else absolute."""
    image = Path(os.path.abspath(image))
    try:
        return image.relative_to(Path(os.path.abspath(base))).as_posix()
    except ValueError:
        return str(image)


def resolve_path(name: str, base: Path) -> Path:
    p = Path(name)
    if not p.is_absolute() and "\\" in name and not (base / p).exists():
        p = Path(name.replace("\\", "/"))  # written on Windows
    return p if p.is_absolute() else Path(os.path.normpath(base / p))


def _fail(src: Path, reason: str) -> AnnotationError:
    return AnnotationError(f"{src}: {reason}")


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError
    return float(value)


def _opt_int(value: Any, what: str, where: str, src: Path) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise _fail(src, f"{where}: {what} must be an integer, not {value!r}")
    return int(value)


def _load_json(src: Path) -> dict[str, Any]:
    try:
        text = src.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise _fail(src, "no such file") from e
    except (OSError, UnicodeDecodeError) as e:
        raise _fail(src, f"cannot read: {e}") from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise _fail(src, f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from e
    if not isinstance(data, dict):
        raise _fail(src, "not a COCO file (top level is not an object)")
    if not isinstance(data.get("images"), list):
        raise _fail(src, "not a COCO file (no 'images' list)")
    if not isinstance(data.get("annotations", []), list):
        raise _fail(src, "'annotations' is not a list")
    if not isinstance(data.get("categories", []), list):
        raise _fail(src, "'categories' is not a list")
    return data


def _categories(data: dict[str, Any], src: Path) -> dict[Any, str]:
    names: dict[Any, str] = {}
    for i, cat in enumerate(data.get("categories", [])):
        if not isinstance(cat, dict) or "id" not in cat:
            raise _fail(src, f"category {i} has no 'id'")
        names[cat["id"]] = str(cat.get("name", cat["id"]))
    return names


def _image_record(entry: Any, i: int, base: Path, src: Path) -> tuple[Any, ImageRecord]:
    if not isinstance(entry, dict):
        raise _fail(src, f"images[{i}] is not an object")
    for key in ("id", "file_name"):
        if key not in entry:
            raise _fail(src, f"images[{i}] has no '{key}'")
    name = entry["file_name"]
    if not isinstance(name, str) or not name:
        raise _fail(src, f"images[{i}] has an empty or non-text 'file_name'")
    where = f"image {name!r}"
    meta = entry.get("meta") or {}
    if not isinstance(meta, dict):
        raise _fail(src, f"{where}: 'meta' is not an object")
    karyotype = entry.get("karyotype")
    record = ImageRecord(
        path=resolve_path(name, base),
        width=_opt_int(entry.get("width"), "width", where, src),
        height=_opt_int(entry.get("height"), "height", where, src),
        expected_count=_opt_int(entry.get("expected_count"), "expected_count", where, src),
        karyotype=None if karyotype is None else str(karyotype),
        meta=dict(meta),
    )
    return entry["id"], record


def _bbox_xyxy(ann: dict[str, Any], where: str, src: Path) -> list[float]:
    box = ann.get("bbox")
    if not isinstance(box, list) or len(box) != 4:
        raise _fail(src, f"{where}: 'bbox' must be [x, y, width, height], got {box!r}")
    try:
        x, y, w, h = (_number(v) for v in box)
    except TypeError:
        raise _fail(src, f"{where}: 'bbox' has a non-number: {box!r}") from None
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise _fail(src, f"{where}: 'bbox' has a non-finite number: {box!r}")
    if w <= 0 or h <= 0:
        raise _fail(src, f"{where}: box [{x:g}, {y:g}, {w:g}, {h:g}] has zero or negative size")
    return [x, y, x + w, y + h]


def read_coco(
    path: str | os.PathLike[str],
    image_root: str | os.PathLike[str] | None = None,
    check_images: bool = True,
    errors: list[AnnotationError] | None = None,
) -> list[ImageRecord]:
    """Records of a COCO json, in the file's image order.

    Relative `file_name`s resolve against `image_root`, else the json's folder. With `check_images`, a
    missing image file is an error. Problems of the file itself raise AnnotationError; problems of one image
    (bad box, missing file) raise too unless `errors` is a list: then they are appended and the image is
    skipped.
    """
    src = Path(path)
    data = _load_json(src)
    base = Path(image_root) if image_root is not None else src.parent
    cat_names = _categories(data, src)
    plain = set(cat_names.values()) <= {DEFAULT_CATEGORY}

    order: list[Any] = []
    records: dict[Any, ImageRecord] = {}
    for i, entry in enumerate(data["images"]):
        image_id, record = _image_record(entry, i, base, src)
        if image_id in records:
            raise _fail(src, f"image id {image_id!r} appears twice")
        order.append(image_id)
        records[image_id] = record

    boxes: dict[Any, list[list[float]]] = {k: [] for k in order}
    labels: dict[Any, list[str]] = {k: [] for k in order}
    bad: dict[Any, AnnotationError] = {}
    for i, ann in enumerate(data.get("annotations", [])):
        if not isinstance(ann, dict) or "image_id" not in ann:
            raise _fail(src, f"annotations[{i}] has no 'image_id'")
        image_id = ann["image_id"]
        if image_id not in records:
            raise _fail(src, f"annotations[{i}] refers to unknown image id {image_id!r}")
        where = f"image {records[image_id].path.name!r}, annotations[{i}]"
        try:
            xyxy = _bbox_xyxy(ann, where, src)
            cat = ann.get("category_id")
            if cat_names and cat not in cat_names:
                raise _fail(src, f"{where}: unknown category_id {cat!r}")
        except AnnotationError as e:
            if errors is None:
                raise
            bad.setdefault(image_id, e)
            continue
        boxes[image_id].append(xyxy)
        labels[image_id].append(cat_names.get(cat, DEFAULT_CATEGORY))

    out: list[ImageRecord] = []
    for image_id in order:
        record = records[image_id]
        try:
            if image_id in bad:
                raise bad[image_id]
            record.boxes = np.asarray(boxes[image_id], dtype=np.float32).reshape(-1, 4)
            record.labels = None if plain else labels[image_id]
            try:
                record.validate()
            except AnnotationError as e:
                raise _fail(src, str(e)) from None
            if check_images and not record.path.is_file():
                raise _fail(src, f"image file not found: {record.path}")
        except AnnotationError as e:
            if errors is None:
                raise
            errors.append(e)
            continue
        out.append(record)
    return out


def with_size(record: ImageRecord) -> ImageRecord:
    """`record` itself if its size is known, else a copy with the size read from the image header
    (unchanged if the image cannot be read)."""
    if record.width is not None and record.height is not None:
        return record
    from deepace.data.images import ImageReadError, image_size

    try:
        width, height = image_size(record.path)
    except ImageReadError:
        return record
    return dataclasses.replace(record, width=width, height=height)


def _jsonable(meta: dict[str, Any], where: Path) -> dict[str, Any]:
    try:
        json.dumps(meta)
    except (TypeError, ValueError) as e:
        raise AnnotationError(f"{where}: meta cannot be written as JSON: {e}") from e
    return meta


def coco_dict(
    records: Sequence[ImageRecord],
    base: Path,
    categories: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The COCO dictionary for `records`, image paths stored relative to `base` where inside it."""
    names: set[str] = set()
    for r in records:
        names.update(r.labels if r.labels is not None else ([DEFAULT_CATEGORY] if r.count else []))
    if categories is None:
        ordered = sorted(names, key=natural_key) or [DEFAULT_CATEGORY]
    else:
        missing = names - set(categories)
        if missing:
            raise AnnotationError(f"labels not among the categories: {', '.join(sorted(missing))}")
        ordered = list(categories)
    cat_id = {name: i + 1 for i, name in enumerate(ordered)}

    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id, r in enumerate(records, start=1):
        r = with_size(r)
        r.validate()
        entry: dict[str, Any] = {"id": image_id, "file_name": stored_path(r.path, base)}
        if r.width is not None and r.height is not None:
            entry["width"], entry["height"] = int(r.width), int(r.height)
        if r.expected_count is not None:
            entry["expected_count"] = int(r.expected_count)
        if r.karyotype is not None:
            entry["karyotype"] = r.karyotype
        if r.meta:
            entry["meta"] = _jsonable(r.meta, r.path)
        images.append(entry)
        labels = r.labels if r.labels is not None else [DEFAULT_CATEGORY] * r.count
        for (x1, y1, x2, y2), label in zip(r.boxes.tolist(), labels, strict=True):
            w, h = x2 - x1, y2 - y1
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cat_id[label],
                    "bbox": [round(x1, 3), round(y1, 3), round(w, 3), round(h, 3)],
                    "area": round(w * h, 3),
                    "iscrowd": 0,
                }
            )
    return {
        "info": {"description": "DeepACE chromosome boxes", "version": "1.0"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": n, "supercategory": "chromosome"} for n, i in cat_id.items()],
    }


def write_coco(
    records: Sequence[ImageRecord],
    path: str | os.PathLike[str],
    image_root: str | os.PathLike[str] | None = None,
    categories: Sequence[str] | None = None,
) -> None:
    """Write `records` as COCO json, atomically. Raises AnnotationError for a bad box.

    Image paths are stored relative to `image_root` (default: the json's folder) when inside it, else
    absolute. Categories are the records' label names (natural order, or `categories` if given), or the
    single 'chromosome' when no record has labels. Missing image sizes are read from the image headers
    (the records are not changed).
    """
    dest = Path(path)
    base = Path(image_root) if image_root is not None else dest.parent
    data = coco_dict(records, base, categories)
    atomic_write_text(dest, json.dumps(data, indent=1, ensure_ascii=False) + "\n")
