"""The prediction file: what `deepace count --json` writes and `deepace evaluate --pred` reads.

Format::

    {"images": [{"image": PATH, "count": N, "score_threshold": T, "exact_chance": P,
                 "detections": [{"box": [x1, y1, x2, y2], "score": S}, ...]}, ...]}

Detections go down to a low score (so that AP can be computed); ``count`` is the number of
detections scoring at least ``score_threshold``; ``exact_chance`` the model's own chance that the count
is exact (metrics/count_chance.py). On reading, both are recomputed from the detections (the stored ones
are informational) and unknown keys are ignored.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deepace.data.coco import atomic_write_text
from deepace.data.records import ImageRecord

DEFAULT_SCORE_THRESHOLD = 0.5


class PredictionFileError(ValueError):
    """A prediction file that cannot be read (missing, not json, wrong structure, bad values)."""


@dataclass
class ImagePrediction:
    """The detections for one image: boxes (x1, y1, x2, y2) in image pixels and their scores;
    `view_counts`, when the image was counted in several orientations (deepace/views.py), each one's count
    (the detections are the median one's)."""

    image: Path
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), dtype=np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=np.float32))
    score_threshold: float = DEFAULT_SCORE_THRESHOLD
    view_counts: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        self.image = Path(self.image)
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.score_threshold = float(self.score_threshold)
        if len(self.boxes) != len(self.scores):
            raise ValueError(f"{self.image}: {len(self.boxes)} boxes but {len(self.scores)} scores")

    @property
    def count(self) -> int:
        """Chromosomes counted: detections scoring at least the threshold."""
        return self.count_at(self.score_threshold)

    @property
    def exact_chance(self) -> float:
        """The model's own chance that `count` is exact, from the scores (metrics/count_chance.py)."""
        from deepace.metrics.count_chance import exact_chance

        return exact_chance(self.scores, self.count)

    def count_at(self, score_threshold: float) -> int:
        """Detections scoring >= score_threshold, compared in float32 (as metrics.detection.at_or_above)."""
        return int((self.scores >= np.float32(score_threshold)).sum())

    @classmethod
    def from_result(cls, result: Any) -> ImagePrediction:
        """From anything with .image, .boxes, .scores and .score_threshold, and perhaps .view_counts (e.g.
        inference.CellResult)."""
        views = getattr(result, "view_counts", None)
        return cls(result.image, result.boxes, result.scores, result.score_threshold, views)


# ---------------------------------------------------------------------------------------------- writing


def _short_float(value: float) -> float:
    """The shortest decimal that reads back as the same float32 (keeps files small and exact)."""
    return float(str(np.float32(value)))


def prediction_to_dict(pred: ImagePrediction) -> dict[str, Any]:
    """One `images` entry; detections in falling score order."""
    order = np.argsort(-pred.scores, kind="stable")
    detections = [
        {"box": [_short_float(v) for v in pred.boxes[i]], "score": _short_float(pred.scores[i])}
        for i in order
    ]
    entry: dict[str, Any] = {
        "image": str(pred.image),
        "count": pred.count,
        "score_threshold": pred.score_threshold,
        "exact_chance": round(pred.exact_chance, 3),
    }
    if pred.view_counts is not None:
        entry["view_counts"] = [int(c) for c in pred.view_counts]
    entry["detections"] = detections
    return entry


def write_predictions(preds: Iterable[ImagePrediction], path: str | Path) -> None:
    """Write the prediction file atomically (a temporary file in the same folder, then a rename)."""
    text = json.dumps({"images": [prediction_to_dict(p) for p in preds]}, indent=1)
    atomic_write_text(path, text + "\n")


# ---------------------------------------------------------------------------------------------- reading


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PredictionFileError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _parse_detections(raw: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(raw, list):
        raise PredictionFileError(f"{where}: 'detections' must be a list")
    boxes = np.zeros((len(raw), 4), dtype=np.float32)
    scores = np.zeros((len(raw),), dtype=np.float32)
    for j, det in enumerate(raw):
        at = f"{where}.detections[{j}]"
        if not isinstance(det, dict) or "box" not in det or "score" not in det:
            raise PredictionFileError(f"{at}: expected an object with 'box' and 'score'")
        box = det["box"]
        if not isinstance(box, list) or len(box) != 4:
            raise PredictionFileError(f"{at}.box: expected 4 numbers [x1, y1, x2, y2], got {box!r}")
        boxes[j] = [_number(v, f"{at}.box") for v in box]
        scores[j] = _number(det["score"], f"{at}.score")
    return boxes, scores


def _parse_image(entry: Any, where: str) -> ImagePrediction:
    if not isinstance(entry, dict):
        raise PredictionFileError(f"{where}: expected an object")
    image = entry.get("image")
    if not isinstance(image, str) or not image:
        raise PredictionFileError(f"{where}: missing 'image' path")
    if "detections" not in entry:
        raise PredictionFileError(f"{where} ({image}): missing 'detections'")
    boxes, scores = _parse_detections(entry["detections"], f"{where} ({image})")
    threshold = _number(entry.get("score_threshold", DEFAULT_SCORE_THRESHOLD), f"{where}.score_threshold")
    views = entry.get("view_counts")
    if views is not None:
        whole = isinstance(views, list) and all(isinstance(c, int) and not isinstance(c, bool) for c in views)
        if not whole:
            raise PredictionFileError(f"{where}.view_counts: expected a list of whole numbers, got {views!r}")
        views = tuple(views)
    return ImagePrediction(Path(image), boxes, scores, threshold, views)


def read_predictions(path: str | Path) -> list[ImagePrediction]:
    """Read a prediction file; raise PredictionFileError naming the file and the first problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PredictionFileError(f"{path}: prediction file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PredictionFileError(f"{path}: cannot read ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PredictionFileError(f"{path}: not valid json ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise PredictionFileError(f"{path}: expected an object with an 'images' list")
    try:
        return [_parse_image(entry, f"images[{i}]") for i, entry in enumerate(data["images"])]
    except PredictionFileError as exc:
        raise PredictionFileError(f"{path}: {exc}") from None


# ---------------------------------------------------------------------------------------------- matching


def _resolved(p: Path) -> Path:
    try:
        return p.expanduser().resolve()
    except (OSError, RuntimeError):
        return p


def match_predictions(
    records: Sequence[ImageRecord], preds: Sequence[ImagePrediction]
) -> tuple[list[ImagePrediction | None], list[str]]:
    """Pair each ground-truth record with its prediction: by resolved path, else by file name.

    A file name is used only when it is unique among the predictions. Returns one prediction (or None)
    per record, in record order, and human-readable warnings (duplicates, ambiguous names, images
    without prediction, predictions without image).
    """
    warnings: list[str] = []
    by_path: dict[Path, int] = {}
    by_name: dict[str, list[int]] = {}
    for i, pred in enumerate(preds):
        key = _resolved(pred.image)
        if key in by_path:
            warnings.append(f"{pred.image}: more than one prediction entry; using the first")
            continue
        by_path[key] = i
        by_name.setdefault(pred.image.name, []).append(i)

    # Exact (resolved) paths first, so that a file-name fallback cannot steal an exact match.
    matched_idx: list[int | None] = [by_path.get(_resolved(rec.path)) for rec in records]
    used = {i for i in matched_idx if i is not None}
    for r, rec in enumerate(records):
        if matched_idx[r] is not None:
            continue
        candidates = [i for i in by_name.get(rec.path.name, []) if i not in used]
        if len(candidates) == 1:
            matched_idx[r] = candidates[0]
            used.add(candidates[0])
        elif len(candidates) > 1:
            warnings.append(f"{rec.path}: {len(candidates)} predictions share its file name; none used")

    matched = [None if i is None else preds[i] for i in matched_idx]
    missing = [str(rec.path) for rec, i in zip(records, matched_idx, strict=True) if i is None]
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        warnings.append(
            f"{len(missing)} ground-truth image(s) have no prediction, counted as all missed: {shown}"
        )
    unused = len(by_path) - len(used)
    if unused:
        warnings.append(f"{unused} prediction(s) match no ground-truth image and are ignored")
    return matched, warnings
