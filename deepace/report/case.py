"""A case folder: its cell images, the model's output, the reviewer's corrections and the case report.

Layout of a case folder::

    CASE/                      the patient's metaphase images (any sub-folders)
    CASE/deepace-review/model.json        the model's raw output (COCO, with scores): never edited
    CASE/deepace-review/corrections.json  the reviewer's boxes for the cells they touched (COCO)
    CASE/deepace-report/report.html|csv|json

Both json files are COCO that `deepace.data.coco.read_coco` reads as they are: `file_name` is relative to
the json's folder ("../cell01.tif"), extra facts sit in each image's `meta`, and annotations carry
`score` (model boxes) and `source` ("model" or "manual"). A reviewed cell's corrected count is also its
`expected_count`, so corrections.json is training data.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from deepace.data.coco import atomic_write_text
from deepace.inference import CellResult
from deepace.report import rules
from deepace.report.render import draw_detections

REVIEW_DIRNAME = "deepace-review"
REPORT_DIRNAME = "deepace-report"
MODEL_JSON = "model.json"
CORRECTIONS_JSON = "corrections.json"
THUMB_SIDE = 720
CATEGORIES = [{"id": 1, "name": "chromosome", "supercategory": "chromosome"}]


# ------------------------------------------------------------------------------------------ the folder


def model_json_path(case_dir: Path) -> Path:
    return Path(case_dir) / REVIEW_DIRNAME / MODEL_JSON


def corrections_path(case_dir: Path) -> Path:
    return Path(case_dir) / REVIEW_DIRNAME / CORRECTIONS_JSON


def default_report_dir(case_dir: Path) -> Path:
    return Path(case_dir) / REPORT_DIRNAME


def case_images(case_dir: Path) -> list[Path]:
    """The case's images (found by content, recursively), leaving out DeepACE's own folders."""
    from deepace.data.images import find_images

    case_dir = Path(case_dir)
    own = {REVIEW_DIRNAME, REPORT_DIRNAME}
    out = []
    for p in find_images(case_dir):
        rel = p.relative_to(case_dir).parts
        if not own.intersection(rel[:-1]):
            out.append(p)
    return out


def cell_name(image: Path, case_dir: Path) -> str:
    """The image's path relative to the case folder (posix), or its absolute path if outside it."""
    image = Path(os.path.abspath(image))
    try:
        return image.relative_to(Path(os.path.abspath(case_dir))).as_posix()
    except ValueError:
        return str(image)


def load_gray(path: Path, stain: str = "auto") -> np.ndarray:
    """The image as the model saw it (brightfield-looking uint8)."""
    from deepace.data.images import load_image

    return load_image(path, stain=stain)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _coco_bbox(box: Sequence[float]) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)]


def _annotation(ann_id: int, image_id: int, box: Sequence[float], source: str, score: float | None) -> dict:
    """One COCO annotation of a chromosome box, with where it came from and the model's score if any."""
    bbox = _coco_bbox(box)
    ann: dict[str, Any] = {
        "id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "bbox": bbox,
        "area": round(bbox[2] * bbox[3], 2),
        "iscrowd": 0,
        "source": source,
    }
    if score is not None:
        ann["score"] = round(float(score), 5)
    return ann


def _xyxy(bbox: Sequence[float]) -> list[float]:
    x, y, w, h = (float(v) for v in bbox)
    return [x, y, x + w, y + h]


def _file_name(name: str) -> str:
    """Relative to the review folder, so that read_coco(json) finds the image without an image_root."""
    return name if os.path.isabs(name) else f"../{name}"


def _name_from_file(file_name: str) -> str:
    return file_name[3:] if file_name.startswith("../") else file_name


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read ({e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{path}: not a COCO file")
    return data


def _by_image(data: dict[str, Any]) -> dict[Any, list[dict[str, Any]]]:
    anns: dict[Any, list[dict[str, Any]]] = {}
    for ann in data.get("annotations", []):
        if isinstance(ann, dict):
            anns.setdefault(ann.get("image_id"), []).append(ann)
    return anns


# ------------------------------------------------------------------------------------------ model.json


def write_model_json(
    case_dir: Path,
    results: Sequence[CellResult],
    stain: str = "auto",
    magnification_advice: dict[str, float] | None = None,
) -> Path:
    """Save the model's raw output (all boxes, with scores) as COCO in CASE/deepace-review/model.json.
    Entries already there for other images are kept, so cells counted later (uploads) are added; so is the
    magnification advice (deepace.magnification) unless a new one is given."""
    case_dir = Path(case_dir)
    path = model_json_path(case_dir)
    kept = read_model_json(case_dir) if path.exists() else {}
    if magnification_advice is None:
        magnification_advice = model_magnification_advice(case_dir)
    for r in results:
        kept[cell_name(r.image, case_dir)] = r

    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id, (name, r) in enumerate(sorted(kept.items()), start=1):
        meta: dict[str, Any] = {
            "score_threshold": float(r.score_threshold),
            "low_confidence_band": [float(v) for v in r.low_confidence_band],
            "count": r.count,
            "low_confidence": r.low_confidence,
        }
        if r.error:
            meta["error"] = r.error
        if r.pixel_repetition > 1:
            meta["pixel_repetition"] = int(r.pixel_repetition)
        if r.faint_ink_level is not None:
            meta["faint_ink_level"] = float(r.faint_ink_level)
        if r.denoised_noise is not None:
            meta["denoised_noise"] = float(r.denoised_noise)
        if r.view_counts:
            meta["view_counts"] = [int(c) for c in r.view_counts]
        entry: dict[str, Any] = {"id": image_id, "file_name": _file_name(name), "meta": meta}
        if r.width and r.height:
            entry["width"], entry["height"] = int(r.width), int(r.height)
        images.append(entry)
        boxes, scores = np.asarray(r.boxes).reshape(-1, 4), np.asarray(r.scores).reshape(-1)
        for box, score in zip(boxes, scores, strict=True):
            if r.width and r.height:  # detectors may overshoot the border by a fraction of a pixel
                box = np.clip(box, 0, [r.width, r.height, r.width, r.height])
            ann = _annotation(len(annotations) + 1, image_id, box, "model", score)
            if ann["bbox"][2] > 0 and ann["bbox"][3] > 0:
                annotations.append(ann)
    data = {
        "info": {
            "description": "DeepACE model output (raw, all boxes with scores); not edited by review",
            "date_created": _now(),
            "image_root": "..",
            "stain": stain,
            "magnification_advice": magnification_advice,
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": CATEGORIES,
    }
    atomic_write_text(path, json.dumps(data, indent=1) + "\n")
    return path


def read_model_json(case_dir: Path) -> dict[str, CellResult]:
    """The model's output per cell name; empty if the case was never counted."""
    case_dir = Path(case_dir)
    data = _read_json(model_json_path(case_dir))
    if data is None:
        return {}
    anns = _by_image(data)
    out: dict[str, CellResult] = {}
    for entry in data["images"]:
        name = _name_from_file(str(entry["file_name"]))
        meta = entry.get("meta") or {}
        dets = anns.get(entry["id"], [])
        boxes = np.array([_xyxy(a["bbox"]) for a in dets], dtype=np.float32).reshape(-1, 4)
        scores = np.array([float(a.get("score", 1.0)) for a in dets], dtype=np.float32)
        order = np.argsort(-scores, kind="stable")
        band = meta.get("low_confidence_band", (0.3, 0.7))
        out[name] = CellResult(
            image=case_dir / name,
            width=int(entry.get("width") or 0),
            height=int(entry.get("height") or 0),
            boxes=boxes[order],
            scores=scores[order],
            score_threshold=float(meta.get("score_threshold", 0.5)),
            low_confidence_band=(float(band[0]), float(band[1])),
            error=meta.get("error"),
            pixel_repetition=int(meta.get("pixel_repetition", 1)),
            faint_ink_level=meta.get("faint_ink_level"),
            denoised_noise=meta.get("denoised_noise"),
            view_counts=tuple(int(c) for c in meta["view_counts"]) if meta.get("view_counts") else None,
        )
    return out


def _model_info(case_dir: Path) -> dict[str, Any]:
    """model.json's "info" block ({} if the case was never counted or the file is unreadable)."""
    try:
        data = _read_json(model_json_path(case_dir))
    except ValueError:
        return {}
    return (data or {}).get("info") or {}


def model_magnification_advice(case_dir: Path) -> dict[str, float]:
    """{stain: suggested --magnification} saved when the case was counted ({} if none or unknown)."""
    advice = _model_info(case_dir).get("magnification_advice") or {}
    return {str(k): float(v) for k, v in advice.items()}


def model_stain(case_dir: Path) -> str:
    """The stain setting the case was counted with ('auto' if unknown)."""
    return str(_model_info(case_dir).get("stain", "auto"))


# ------------------------------------------------------------------------------------------ corrections


@dataclass
class CellReview:
    """The reviewer's boxes for one cell. `sources[i]` is "model" or "manual"; `scores[i]` the model's
    score of a model box (None for manual ones)."""

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), dtype=np.float32))
    sources: list[str] = field(default_factory=list)
    scores: list[float | None] = field(default_factory=list)
    reviewed: bool = False
    updated: str | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        n = len(self.boxes)
        if not self.sources:
            self.sources = ["manual"] * n
        if not self.scores:
            self.scores = [None] * n
        if len(self.sources) != n or len(self.scores) != n:
            raise ValueError("boxes, sources and scores differ in length")

    @property
    def count(self) -> int:
        return len(self.boxes)

    @classmethod
    def from_model(cls, result: CellResult, reviewed: bool = False) -> CellReview:
        """The model's counted boxes, as a starting point for a review."""
        keep = np.asarray(result.scores) >= result.score_threshold
        scores = [float(s) for s in np.asarray(result.scores)[keep]]
        return cls(np.asarray(result.boxes)[keep], ["model"] * len(scores), scores, reviewed, _now())

    def differs_from(self, result: CellResult | None) -> bool:
        """True when the reviewer changed the model's counted boxes."""
        if result is None or result.error:
            return True
        if any(s == "manual" for s in self.sources):
            return True
        if any(sc is None or sc < result.score_threshold for sc in self.scores):
            return True
        return self.count != result.count


def read_corrections(case_dir: Path) -> dict[str, CellReview]:
    """The reviewer's corrections per cell name; empty when nothing was reviewed."""
    data = _read_json(corrections_path(case_dir))
    if data is None:
        return {}
    anns = _by_image(data)
    out: dict[str, CellReview] = {}
    for entry in data["images"]:
        meta = entry.get("meta") or {}
        dets = anns.get(entry["id"], [])
        out[_name_from_file(str(entry["file_name"]))] = CellReview(
            boxes=np.array([_xyxy(a["bbox"]) for a in dets], dtype=np.float32).reshape(-1, 4),
            sources=[str(a.get("source", "manual")) for a in dets],
            scores=[None if a.get("score") is None else float(a["score"]) for a in dets],
            reviewed=bool(meta.get("reviewed", False)),
            updated=meta.get("updated"),
        )
    return out


def write_corrections(
    case_dir: Path,
    reviews: dict[str, CellReview],
    model: dict[str, CellResult] | None = None,
) -> Path:
    """Write all corrections as COCO to CASE/deepace-review/corrections.json, atomically."""
    case_dir = Path(case_dir)
    model = read_model_json(case_dir) if model is None else model
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id, (name, review) in enumerate(sorted(reviews.items()), start=1):
        result = model.get(name)
        meta: dict[str, Any] = {
            "reviewed": review.reviewed,
            "corrected": review.differs_from(result),
            "updated": review.updated or _now(),
            "model_count": None if result is None or result.error else result.count,
        }
        entry: dict[str, Any] = {"id": image_id, "file_name": _file_name(name)}
        if result is not None and result.width and result.height:
            entry["width"], entry["height"] = int(result.width), int(result.height)
        if review.reviewed:
            entry["expected_count"] = review.count
        entry["meta"] = meta
        images.append(entry)
        for box, source, score in zip(review.boxes, review.sources, review.scores, strict=True):
            annotations.append(_annotation(len(annotations) + 1, image_id, box, source, score))
    data = {
        "info": {
            "description": "DeepACE review: the reviewer's boxes (model.json beside it holds the raw output)",
            "date_created": _now(),
            "image_root": "..",
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": CATEGORIES,
    }
    path = corrections_path(case_dir)
    atomic_write_text(path, json.dumps(data, indent=1) + "\n")
    return path


# ------------------------------------------------------------------------------------------ summary


@dataclass
class CellSummary:
    """One cell's line in the case: the final count is the reviewer's where there is one."""

    name: str
    count: int | None
    model_count: int | None
    low_confidence: int = 0
    low_counted: int = 0
    low_uncounted: int = 0
    reviewed: bool = False
    corrected: bool = False
    off_mode: bool = False
    error: str | None = None
    # the model counted it faint and darkened (CellResult.faint_ink_level, deepace/faint.py)
    darkened: bool = False
    # noise σ of a cell noisier than the training images, denoised before counting (CellResult.denoised_noise)
    denoised_noise: float | None = None
    # the model's count in each orientation when it counted the cell in several (deepace/views.py): a cell
    # whose counts differ is less sure than one counted alike in every orientation
    orientation_counts: list[int] | None = None
    # the model's own chance that its count is exact (CellResult.exact_chance, metrics/count_chance.py)
    exact_chance: float | None = None

    @property
    def unsteady(self) -> bool:
        return bool(self.orientation_counts) and len(set(self.orientation_counts or ())) > 1

    @property
    def unsure(self) -> bool:
        """An automatic count the model itself gives little chance of being exact (rules.UNSURE_CHANCE)."""
        automatic = not (self.reviewed or self.corrected)
        return automatic and self.exact_chance is not None and self.exact_chance < rules.UNSURE_CHANCE

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "unsteady": self.unsteady}


@dataclass
class CaseSummary:
    name: str
    expected: int
    cells: list[CellSummary]
    case_count: int | None  # the count the rules read the case by, on `basis`
    flags: list[rules.Flag]
    basis: str = "mode"  # "median" while some counts are automatic (rules.median_count says why)

    @property
    def counts(self) -> list[int]:
        return [c.count for c in self.cells if c.count is not None]

    @property
    def unreadable(self) -> list[CellSummary]:
        return [c for c in self.cells if c.count is None]

    def to_dict(self) -> dict[str, Any]:
        counts = self.counts
        return {
            "case": self.name,
            "expected": self.expected,
            "n_cells": len(counts),
            "n_reviewed": sum(c.reviewed for c in self.cells if c.count is not None),
            "n_corrected": sum(c.corrected for c in self.cells),
            "case_count": self.case_count,
            "count_basis": self.basis,
            # the other counts the case count was chosen from (a tie is decided towards `expected`)
            "tied_with": [c for c in rules.tied_case_counts(counts, self.basis) if c != self.case_count],
            "modal_count": rules.modal_count(counts, self.expected),
            "median_count": rules.median_count(counts, self.expected),
            "min_count": min(counts) if counts else None,
            "max_count": max(counts) if counts else None,
            "histogram": {str(k): v for k, v in rules.count_histogram(counts).items()},
            "flags": [f.to_dict() for f in self.flags],
            "cells": [c.to_dict() for c in self.cells],
            "unreadable": [{"image": c.name, "error": c.error} for c in self.unreadable],
        }


def _cell_summary(name: str, result: CellResult | None, review: CellReview | None) -> CellSummary:
    error = None if result is None else result.error
    if result is None and review is None:
        error = "not counted yet"
    model_count = None if result is None or result.error else result.count
    low = low_counted = low_uncounted = 0
    if result is not None and not result.error:
        lo, hi = result.low_confidence_band
        s = np.asarray(result.scores)
        low = result.low_confidence
        low_counted = int(((s >= result.score_threshold) & (s < hi)).sum())
        low_uncounted = int(((s >= lo) & (s < result.score_threshold)).sum())
    darkened = result is not None and result.faint_ink_level is not None
    views = list(result.view_counts) if result is not None and result.view_counts else None
    noise = None if result is None else result.denoised_noise
    chance = None if model_count is None else result.exact_chance
    if review is not None:  # a reviewer could open the image, so their count stands
        return CellSummary(
            name, review.count, model_count, low, low_counted, low_uncounted,
            review.reviewed, review.differs_from(result), error=None, darkened=darkened,
            denoised_noise=noise, orientation_counts=views, exact_chance=chance,
        )  # fmt: skip
    return CellSummary(
        name, model_count, model_count, low, low_counted, low_uncounted, error=error, darkened=darkened,
        denoised_noise=noise, orientation_counts=views, exact_chance=chance,
    )  # fmt: skip


COUNT_BASIS_NOTE = (
    "The case is read by the median of its cells' counts while some are automatic (a miscounted cell moves "
    "the mode of 20 counts more easily than their median), by the modal count once every cell is reviewed."
)


def case_count_text(case_count: int | None, tied_with: Sequence[int] = (), basis: str = "mode") -> str:
    """'46 (median)', '46 (mode, tied with 47)', or '—' when no cell was counted."""
    if case_count is None:
        return "—"
    return f"{case_count} ({basis}{', tied with ' + ', '.join(map(str, tied_with)) if tied_with else ''})"


def summarize_case(
    name: str,
    results: dict[str, CellResult | None],
    reviews: dict[str, CellReview],
    expected: int = rules.NORMAL_COUNT,
    magnification_advice: dict[str, float] | None = None,
) -> CaseSummary:
    """Final counts (corrections first), the case's count, the cells off it and all flags. The case is
    read by its median count while some counts are automatic, by its modal count once all are reviewed;
    clones, mosaicism and extending the count are judged on the reviewed cells' counts alone
    (rules.provisional says why)."""
    cells = [_cell_summary(n, results[n], reviews.get(n)) for n in sorted(results)]
    counts = [c.count for c in cells if c.count is not None]
    counted = [c for c in cells if c.count is not None]
    n_reviewed = sum(c.reviewed for c in counted)
    basis = "median" if n_reviewed < len(counted) else "mode"
    mode = rules.case_count(counts, expected, basis)
    for c in cells:
        c.off_mode = c.count is not None and mode is not None and c.count != mode
    count_flags = rules.provisional(
        rules.evaluate_counts(counts, expected, basis=basis), len(counted) - n_reviewed, len(counted)
    )
    if 0 < n_reviewed < len(counted) and mode is not None:
        reviewed_counts = [c.count for c in counted if c.reviewed and c.count is not None]
        count_flags += rules.off_count_flags(
            reviewed_counts, mode, len(counted), "median", of_reviewed=n_reviewed
        )
        count_flags += rules.clone_flags(reviewed_counts, mode, expected, "median", of_reviewed=n_reviewed)
    flags = count_flags + rules.review_flags(
        n_cells=len(counted),
        n_reviewed=n_reviewed,
        n_low_confidence_cells=sum(1 for c in counted if c.low_confidence and not c.reviewed),
        n_unreadable=len(cells) - len(counted),
        n_unsteady_cells=sum(1 for c in counted if c.unsteady and not c.reviewed),
        n_unsure_cells=sum(1 for c in counted if c.unsure),
    )
    flags += rules.magnification_flags(magnification_advice or {})
    flags += rules.repeated_pixel_flags(
        {n: r.pixel_repetition for n, r in results.items() if r is not None and r.pixel_repetition > 1}
    )
    flags += rules.noisy_image_flags(
        {n: r.denoised_noise for n, r in results.items() if r is not None and r.denoised_noise is not None}
    )
    return CaseSummary(name, expected, cells, mode, rules.sort_flags(flags), basis)


# ------------------------------------------------------------------------------------------ pictures


def _data_uri(img: Image.Image, fmt: str = "JPEG") -> str:
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.convert("RGB").save(buf, format="JPEG", quality=85, optimize=True)
        mime = "image/jpeg"
    else:
        img.save(buf, format="PNG", optimize=True)
        mime = "image/png"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def annotated_thumbnail(
    gray: np.ndarray,
    result: CellResult | None,
    review: CellReview | None,
    max_side: int = THUMB_SIDE,
) -> Image.Image:
    """The cell with its boxes, drawn at thumbnail size (so lines and numbers stay crisp)."""
    h, w = gray.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    small = np.asarray(Image.fromarray(gray).resize((max(1, round(w * scale)), max(1, round(h * scale)))))
    if review is not None:
        boxes = review.boxes * scale
        scores = np.ones(len(boxes), dtype=np.float32)
        return draw_detections(small, boxes, scores, 0.5, (0.0, 0.0), sources=review.sources)
    if result is None:
        return draw_detections(small, np.zeros((0, 4)), np.zeros(0), 0.5, (0.3, 0.7))
    return draw_detections(
        small,
        np.asarray(result.boxes) * scale,
        result.scores,
        result.score_threshold,
        result.low_confidence_band,
    )


def histogram_svg(counts: Sequence[int], mode: int | None, expected: int = rules.NORMAL_COUNT) -> str:
    """A bar chart of the counts as inline SVG markup: mode blue, other counts orange, `expected` dashed.

    Written by hand rather than with matplotlib: a process's first matplotlib histogram, import included,
    took about 1.1 s of a 20-cell case (BENCHMARKS.md, "Speed", session 22); this takes under a ms."""
    width, height = 600, 260
    left, right, top, bottom = 44, 12, 22, 42
    plot_w, plot_h = width - left - right, height - top - bottom
    hist = rules.count_histogram(counts)
    parts = [
        f'<svg class="histogram" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}"'
        ' font-family="sans-serif" font-size="11">',
        "<title>Histogram of chromosome counts"
        + "".join(f"; {n} chromosomes: {cells} cell{'s' if cells > 1 else ''}" for n, cells in hist.items())
        + "</title>",
    ]
    axis_y = top + plot_h
    if not hist:
        message = "no cell counted"
        parts.append(f'<text x="{width / 2:g}" y="{height / 2:g}" text-anchor="middle">{message}</text>')
    else:
        lo, hi = min(min(hist), expected) - 1, max(max(hist), expected) + 1
        xs = list(range(lo, hi + 1))
        top_value = max(hist.values())
        y_max = top_value * 1.2 + 0.5
        slot = plot_w / len(xs)

        def y_of(value: float) -> float:
            return axis_y - plot_h * value / y_max

        step = max(1, -(-top_value // 5))  # at most about five integer ticks
        for tick in range(0, top_value + 1, step):
            y = y_of(tick)
            parts.append(
                f'<line x1="{left}" x2="{left - 4}" y1="{y:.1f}" y2="{y:.1f}" stroke="black"/>'
                f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick}</text>'
            )
        for i, x in enumerate(xs):
            centre = left + slot * (i + 0.5)
            value = hist.get(x, 0)
            if value:
                colour = "#0072ff" if x == mode else "#ff8c00"
                parts.append(
                    f'<rect class="bar" data-count="{x}" data-cells="{value}" x="{centre - slot * 0.4:.1f}"'
                    f' y="{y_of(value):.1f}" width="{slot * 0.8:.1f}" height="{axis_y - y_of(value):.1f}"'
                    f' fill="{colour}" stroke="black" stroke-width="0.5"/>'
                )
            parts.append(f'<text x="{centre:.1f}" y="{axis_y + 14}" text-anchor="middle">{x}</text>')
        marker = left + slot * (expected - lo + 0.5)
        parts.append(
            f'<line class="expected" x1="{marker:.1f}" x2="{marker:.1f}" y1="{top}" y2="{axis_y}"'
            ' stroke="black" stroke-dasharray="5,3"/>'
            f'<text x="{marker + 3:.1f}" y="{top + 10}">{expected}</text>'
        )
    parts.append(
        f'<line x1="{left}" x2="{left}" y1="{top}" y2="{axis_y}" stroke="black"/>'
        f'<line x1="{left}" x2="{width - right}" y1="{axis_y}" y2="{axis_y}" stroke="black"/>'
        f'<text x="{left + plot_w / 2:g}" y="{height - 6}" text-anchor="middle">chromosomes per cell</text>'
        f'<text transform="translate(12 {top + plot_h / 2:g}) rotate(-90)" text-anchor="middle">cells</text>'
        "</svg>"
    )
    return "".join(parts)


# ------------------------------------------------------------------------------------------ html

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1b1f24;
background:#f6f7f9}
main{max-width:1200px;margin:0 auto;padding:20px}
h1{margin:0 0 4px;font-size:1.6rem} h2{font-size:1.2rem;margin:28px 0 10px}
.muted{color:#5b6470;font-size:.9rem}
.banner{padding:10px 14px;border-radius:6px;margin:14px 0;font-weight:600}
.banner.auto{background:#fff4e5;border:1px solid #ff8c00}
.banner.done{background:#e8f6ec;border:1px solid #2e8b57}
.summary{display:flex;gap:24px;flex-wrap:wrap;align-items:flex-start}
.stats{display:grid;grid-template-columns:auto auto;gap:4px 16px;font-size:1rem}
.stats b{font-size:1.3rem}
.chart svg{max-width:100%;height:auto;background:#fff}
.flags{list-style:none;padding:0;margin:0}
.flags li{padding:8px 12px;margin:6px 0;border-radius:6px;border-left:6px solid}
.flags li.flag-alert{background:#fdecec;border-color:#c62828}
.flags li.flag-warning{background:#fff4e5;border-color:#ff8c00}
.flags li.flag-info{background:#eaf2ff;border-color:#0072ff}
.flags code{font-size:.8rem;color:#5b6470;margin-right:6px}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{padding:5px 8px;border-bottom:1px solid #e1e4e8;text-align:left;font-size:.92rem}
th{background:#eef0f3;position:sticky;top:0}
tr.off td{background:#fdecec} tr.off td.count{font-weight:700;color:#c62828}
tr.err td{background:#f1f1f1;color:#6a6a6a}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:1px 7px;border-radius:10px;font-size:.78rem;margin-right:4px}
.b-rev{background:#2e8b57;color:#fff} .b-cor{background:#dc00dc;color:#fff}
.b-auto{background:#e1e4e8;color:#333} .b-off{background:#c62828;color:#fff}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:14px}
.cell{background:#fff;border:2px solid #d0d4da;border-radius:8px;padding:8px;margin:0}
.cell.off{border-color:#c62828;box-shadow:0 0 0 2px #f4b4b4}
.cell img{width:100%;height:auto;display:block;border-radius:4px}
.cell h3{margin:0 0 6px;font-size:.95rem;display:flex;justify-content:space-between;gap:8px}
.cell .count{font-size:1.25rem;font-weight:700}
.legend span{display:inline-block;margin-right:16px}
.sw{display:inline-block;width:18px;height:12px;border:3px solid;vertical-align:middle;margin-right:4px}
@media print{.gallery{grid-template-columns:repeat(2,1fr)} th{position:static}}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _badges(c: CellSummary) -> str:
    out = []
    if c.error:
        return '<span class="badge b-auto">not counted</span>'
    if c.reviewed:
        out.append('<span class="badge b-rev">reviewed</span>')
    if c.corrected:
        out.append('<span class="badge b-cor">corrected</span>')
    if not c.reviewed and not c.corrected:
        out.append('<span class="badge b-auto">automatic</span>')
    if c.off_mode:
        out.append('<span class="badge b-off">off mode</span>')
    if c.darkened:
        out.append('<span class="badge b-auto" title="faint fluorescence image">counted darkened</span>')
    if c.denoised_noise is not None:
        out.append(
            f'<span class="badge b-auto" title="pixel noise σ {c.denoised_noise:.1f} grey levels, far above '
            f"the training images'; smoothed before counting\">noisy, denoised</span>"
        )
    if c.unsteady and not c.reviewed:
        views = c.orientation_counts or []
        out.append(
            f'<span class="badge b-auto" title="counts in {len(views)} orientations: '
            f'{", ".join(map(str, views))}">unsteady {min(views)}–{max(views)}</span>'
        )
    return "".join(out)


def _low_text(c: CellSummary) -> str:
    if not c.low_confidence:
        return "0"
    return f"{c.low_confidence} ({c.low_counted} counted, {c.low_uncounted} not counted)"


def _chance_text(c: CellSummary) -> str:
    return "—" if c.exact_chance is None else f"{c.exact_chance:.0%}"


def _render_html(
    summary: CaseSummary, case_dir: Path, thumbs: dict[str, str], histogram: str, band: str
) -> str:
    s = summary.to_dict()
    counted = [c for c in summary.cells if c.count is not None]
    all_reviewed = bool(counted) and all(c.reviewed for c in counted)
    banner = (
        '<div class="banner done">All counted cells were reviewed.</div>'
        if all_reviewed
        else f'<div class="banner auto">Automatic count: {s["n_cells"] - s["n_reviewed"]} of {s["n_cells"]} '
        "cells not reviewed. Check every cell before sign-out.</div>"
    )
    flags = "".join(
        f'<li class="flag-{_esc(f.severity)}"><code>{_esc(f.code)}</code>{_esc(f.message)}</li>'
        for f in summary.flags
    )
    rows = []
    for i, c in enumerate(summary.cells, start=1):
        cls = "err" if c.error else ("off" if c.off_mode else "")
        rows.append(
            f'<tr class="{cls}"><td class="num">{i}</td><td><a href="#cell-{i}">{_esc(c.name)}</a></td>'
            f'<td class="num count">{"—" if c.count is None else c.count}</td>'
            f'<td class="num">{"—" if c.model_count is None else c.model_count}</td>'
            f'<td>{_esc(_low_text(c))}</td><td class="num">{_chance_text(c)}</td>'
            f"<td>{_badges(c)}</td><td>{_esc(c.error or '')}</td></tr>"
        )
    cards = []
    for i, c in enumerate(summary.cells, start=1):
        if c.error:
            continue
        img = f'<img alt="{_esc(c.name)}" src="{thumbs[c.name]}">' if c.name in thumbs else ""
        model = "" if c.model_count in (None, c.count) else f" (model {c.model_count})"
        cards.append(
            f'<figure class="cell{" off" if c.off_mode else ""}" id="cell-{i}">'
            f"<h3><span>{i}. {_esc(c.name)}</span>"
            f'<span class="count">{c.count}{_esc(model)}</span></h3>{img}'
            f'<figcaption class="muted">{_badges(c)} low-confidence: {_esc(_low_text(c))}; '
            f"model's chance of an exact count: {_chance_text(c)}</figcaption>"
            "</figure>"
        )
    unreadable = "".join(f"<li><b>{_esc(c.name)}</b>: {_esc(c.error)}</li>" for c in summary.unreadable)
    unreadable_html = (
        f"<h2>Not counted ({len(summary.unreadable)})</h2><ul>{unreadable}</ul>" if unreadable else ""
    )
    mode = case_count_text(summary.case_count, s["tied_with"], summary.basis)
    rng = "—" if s["min_count"] is None else f"{s['min_count']}–{s['max_count']}"
    off = sum(c.off_mode for c in summary.cells)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>DeepACE case report: {_esc(summary.name)}</title>
<style>{_CSS}</style></head>
<body><main>
<h1>Chromosome count: {_esc(summary.name)}</h1>
<div class="muted">{_esc(case_dir.resolve())} · generated {_esc(_now())} by DeepACE ·
expected normal count {summary.expected}</div>
{banner}
<section class="summary">
<div class="stats">
<span>Cells counted</span><b>{s["n_cells"]}</b>
<span>Case count</span><b>{mode}</b>
<span>Modal count</span><b>{"—" if s["modal_count"] is None else s["modal_count"]}</b>
<span>Range</span><b>{rng}</b>
<span>Cells off the case count</span><b>{off}</b>
<span>Reviewed</span><b>{s["n_reviewed"]} / {s["n_cells"]}</b>
<span>Corrected</span><b>{s["n_corrected"]}</b>
<span>Not counted</span><b>{len(summary.unreadable)}</b>
</div>
<div class="chart">{histogram}</div>
</section>
<p class="muted">{_esc(COUNT_BASIS_NOTE)}</p>
<h2>Flags</h2>
<ul class="flags">{flags or '<li class="flag-info">No flags.</li>'}</ul>
<h2>Cells</h2>
<table><thead><tr><th>#</th><th>Image</th><th>Count</th><th>Model count</th><th>Low-confidence detections</th>
<th title="The model's own chance that its count is exact, from its boxes' scores">Model's P(exact)</th>
<th>Status</th><th>Error</th></tr></thead><tbody>{"".join(rows)}</tbody></table>
{unreadable_html}
<h2>Annotated cells</h2>
<p class="legend muted"><span><i class="sw" style="border-color:#0072ff"></i>counted</span>
<span><i class="sw" style="border-color:#ff8c00"></i>counted, low confidence</span>
<span><i class="sw" style="border-color:#ff8c00;border-style:dashed"></i>not counted, low confidence</span>
<span><i class="sw" style="border-color:#dc00dc"></i>drawn by reviewer</span>
Numbers run 1..count in reading order. Low-confidence band: {_esc(band)}.</p>
<div class="gallery">{"".join(cards)}</div>
</main></body></html>
"""


# ------------------------------------------------------------------------------------------ the report


def build_case_report(
    case_dir: Path,
    results: Sequence[CellResult],
    out_dir: Path | None = None,
    expected: int = rules.NORMAL_COUNT,
    stain: str | None = None,
) -> dict[str, Path]:
    """Write report.html (self-contained, opens offline), report.csv and report.json for a case.

    Corrections in CASE/deepace-review/corrections.json take precedence over the model's counts.
    Returns {"html": ..., "csv": ..., "json": ...}.
    """
    case_dir = Path(case_dir)
    out_dir = default_report_dir(case_dir) if out_dir is None else Path(out_dir)
    stain = model_stain(case_dir) if stain is None else stain
    by_name: dict[str, CellResult | None] = {cell_name(r.image, case_dir): r for r in results}
    reviews = {k: v for k, v in read_corrections(case_dir).items() if k in by_name}
    summary = summarize_case(case_dir.name, by_name, reviews, expected, model_magnification_advice(case_dir))

    thumbs: dict[str, str] = {}
    for cell in summary.cells:
        if cell.error:
            continue
        result = by_name[cell.name]
        path = result.image if result is not None else case_dir / cell.name
        try:
            gray = load_gray(path, stain)
        except Exception as e:  # an image that vanished or broke since it was counted
            cell.error = f"cannot read the image for the report: {e}"
            continue
        thumbs[cell.name] = _data_uri(annotated_thumbnail(gray, result, reviews.get(cell.name)))

    bands = {tuple(r.low_confidence_band) for r in results}
    band = ", ".join(f"{lo:g}–{hi:g}" for lo, hi in sorted(bands)) or "—"
    page = _render_html(
        summary, case_dir, thumbs, histogram_svg(summary.counts, summary.case_count, expected), band
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"html": out_dir / "report.html", "csv": out_dir / "report.csv", "json": out_dir / "report.json"}
    atomic_write_text(paths["html"], page)

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(
        ["image", "count", "model_count", "low_confidence", "exact_chance", "reviewed", "corrected"]
        + ["off_mode", "error"]
    )
    for c in summary.cells:
        writer.writerow(
            [
                c.name,
                "" if c.count is None else c.count,
                "" if c.model_count is None else c.model_count,
                c.low_confidence,
                "" if c.exact_chance is None else round(c.exact_chance, 3),
                int(c.reviewed),
                int(c.corrected),
                int(c.off_mode),
                c.error or "",
            ]
        )
    atomic_write_text(paths["csv"], buf.getvalue())

    data = summary.to_dict()
    data.update(case_dir=str(case_dir), generated=_now(), stain=stain)
    atomic_write_text(paths["json"], json.dumps(data, indent=1) + "\n")
    return paths
