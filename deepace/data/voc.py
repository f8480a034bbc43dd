"""Pascal VOC xml folders (one xml per image, as LabelImg writes them).

Coordinates are kept as written (no 1-based shift), so LabelImg files round-trip exactly. Non-standard
`expected_count` and `karyotype` elements are written when known and read back.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepace.data.coco import DEFAULT_CATEGORY, atomic_write_text, with_size
from deepace.data.records import AnnotationError, ImageRecord, check_unique_stems

_IMAGE_DIR_NAMES = ("images", "JPEGImages", "Images", "imgs")


@dataclass
class VocFile:
    """What one VOC xml says, before the image file is located."""

    xml: Path
    filename: str | None
    path: str | None
    width: int | None
    height: int | None
    boxes: list[list[float]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    difficult: list[bool] = field(default_factory=list)
    expected_count: int | None = None
    karyotype: str | None = None


def _int_or_none(text: str | None, what: str, xml: Path) -> int | None:
    if text is None or not text.strip():
        return None
    try:
        return int(float(text))
    except ValueError:
        raise AnnotationError(f"{xml}: {what} is not a number: {text!r}") from None


def parse_voc_xml(xml: str | os.PathLike[str]) -> VocFile:
    """Parse one VOC file; AnnotationError naming the file for broken xml or boxes."""
    src = Path(xml)
    try:
        root = ET.parse(src).getroot()
    except FileNotFoundError:
        raise AnnotationError(f"{src}: no such file") from None
    except (ET.ParseError, OSError) as e:
        raise AnnotationError(f"{src}: not valid XML ({e})") from None
    if root.tag != "annotation":
        raise AnnotationError(f"{src}: not a Pascal VOC file (root element <{root.tag}>)")
    out = VocFile(
        xml=src,
        filename=(root.findtext("filename") or "").strip() or None,
        path=(root.findtext("path") or "").strip() or None,
        width=_int_or_none(root.findtext("size/width"), "width", src),
        height=_int_or_none(root.findtext("size/height"), "height", src),
        expected_count=_int_or_none(root.findtext("expected_count"), "expected_count", src),
        karyotype=(root.findtext("karyotype") or "").strip() or None,
    )
    for i, obj in enumerate(root.iter("object")):
        box = obj.find("bndbox")
        if box is None:
            raise AnnotationError(f"{src}: object {i} has no <bndbox>")
        try:
            coords = [float(box.findtext(k) or "") for k in ("xmin", "ymin", "xmax", "ymax")]
        except ValueError:
            raise AnnotationError(f"{src}: object {i} has a missing or non-number box coordinate") from None
        out.boxes.append(coords)
        out.names.append((obj.findtext("name") or DEFAULT_CATEGORY).strip())
        out.difficult.append((obj.findtext("difficult") or "0").strip() not in ("0", ""))
    return out


def _find_image(voc: VocFile, ann_dir: Path, image_dir: Path | None) -> Path:
    name = voc.filename or voc.xml.stem
    candidates: list[Path] = []
    if image_dir is not None:
        candidates.append(image_dir / name)
    else:
        if voc.path:
            candidates.append(Path(voc.path))
        candidates.append(ann_dir / name)
        candidates += [ann_dir.parent / d / name for d in _IMAGE_DIR_NAMES]
    for c in candidates:
        if c.is_file():
            return c
    folder = image_dir if image_dir is not None else ann_dir
    return folder / name  # not found: the caller decides


def voc_to_record(voc: VocFile, image: Path) -> ImageRecord:
    """An ImageRecord from parsed VOC data; labels None when every box is plain 'chromosome'."""
    plain = all(n == DEFAULT_CATEGORY for n in voc.names)
    record = ImageRecord(
        path=image,
        boxes=np.asarray(voc.boxes, dtype=np.float32).reshape(-1, 4),
        labels=None if plain else list(voc.names),
        width=voc.width,
        height=voc.height,
        expected_count=voc.expected_count,
        karyotype=voc.karyotype,
    )
    if any(voc.difficult):
        record.meta["difficult_boxes"] = [int(d) for d in voc.difficult]
    try:
        record.validate()
    except AnnotationError as e:
        raise AnnotationError(f"{voc.xml}: {e}") from None
    return record


def read_voc_folder(
    ann_dir: str | os.PathLike[str],
    image_dir: str | os.PathLike[str] | None = None,
    check_images: bool = True,
    errors: list[AnnotationError] | None = None,
) -> list[ImageRecord]:
    """Records of every `*.xml` in `ann_dir` (sorted by name).

    Images are `image_dir/<filename>`; without `image_dir` the xml's <path>, the xml folder and a sibling
    `images`/`JPEGImages` folder are tried. A broken file raises AnnotationError, or with an `errors`
    list is appended there and skipped.
    """
    folder = Path(ann_dir)
    if not folder.is_dir():
        raise AnnotationError(f"{folder}: not a folder")
    images = Path(image_dir) if image_dir is not None else None
    out: list[ImageRecord] = []
    for xml in sorted(folder.glob("*.xml")):
        try:
            voc = parse_voc_xml(xml)
            image = _find_image(voc, folder, images)
            if check_images and not image.is_file():
                raise AnnotationError(f"{xml}: image file not found: {image}")
            out.append(voc_to_record(voc, image))
        except AnnotationError as e:
            if errors is None:
                raise
            errors.append(e)
    return out


def _sub(parent: ET.Element, tag: str, text: object) -> ET.Element:
    el = ET.SubElement(parent, tag)
    el.text = str(text)
    return el


def voc_xml(record: ImageRecord) -> str:
    """The VOC xml text of one record."""
    root = ET.Element("annotation")
    _sub(root, "folder", record.path.parent.name)
    _sub(root, "filename", record.path.name)
    _sub(root, "path", os.path.abspath(record.path))
    _sub(_sub(root, "source", ""), "database", "DeepACE")
    root.find("source").text = None  # type: ignore[union-attr]
    size = ET.SubElement(root, "size")
    _sub(size, "width", record.width if record.width is not None else "")
    _sub(size, "height", record.height if record.height is not None else "")
    _sub(size, "depth", 1)
    _sub(root, "segmented", 0)
    if record.expected_count is not None:
        _sub(root, "expected_count", int(record.expected_count))
    if record.karyotype is not None:
        _sub(root, "karyotype", record.karyotype)
    labels = record.labels if record.labels is not None else [DEFAULT_CATEGORY] * record.count
    difficult = record.meta.get("difficult_boxes") or []
    if len(difficult) != record.count:  # stale after the boxes were edited
        difficult = [0] * record.count
    for (x1, y1, x2, y2), name, diff in zip(record.boxes.tolist(), labels, difficult, strict=True):
        obj = ET.SubElement(root, "object")
        _sub(obj, "name", name)
        _sub(obj, "pose", "Unspecified")
        _sub(obj, "truncated", 0)
        _sub(obj, "difficult", int(diff))
        box = ET.SubElement(obj, "bndbox")
        for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), (x1, y1, x2, y2), strict=True):
            _sub(box, tag, f"{v:g}" if v != int(v) else int(v))
    ET.indent(root, space="   ")
    return ET.tostring(root, encoding="unicode") + "\n"


def write_voc_folder(records: Sequence[ImageRecord], out_dir: str | os.PathLike[str]) -> list[Path]:
    """One `<image stem>.xml` per record in `out_dir`; returns the files written.

    Two images with the same file stem would overwrite each other: that is an AnnotationError.
    """
    out = Path(out_dir)
    check_unique_stems(records, "VOC")
    written: list[Path] = []
    for r in records:
        r = with_size(r)
        r.validate()
        dest = out / f"{r.path.stem}.xml"
        atomic_write_text(dest, voc_xml(r))
        written.append(dest)
    return written
