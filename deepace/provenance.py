"""Which images a model was trained on, so that its counting threshold is not tuned on them.

Heads and a rescorer score the cells they were trained on higher than new ones, so a threshold tuned on
those cells comes out too high (BENCHMARKS.md, session 34: heads fine-tuned at fc6 rank 512 tuned 0.525 on
200 of their training cells against 0.375 on validation cells, and counted 35.0% of the validation cells
exactly at 0.525 against 39.0%). Model files record a fingerprint of each training image's content under
META_KEY (the content, not the name: a lab's file names can carry patient identifiers, and a copy under
another name is the same image, while an edited copy, e.g. a blanked one, is another); calibration warns
when its images overlap them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

META_KEY = "training_images"


def fingerprint(path: Path) -> str:
    """A short digest of the file's bytes (64 bits: collisions are out of reach for any lab's images)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def fingerprints(paths: Iterable[Path]) -> list[str]:
    """Sorted, without repeats (an image listed twice, e.g. repeated for weight, is one image)."""
    return sorted({fingerprint(p) for p in paths})


def identical_images(paths: Iterable[Path]) -> list[list[Path]]:
    """Groups of two or more files with the same content (files that cannot be read are left out)."""
    groups: dict[str, list[Path]] = {}
    for path in paths:
        if Path(path).is_file():
            groups.setdefault(fingerprint(path), []).append(Path(path))
    return [group for group in groups.values() if len(group) > 1]


def trained_on(meta: Any) -> set[str]:
    """Every fingerprint a model file's meta records, at any depth: a model fine-tuned from another keeps
    the base's meta (`base_meta`), and the base's training images are its training images too."""
    found: set[str] = set()
    if isinstance(meta, dict):
        for key, value in meta.items():
            if key == META_KEY and isinstance(value, list):
                found.update(str(v) for v in value)
            else:
                found |= trained_on(value)
    elif isinstance(meta, list):
        for value in meta:
            found |= trained_on(value)
    return found


def calibration_warning(meta: Any, paths: list[Path]) -> str | None:
    """A warning when some of the images a threshold is about to be tuned on trained the model."""
    seen = trained_on(meta)
    if not seen or not paths:
        return None
    overlap = sum(fingerprint(p) in seen for p in paths)
    if not overlap:
        return None
    return (
        f"warning: {overlap} of the {len(paths)} calibration images trained this model; a threshold "
        "tuned on them comes out too high for new cells (deepace/provenance.py). Calibrate on annotated "
        "cells it has not seen."
    )
