"""Choosing the counting threshold: the score above which a detection counts as a chromosome."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def tune_score_threshold(
    scores_per_image: Sequence[np.ndarray],
    expected: Sequence[int],
    candidates: Sequence[float] = tuple(np.round(np.arange(0.05, 0.951, 0.025), 3)),
) -> tuple[float, float]:
    """The candidate threshold that maximises exact-count accuracy (ties: lowest mean absolute error,
    then closest to 0.5). Returns (threshold, exact-count share in %)."""
    if not scores_per_image:
        return 0.5, 0.0
    expected_arr = np.asarray(expected)
    best: tuple[float, float, float, float] | None = None
    for t in candidates:
        counts = np.array([int((s >= t).sum()) for s in scores_per_image])
        exact = float((counts == expected_arr).mean() * 100)
        mae = float(np.abs(counts - expected_arr).mean())
        key = (exact, -mae, -abs(t - 0.5))
        if best is None or key > best[:3]:
            best = (*key, float(t))
    assert best is not None
    return best[3], best[0]


# Beyond this mean lean of the counts (a cell), reading a case by the median of its automatic counts loses
# its edge over the mode (BENCHMARKS.md, "Session 24": a model at -0.54 read normal cases right in 76.5%
# by the median against 84.0% by the mode; the shipped one, at +0.15, in 93.5% against 90.2%).
COUNT_LEAN_WARNING = 0.3


def count_bias(scores_per_image: Sequence[np.ndarray], expected: Sequence[int], threshold: float) -> float:
    """The mean of counted minus expected chromosomes a cell at `threshold` (0 for no images)."""
    if not scores_per_image:
        return 0.0
    counts = np.array([int((s >= threshold).sum()) for s in scores_per_image])
    return float((counts - np.asarray(expected)).mean())
