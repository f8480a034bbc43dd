"""The cytogenetic counting rules on hand-made count lists."""

from __future__ import annotations

from deepace.report.rules import (
    CLONE_ALERTS,
    COUNT_ALERTS,
    OFF_COUNT_FINDINGS,
    Flag,
    case_count,
    cells_off_mode,
    clone_flags,
    count_histogram,
    evaluate_counts,
    median_count,
    middle_counts,
    modal_count,
    off_count_flags,
    provisional,
    review_flags,
    sort_flags,
    tied_counts,
    tied_median_counts,
)


def codes(flags: list[Flag]) -> list[str]:
    return [f.code for f in flags]


def test_modal_count_plain_and_ties() -> None:
    assert modal_count([46, 46, 45, 47]) == 46
    assert modal_count([47, 47, 47, 46]) == 47
    assert modal_count([45, 45, 47, 47]) in (45, 47)
    assert modal_count([44, 44, 46, 46]) == 46  # a tie goes to the count nearest 46
    assert modal_count([45, 45, 47, 47]) == 45  # equally near: the smaller
    assert modal_count([]) is None


def test_median_count_plain_and_ties() -> None:
    assert middle_counts([47, 45, 46]) == [46]
    assert middle_counts([45, 47, 46, 46]) == [46]  # the two middle counts agree
    assert middle_counts([48, 45, 47, 46]) == [46, 47]
    assert middle_counts([]) == []
    # one miscounted cell moves the mode of these five counts (45) but not their median (46)
    assert modal_count([45, 45, 46, 47, 46]) == 46 and modal_count([45, 45, 44, 47, 46]) == 45
    assert median_count([45, 45, 46, 47, 46]) == 46 and median_count([45, 45, 46, 47, 48]) == 46
    # two different middle counts: the more frequent one, then the one nearest 46, then the smaller
    assert median_count([45, 46, 47, 47]) == 47 and tied_median_counts([45, 46, 47, 47]) == [47]
    assert median_count([44, 45, 47, 48]) == 45 and tied_median_counts([44, 45, 47, 48]) == [45, 47]
    assert median_count([46, 46, 47, 47]) == 46 and median_count([47, 47, 48, 48]) == 47
    assert median_count([]) is None


def test_case_count_by_basis() -> None:
    counts = [45, 45, 45, 46, 46, 47, 47]
    assert case_count(counts) == 45 and case_count(counts, basis="median") == 46
    try:
        case_count(counts, basis="mean")
    except ValueError as e:
        assert "mean" in str(e)
    else:
        raise AssertionError("an unknown basis must be refused")


def test_rules_read_by_the_median_name_it_and_compare_with_it() -> None:
    flags = evaluate_counts([44, 45, 45, 46, 46], basis="median")  # median 45, mode 45 and 46 tied
    assert "TIED_MODE" not in codes(flags)
    abnormal = next(f for f in flags if f.code == "ABNORMAL_MODE")
    assert abnormal.message.startswith("Median count is 45, not 46")
    tie = next(f for f in evaluate_counts([45, 45, 47, 47], basis="median") if f.code == "TIED_MODE")
    assert "No single median count: 45 and 47" in tie.message and "45 is shown" in tie.message
    assert "TIED_MODE" in codes(evaluate_counts([44, 45, 45, 46, 46]))  # by the mode: a tie


def test_cells_off_mode_and_histogram() -> None:
    counts = [46, 45, 46, 47, 46]
    assert cells_off_mode(counts) == [1, 3]
    assert cells_off_mode(counts, mode=45) == [0, 2, 3, 4]
    assert cells_off_mode([]) == []
    assert count_histogram(counts) == {45: 1, 46: 3, 47: 1}
    assert list(count_histogram([47, 45, 46])) == [45, 46, 47]


def test_twenty_normal_cells_raise_nothing() -> None:
    assert evaluate_counts([46] * 20) == []


def test_no_cells() -> None:
    flags = evaluate_counts([])
    assert codes(flags) == ["NO_CELLS"]
    assert flags[0].severity == "alert"


def test_fewer_than_twenty_cells() -> None:
    flags = evaluate_counts([46] * 19)
    assert codes(flags) == ["TOO_FEW_CELLS"]
    assert flags[0].severity == "warning"
    assert "19 cells" in flags[0].message and "20" in flags[0].message


def test_one_cell_off_mode_asks_to_extend_the_count() -> None:
    flags = evaluate_counts([46] * 19 + [45])
    assert codes(flags) == ["EXTEND_COUNT"]
    assert "30-50" in flags[0].message
    # a single gain or two losses are not yet a clone
    assert "POSSIBLE_CLONE_GAIN" not in codes(evaluate_counts([46] * 19 + [47]))
    assert "POSSIBLE_CLONE_LOSS" not in codes(evaluate_counts([46] * 18 + [45, 45]))


def test_extended_count_only_notes_cells_off_mode() -> None:
    flags = evaluate_counts([46] * 29 + [45])
    assert codes(flags) == ["CELLS_OFF_MODE"]
    assert flags[0].severity == "info"


def test_two_cells_with_the_same_gain_suggest_a_clone() -> None:
    flags = evaluate_counts([46] * 18 + [47, 47])
    assert "POSSIBLE_CLONE_GAIN" in codes(flags)
    assert "EXTEND_COUNT" in codes(flags)
    assert codes(flags)[0] == "POSSIBLE_CLONE_GAIN"  # most severe first
    # two different gains are not the same gain
    assert "POSSIBLE_CLONE_GAIN" not in codes(evaluate_counts([46] * 18 + [47, 48]))


def test_three_cells_with_the_same_loss_suggest_a_clone() -> None:
    assert "POSSIBLE_CLONE_LOSS" in codes(evaluate_counts([46] * 17 + [45, 45, 45]))
    assert "POSSIBLE_CLONE_LOSS" not in codes(evaluate_counts([46] * 17 + [45, 45, 44]))


def test_abnormal_mode_and_a_normal_line() -> None:
    flags = evaluate_counts([47] * 18 + [46, 46])
    assert codes(flags)[:2] == ["ABNORMAL_MODE", "POSSIBLE_MOSAIC_NORMAL"]
    assert "47" in flags[0].message
    # gains and losses are measured from the mode: 48 twice over a 47 mode is a clone gain
    assert "POSSIBLE_CLONE_GAIN" in codes(evaluate_counts([47] * 18 + [48, 48]))


def test_a_tie_at_the_top_is_an_alert_not_a_quiet_46() -> None:
    # a trisomy whose cells the counter splits evenly between 46 and 47: the mode shown is 46 (ties go to
    # the count nearest 46), so only TIED_MODE says the constitutional count is undecided
    flags = evaluate_counts([46] * 9 + [47] * 9 + [45, 48])
    assert modal_count([46] * 9 + [47] * 9 + [45, 48]) == 46
    assert "ABNORMAL_MODE" not in codes(flags)
    tie = next(f for f in flags if f.code == "TIED_MODE")
    assert tie.severity == "alert" and "46 and 47" in tie.message and "9 cells each" in tie.message
    assert tied_counts([44, 44, 46, 46, 47, 47, 45]) == [44, 46, 47]
    # one count ahead by a single cell is a mode: no tie
    assert "TIED_MODE" not in codes(evaluate_counts([46] * 10 + [47] * 9 + [45]))
    assert tied_counts([46, 46, 47]) == [46]
    assert tied_counts([]) == []
    assert "TIED_MODE" in COUNT_ALERTS


def test_review_flags() -> None:
    assert review_flags(20, 20, 0, 0) == []
    assert codes(review_flags(20, 5, 3, 1)) == ["UNREADABLE_FILES", "NOT_REVIEWED", "LOW_CONFIDENCE"]
    assert "15 of 20" in review_flags(20, 5, 0, 0)[0].message
    unsure = review_flags(20, 5, 0, 0, n_unsure_cells=3)
    assert codes(unsure) == ["NOT_REVIEWED", "UNSURE_COUNTS"]
    assert unsure[1].message.startswith("3 cells whose count the model gives less than a 20% chance")


def test_sort_flags_is_stable_by_severity() -> None:
    flags = [Flag("A", "info", ""), Flag("B", "alert", ""), Flag("C", "warning", ""), Flag("D", "alert", "")]
    assert codes(sort_flags(flags)) == ["B", "D", "C", "A"]
    assert flags[0].to_dict() == {"code": "A", "severity": "info", "message": ""}


def test_count_alerts_carry_a_caveat_while_counts_are_unreviewed() -> None:
    flags = evaluate_counts([45] * 12 + [46] * 5 + [47] * 3)  # abnormal mode, a gain clone, a normal line
    assert {"POSSIBLE_CLONE_GAIN", "POSSIBLE_MOSAIC_NORMAL", "EXTEND_COUNT"} <= set(codes(flags))
    caveated = provisional(flags, n_unreviewed=4, n_cells=20)
    # the case count's alerts stay, same order and severity, with the caveat
    assert codes(caveated) == ["ABNORMAL_MODE", "JUDGED_ON_REVIEWED_CELLS"]
    alert = caveated[0]
    assert alert.severity == "alert" and alert.message.startswith(flags[0].message)
    assert "4 of 20 not yet reviewed" in alert.message
    # the findings about cells off the case count are set aside for one note, not an alert
    note = caveated[-1]
    assert note.severity == "info" and "16 of 20 so far" in note.message
    assert provisional(flags, n_unreviewed=0, n_cells=20) == flags
    # nothing to set aside: no note, other flags untouched
    plain = evaluate_counts([46] * 20)
    assert provisional(plain, n_unreviewed=20, n_cells=20) == plain == []
    too_few = evaluate_counts([46] * 5)
    assert provisional(too_few, n_unreviewed=5, n_cells=5) == too_few
    assert set(OFF_COUNT_FINDINGS) >= set(CLONE_ALERTS) | {"EXTEND_COUNT", "CELLS_OFF_MODE"}


def test_off_count_flags_of_reviewed_cells_say_so() -> None:
    flags = off_count_flags([46, 47, 46], mode=46, n_cells=20, name="median", of_reviewed=3)
    assert codes(flags) == ["EXTEND_COUNT"]
    assert flags[0].message.startswith("1 cell of the 3 reviewed differ from the median count 46")
    assert off_count_flags([46, 46], mode=46, n_cells=20) == []
    # the case's size, not the reviewed cells', decides whether to extend
    assert codes(off_count_flags([45, 46], mode=46, n_cells=30, of_reviewed=2)) == ["CELLS_OFF_MODE"]


def test_clone_flags_of_reviewed_cells_say_so() -> None:
    """The same ISCN thresholds on a subset of the cells, the message naming how many were reviewed."""
    flags = clone_flags([46, 46, 47, 47, 45], mode=46, name="median", of_reviewed=5)
    assert codes(flags) == ["POSSIBLE_CLONE_GAIN"]  # two 47s; one 45 is not a loss clone
    assert flags[0].message.startswith("2 of the 5 reviewed cells count 47 (median 46, +1)")
    assert clone_flags([46, 47, 45, 45], mode=46) == []
    assert codes(clone_flags([45, 45, 45, 46], mode=46)) == ["POSSIBLE_CLONE_LOSS"]
    assert clone_flags([45, 45, 45], mode=46)[0].message.startswith("3 cells count 45 (modal 46, -1)")
    # what evaluate_counts reports is exactly clone_flags of all the counts
    counts = [45] * 12 + [46] * 5 + [47] * 3
    assert [f for f in evaluate_counts(counts) if f.code in CLONE_ALERTS] == clone_flags(counts, 45)
