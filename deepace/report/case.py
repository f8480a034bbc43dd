"""A case folder: its cell images, the model's output, the reviewer's corrections, and what they make of
the case (its summary; deepace/report/page.py writes it out as the case report).

Layout of a case folder::

    CASE/                      the patient's metaphase images (any sub-folders)
    CASE/deepace-review/model.json        the model's raw output (COCO, with scores): never edited
    CASE/deepace-review/corrections.json  the reviewer's boxes for the cells they touched (COCO)
    CASE/deepace-report/report.html|csv|json

Both json files are COCO that `deepace.data.coco.read_coco` reads as they are: `file_name` is relative to
the json's folder ("../cell01.tif"), extra facts sit in each image's `meta`, and annotations carry
`score` (model boxes) and `source` ("model" or "manual"). A reviewed cell's corrected count is also its
`expected_count`, so corrections.json is training data.

Both files are keyed by file name, so each entry also records a fingerprint of the image's content
(deepace.provenance.fingerprint). An image replaced under the same name, or deleted, makes its entries
stale: a stale model output is dropped (and the cell counted again), and a stale review is set aside
(flagged in the summary) rather than shown on another image.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from deepace.data.coco import atomic_write_text
from deepace.inference import CellResult
from deepace.report import rules

REVIEW_DIRNAME = "deepace-review"
REPORT_DIRNAME = "deepace-report"
MODEL_JSON = "model.json"
CORRECTIONS_JSON = "corrections.json"
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


def now() -> str:
    """The time now (UTC, ISO 8601, to the second), as the case files record it."""
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


_FINGERPRINTS: dict[tuple[str, int, int], str] = {}


def current_fingerprint(path: Path) -> str | None:
    """The image's content fingerprint now (None if it is gone), cached while its size and time stay."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _FINGERPRINTS:
        from deepace.provenance import fingerprint

        try:
            _FINGERPRINTS[key] = fingerprint(path)
        except OSError:
            return None
    return _FINGERPRINTS[key]


def identical_cells(results: dict[str, CellResult | None]) -> list[list[str]]:
    """Groups of cell names whose images have the same content (a copy under another name counts the same
    cell twice), each sorted, by their first name."""
    by_content: dict[str, list[str]] = {}
    for name, result in results.items():
        digest = None if result is None else current_fingerprint(Path(result.image))
        if digest is not None:
            by_content.setdefault(digest, []).append(name)
    return sorted(sorted(names) for names in by_content.values() if len(names) > 1)


def _stale(case_dir: Path, name: str, meta: dict[str, Any]) -> bool:
    """An entry recorded for another content than the image now under its name (entries written before
    fingerprints were recorded cannot tell, and count as current)."""
    recorded = meta.get("fingerprint")
    return recorded is not None and recorded != current_fingerprint(case_dir / name)


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
        if r.magnification != 1.0:
            meta["magnification"] = float(r.magnification)
        if r.other_stain_look:
            meta["other_stain_look"] = True
        meta["fingerprint"] = current_fingerprint(case_dir / name)
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
            "date_created": now(),
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
    """The model's output per cell name; empty if the case was never counted. Output for an image since
    replaced or deleted is left out."""
    case_dir = Path(case_dir)
    data = _read_json(model_json_path(case_dir))
    if data is None:
        return {}
    anns = _by_image(data)
    out: dict[str, CellResult] = {}
    for entry in data["images"]:
        name = _name_from_file(str(entry["file_name"]))
        meta = entry.get("meta") or {}
        if _stale(case_dir, name, meta):
            continue
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
            magnification=float(meta.get("magnification", 1.0)),
            other_stain_look=bool(meta.get("other_stain_look", False)),
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
    # the content fingerprint of the image reviewed (recorded when the review is first saved)
    fingerprint: str | None = None

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
        return cls(np.asarray(result.boxes)[keep], ["model"] * len(scores), scores, reviewed, now())

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
    """The reviewer's corrections per cell name; empty when nothing was reviewed. Reviews of an image
    since replaced or deleted are left out (`read_corrections_and_set_aside` names them): they were made
    on another image, and saving the corrections again drops them."""
    return read_corrections_and_set_aside(case_dir)[0]


def read_corrections_and_set_aside(case_dir: Path) -> tuple[dict[str, CellReview], list[str]]:
    """`read_corrections`, and the cells whose review was made on an image since replaced or deleted."""
    case_dir = Path(case_dir)
    data = _read_json(corrections_path(case_dir))
    if data is None:
        return {}, []
    anns = _by_image(data)
    out: dict[str, CellReview] = {}
    stale: list[str] = []
    for entry in data["images"]:
        meta = entry.get("meta") or {}
        name = _name_from_file(str(entry["file_name"]))
        if _stale(case_dir, name, meta):
            stale.append(name)
            continue
        dets = anns.get(entry["id"], [])
        out[name] = CellReview(
            boxes=np.array([_xyxy(a["bbox"]) for a in dets], dtype=np.float32).reshape(-1, 4),
            sources=[str(a.get("source", "manual")) for a in dets],
            scores=[None if a.get("score") is None else float(a["score"]) for a in dets],
            reviewed=bool(meta.get("reviewed", False)),
            updated=meta.get("updated"),
            fingerprint=meta.get("fingerprint"),
        )
    return out, sorted(stale)


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
            "updated": review.updated or now(),
            "model_count": None if result is None or result.error else result.count,
            "fingerprint": review.fingerprint or current_fingerprint(case_dir / name),
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
            "date_created": now(),
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
    # the model found no chromosome in it and no reviewer has counted it: a blank frame or no metaphase
    # (deepace/blank_boxes.py), left out of the case's counts until reviewed
    empty: bool = False

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
        return [c.count for c in self.cells if c.count is not None and not c.empty]

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
            "empty": [c.name for c in self.cells if c.empty],
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
        denoised_noise=noise, orientation_counts=views, exact_chance=chance, empty=model_count == 0,
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
    set_aside: Sequence[str] = (),
) -> CaseSummary:
    """Final counts (corrections first), the case's count, the cells off it and all flags. The case is
    read by its median count while some counts are automatic, by its modal count once all are reviewed;
    clones, mosaicism and extending the count are judged on the reviewed cells' counts alone
    (rules.provisional says why)."""
    cells = [_cell_summary(n, results[n], reviews.get(n)) for n in sorted(results)]
    counted = [c for c in cells if c.count is not None and not c.empty]
    counts = [c.count for c in counted if c.count is not None]
    n_reviewed = sum(c.reviewed for c in counted)
    basis = "median" if n_reviewed < len(counted) else "mode"
    mode = rules.case_count(counts, expected, basis)
    for c in cells:
        c.off_mode = c in counted and mode is not None and c.count != mode
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
        n_unreadable=sum(c.count is None for c in cells),
        n_unsteady_cells=sum(1 for c in counted if c.unsteady and not c.reviewed),
        n_unsure_cells=sum(1 for c in counted if c.unsure),
    )
    flags += rules.empty_image_flags([c.name for c in cells if c.empty])
    flags += rules.duplicate_image_flags(identical_cells(results))
    flags += rules.other_stain_flags(
        [n for n, r in results.items() if r and not r.error and r.other_stain_look]
    )
    flags += rules.mixed_settings_flags(
        {n: (r.magnification, len(r.view_counts or ()) or 1) for n, r in results.items() if r and not r.error}
    )
    flags += rules.set_aside_review_flags([n for n in set_aside if n in results])
    flags += rules.magnification_flags(magnification_advice or {})
    flags += rules.repeated_pixel_flags(
        {n: r.pixel_repetition for n, r in results.items() if r is not None and r.pixel_repetition > 1}
    )
    flags += rules.noisy_image_flags(
        {n: r.denoised_noise for n, r in results.items() if r is not None and r.denoised_noise is not None}
    )
    return CaseSummary(name, expected, cells, mode, rules.sort_flags(flags), basis)
