"""Choosing the counting threshold, and the counts' lean at it, on hand-made scores."""

import numpy as np

from deepace.metrics.threshold import count_bias, tune_score_threshold


def test_the_threshold_that_counts_these_cells_best() -> None:
    # cell 1: 3 chromosomes at 0.9 and a false box at 0.4; cell 2: 4 chromosomes, one of them weak (0.4),
    # and a false box at 0.2
    scores = [np.array([0.9, 0.9, 0.9, 0.4]), np.array([0.9, 0.9, 0.9, 0.4, 0.2])]
    threshold, exact = tune_score_threshold(scores, [3, 4])
    # above 0.4 the first cell is right, the second one short; in (0.2, 0.4] the reverse; at 0.2 and
    # below neither: a tie at 50% goes to the lower error, then to the threshold nearest 0.5
    assert threshold == 0.5 and exact == 50.0
    assert tune_score_threshold([], []) == (0.5, 0.0)


def test_count_bias_is_the_mean_lean_of_the_counts() -> None:
    scores = [np.array([0.9, 0.9, 0.4]), np.array([0.9, 0.2])]
    assert count_bias(scores, [2, 2], threshold=0.3) == 0.0  # +1 and -1
    assert count_bias(scores, [2, 2], threshold=0.5) == -0.5  # 0 and -1
    assert count_bias(scores, [2, 2], threshold=0.1) == 0.5  # +1 and 0
    assert count_bias([], [], threshold=0.5) == 0.0
