"""Counting with a trained detector: the one entry point used by `count`, `case` and the review app."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class CellResult:
    """What the model found in one image. Boxes are (x1, y1, x2, y2) in original-image pixels,
    sorted by falling score; they go down to a low score so that AP can be computed."""

    image: Path
    width: int = 0
    height: int = 0
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), dtype=np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=np.float32))
    score_threshold: float = 0.5
    low_confidence_band: tuple[float, float] = (0.3, 0.7)
    error: str | None = None

    @property
    def count(self) -> int:
        """Chromosomes counted: detections scoring at least the threshold."""
        return int((self.scores >= self.score_threshold).sum())

    @property
    def low_confidence(self) -> int:
        """Detections whose score lies in the band around the threshold: the ones a reviewer should check."""
        lo, hi = self.low_confidence_band
        return int(((self.scores >= lo) & (self.scores < hi)).sum())
