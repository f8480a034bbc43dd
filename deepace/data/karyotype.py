"""Chromosome classes (karyotype numbers) from the class names that annotations carry.

Taichung's VOC files name each chromosome by its Denver group and number ("A1" … "G22", "X", "Y"); the
M-FISH label images and the synthetic spreads name them "1" … "22", "X", "Y". Both map to 1…22, 23 (X)
and 24 (Y); any other name (e.g. "chromosome" in a single-class annotation) is 0, unknown.
"""

from __future__ import annotations

import re

__all__ = ["NUM_KARYOTYPE_CLASSES", "karyotype_class"]

NUM_KARYOTYPE_CLASSES = 24
_NAME = re.compile(r"^(?:[A-G])?(\d{1,2}|X|Y)$", re.IGNORECASE)


def karyotype_class(name: str) -> int:
    """1…22 for autosomes, 23 for X, 24 for Y, 0 when `name` names none of them."""
    match = _NAME.match(name.strip())
    if match is None:
        return 0
    value = match.group(1).upper()
    if value == "X":
        return 23
    if value == "Y":
        return 24
    number = int(value)
    return number if 1 <= number <= 22 else 0
