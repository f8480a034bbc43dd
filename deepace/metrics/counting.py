"""How close the chromosome count is to the expected count, per image."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def count_accuracy(
    predicted_counts: Sequence[int], expected_counts: Sequence[int | None]
) -> dict[str, float | int | None]:
    """Exact and within-one agreement (%), mean absolute error and bias = mean(predicted - expected).

    Images whose expected count is None are skipped; "n" is the number of images used. With no
    usable image, every value but "n" is None.
    """
    if len(predicted_counts) != len(expected_counts):
        raise ValueError(f"{len(predicted_counts)} predicted counts but {len(expected_counts)} expected")
    pairs = [(p, e) for p, e in zip(predicted_counts, expected_counts, strict=True) if e is not None]
    if not pairs:
        return {"exact": None, "within1": None, "mae": None, "bias": None, "n": 0}
    pred, exp = np.asarray(pairs, dtype=np.float64).T
    err = pred - exp
    return {
        "exact": 100.0 * float(np.mean(err == 0)),
        "within1": 100.0 * float(np.mean(np.abs(err) <= 1)),
        "mae": float(np.mean(np.abs(err))),
        "bias": float(np.mean(err)),
        "n": len(pairs),
    }
