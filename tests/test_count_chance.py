"""metrics/count_chance.py: the Poisson-binomial chance of an exact count and its calibration table."""

from math import comb

import numpy as np
import pytest

from deepace.metrics.count_chance import calibration, count_distribution, exact_chance


def test_equal_scores_give_the_binomial_distribution() -> None:
    distribution = count_distribution([0.5] * 4)
    assert distribution == pytest.approx([comb(4, k) / 16 for k in range(5)])


def test_the_distribution_sums_to_one_and_its_mean_is_the_sum_of_the_scores() -> None:
    scores = np.random.default_rng(0).uniform(size=60)
    distribution = count_distribution(scores)
    assert len(distribution) == 61 and distribution.sum() == pytest.approx(1.0)
    assert (np.arange(61) * distribution).sum() == pytest.approx(scores.sum())


def test_sure_boxes_make_a_sure_count_and_doubtful_ones_an_unsure_one() -> None:
    sure = [0.999] * 46 + [0.001] * 30
    assert exact_chance(sure, 46) > 0.9
    doubtful = [1.0] * 44 + [0.5] * 4 + [0.0] * 30  # the count at threshold 0.5 is 48
    assert exact_chance(doubtful, 48) == pytest.approx(1 / 16)
    assert exact_chance(doubtful, 46) == pytest.approx(6 / 16)  # 46 is the likelier count here


def test_a_count_the_boxes_cannot_reach_has_no_chance() -> None:
    assert exact_chance([0.9, 0.8], 3) == 0.0
    assert exact_chance([0.9, 0.8], -1) == 0.0
    assert exact_chance([], 0) == 1.0


def test_calibration_bands_mean_and_auc_on_hand_made_cells() -> None:
    chances = [0.1, 0.3, 0.35, 0.5, 0.9, 1.0]
    exact = [False, False, True, True, True, True]
    result = calibration(chances, exact)
    assert result["n"] == 6
    assert result["mean_chance"] == pytest.approx(100 * sum(chances) / 6)
    assert result["exact"] == pytest.approx(100 * 4 / 6)
    # in each of the 4 × 2 (exact, miscounted) pairs the exact cell has the higher chance
    assert result["auc"] == pytest.approx(1.0)
    assert [b["cells"] for b in result["bands"]] == [1, 2, 1, 2]  # 1.0 falls in the top band
    assert [b["exact"] for b in result["bands"]] == [0.0, 50.0, 100.0, 100.0]


def test_calibration_auc_is_a_half_for_a_chance_that_tells_nothing() -> None:
    result = calibration([0.4, 0.4, 0.4, 0.4], [True, False, True, False])
    assert result["auc"] == pytest.approx(0.5)
    assert calibration([0.2, 0.7], [True, True])["auc"] is None  # no miscounted cell to tell apart
    with pytest.raises(ValueError):
        calibration([0.2], [True, False])
