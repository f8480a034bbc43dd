"""Counts after review (metrics.review): flagged boxes are kept if they are chromosomes, dropped if not."""

import numpy as np

from deepace.metrics.review import review_effect, reviewed_count

GT = np.array([[0, 0, 10, 30], [20, 0, 30, 30], [40, 0, 50, 30]], dtype=np.float32)
# A sure chromosome, a false box just above the threshold, a chromosome just below it, a second box on
# the first chromosome just below it, and a chromosome far below the band.
BOXES = np.array(
    [[0, 0, 10, 30], [60, 60, 70, 90], [20, 0, 30, 30], [0, 1, 10, 31], [40, 0, 50, 30]], dtype=np.float32
)
SCORES = np.array([0.95, 0.55, 0.45, 0.42, 0.10], dtype=np.float32)


def test_checking_the_band_drops_the_false_box_adds_the_missed_one_and_not_the_duplicate() -> None:
    assert reviewed_count(GT, BOXES, SCORES, 0.5, margin=0.0) == (2, 0)  # the model's own count
    assert reviewed_count(GT, BOXES, SCORES, 0.5, margin=0.1) == (2, 3)  # 0.95 + the chromosome at 0.45
    assert reviewed_count(GT, BOXES, SCORES, 0.5, margin=0.5) == (3, 5)  # the 0.10 one is flagged too


def test_review_effect_reports_flags_per_cell_and_count_accuracy_per_margin() -> None:
    effect = review_effect([GT, GT], [(BOXES, SCORES)] * 2, [0.5, 0.5], [3, 3], margins=[0.0, 0.5])
    assert effect["0"]["exact"] == 0.0 and effect["0"]["flagged_mean"] == 0.0
    assert effect["0.5"]["exact"] == 100.0 and effect["0.5"]["flagged_median"] == 5.0


def test_review_effect_splits_the_models_own_counts_by_whether_a_cell_has_flags() -> None:
    # cell 1 as above (own count 2 of 3: flags in the band); cell 2 has only the sure chromosome, right
    sure = (BOXES[:1], SCORES[:1])
    effect = review_effect([GT, GT[:1]], [(BOXES, SCORES), sure], [0.5, 0.5], [3, 1], margins=[0.1])["0.1"]
    assert effect["unflagged_cells"] == 1
    assert (effect["unflagged_exact"], effect["flagged_exact"]) == (100.0, 0.0)
    assert effect["flagged_within1"] == 100.0  # 2 against 3
    # a band wide enough to flag the sure box too leaves no unflagged cell
    wide = review_effect([GT, GT[:1]], [(BOXES, SCORES), sure], [0.5, 0.5], [3, 1], margins=[0.5])["0.5"]
    assert wide["unflagged_cells"] == 0 and wide["unflagged_exact"] is None
