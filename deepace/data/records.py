"""The one internal annotation record: an image, its chromosome boxes and what we know of its count."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


class AnnotationError(ValueError):
    """An annotation that cannot be used (bad box, missing image, broken file)."""


@dataclass
class ImageRecord:
    """One image with its boxes in absolute pixel coordinates (x1, y1, x2, y2)."""

    path: Path
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), dtype=np.float32))
    labels: list[str] | None = None
    width: int | None = None
    height: int | None = None
    expected_count: int | None = None
    karyotype: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # extra facts kept through COCO round trips

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        if self.labels is not None and len(self.labels) != len(self.boxes):
            raise AnnotationError(f"{self.path}: {len(self.labels)} labels for {len(self.boxes)} boxes")

    @property
    def count(self) -> int:
        return len(self.boxes)

    def validate(self) -> None:
        """Raise AnnotationError naming the image and the first bad box."""
        for i, (x1, y1, x2, y2) in enumerate(self.boxes):
            if not np.all(np.isfinite([x1, y1, x2, y2])):
                raise AnnotationError(f"{self.path}: box {i} has a non-finite coordinate")
            if x2 <= x1 or y2 <= y1:
                raise AnnotationError(
                    f"{self.path}: box {i} ({x1:g},{y1:g},{x2:g},{y2:g}) has zero or negative size"
                )
            if self.width is not None and self.height is not None:
                if x1 < -1 or y1 < -1 or x2 > self.width + 1 or y2 > self.height + 1:
                    raise AnnotationError(
                        f"{self.path}: box {i} ({x1:g},{y1:g},{x2:g},{y2:g}) lies outside the "
                        f"{self.width}x{self.height} image"
                    )


def check_unique_stems(records: list[ImageRecord], fmt: str) -> None:
    """Folder formats write one file per image stem: two images sharing a stem would overwrite each other."""
    seen: dict[str, Path] = {}
    for r in records:
        if r.path.stem in seen:
            raise AnnotationError(
                f"{r.path}: same file name stem as {seen[r.path.stem]}; {fmt} needs unique stems"
            )
        seen[r.path.stem] = r.path
