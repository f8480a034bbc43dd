"""Hand-computed checks of the measuring instrument: IoU, the paper's matching rule, AP, WCR, AER."""

from __future__ import annotations

import numpy as np
import pytest

from deepace.data.predictions import ImagePrediction
from deepace.data.records import ImageRecord
from deepace.metrics import (
    PAPER_IOU_THRESHOLDS,
    average_precision,
    box_iou,
    coco_map,
    count_accuracy,
    counted_box_errors,
    evaluate_detections,
    evaluate_records,
    match_image,
    share_interval,
)

# --------------------------------------------------------------------------- the hand-made case
# Image A: two GT; p1 hits g1 exactly (0.9), p2 is a duplicate of g1 (IoU 90/110 = 0.818, 0.7);
#          g2 is missed.
# Image B: one GT; p3 overlaps it by IoU 50/150 = 0.333 only and scores 0.3 (below the 0.5 count
#          threshold); p4 = [0,0,10,8] has IoU 80/100 = 0.8 with g3 (0.6).
G1, G2, G3 = [0, 0, 10, 10], [20, 0, 30, 10], [0, 0, 10, 10]
P1, P2, P3, P4 = [0, 0, 10, 10], [1, 0, 11, 10], [5, 0, 15, 10], [0, 0, 10, 8]
GTS = [np.array([G1, G2], float), np.array([G3], float)]
PREDS = [
    (np.array([P1, P2], float), np.array([0.9, 0.7])),
    (np.array([P3, P4], float), np.array([0.3, 0.6])),
]

# IoU 0.5 ... 0.75: TPs p1, p4. Counted (score >= 0.5): A has FP p2 + FN g2, B is all right.
#   WCR = 1/2 = 50 %, AER = (1 + 1) / 3 = 66.67 %.
#   AP over all 4 detections, pooled by score: .9 TP, .7 FP, .6 TP, .3 FP ->
#   precision 1, 1/2, 2/3, 1/2 at recall 1/3, 1/3, 2/3, 2/3; envelope 1 on (0, 1/3], 2/3 on (1/3, 2/3]
#   -> AP = 1/3 * 1 + 1/3 * 2/3 = 5/9 = 55.56 %.
# IoU 0.8 and 0.85: p4's IoU 0.8 is not > 0.8, so p4 is a FP and g3 a FN.
#   FP 2, FN 2, AER 4/3 = 133.33 %, WCR 0; AP = 1/3 (only p1, first) = 33.33 %.
LOW = {"AP": 500 / 9, "WCR": 50.0, "AER": 200 / 3, "FP": 1, "FN": 1}
HIGH = {"AP": 100 / 3, "WCR": 0.0, "AER": 400 / 3, "FP": 2, "FN": 2}


def _check(row: dict, expected: dict) -> None:
    assert set(row) == {"AP", "WCR", "AER", "FP", "FN"}
    for key, value in expected.items():
        assert row[key] == pytest.approx(value, abs=1e-9), key


def test_hand_case_all_thresholds() -> None:
    out = evaluate_detections(GTS, PREDS, score_threshold=0.5)
    assert list(out) == ["0.5", "0.55", "0.6", "0.65", "0.7", "0.75", "0.8", "0.85"]
    for key in ["0.5", "0.55", "0.6", "0.65", "0.7", "0.75"]:
        _check(out[key], LOW)
    for key in ["0.8", "0.85"]:
        _check(out[key], HIGH)


def test_paper_thresholds_are_table3_rows() -> None:
    assert PAPER_IOU_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85)


def test_hand_case_match_image_b() -> None:
    tp, scores, n_fp, n_fn = match_image(GTS[1], *PREDS[1], iou_threshold=0.5)
    assert tp.tolist() == [True, False]  # score order: p4 (0.6) then p3 (0.3)
    assert scores.tolist() == [0.6, 0.3]
    assert (n_fp, n_fn) == (1, 0)


def test_per_image_score_threshold() -> None:
    # With threshold 0.2 in image B, the low-IoU p3 is counted too: B gains a FP and is no longer right.
    row = evaluate_detections(GTS, PREDS, iou_thresholds=[0.5], score_threshold=[0.5, 0.2])["0.5"]
    _check(row, {"AP": 500 / 9, "WCR": 0.0, "AER": 100.0, "FP": 2, "FN": 1})


# --------------------------------------------------------------------------- the matching rule


def test_best_iou_gt_already_taken_is_fp_even_if_another_gt_is_free() -> None:
    # g1, g2 overlap; b's best GT is g1 (IoU 95/105 = 0.905) which a has taken, although g2 is free
    # and overlaps b by 85/115 = 0.739 > 0.5. Paper rule: b is a FP and g2 a FN.
    gt = np.array([[0, 0, 10, 10], [2, 0, 12, 10]], float)
    boxes = np.array([[0.5, 0, 10.5, 10], [0, 0, 10, 10]], float)  # input order: b, a
    scores = np.array([0.8, 0.9])
    tp, sorted_scores, n_fp, n_fn = match_image(gt, boxes, scores, 0.5)
    assert sorted_scores.tolist() == [0.9, 0.8]
    assert tp.tolist() == [True, False]
    assert (n_fp, n_fn) == (1, 1)
    # The COCO rule (best *free* GT) would match b to g2: AP50 is 100 there, 50 with the paper rule.
    assert evaluate_detections([gt], [(boxes, scores)], [0.5])["0.5"]["AP"] == pytest.approx(50.0)
    assert coco_map([gt], [(boxes, scores)])["AP50"] == pytest.approx(100.0)


def test_iou_equal_to_threshold_is_not_a_match() -> None:
    gt = np.array([[0, 0, 10, 10]], float)
    pred = np.array([[0, 0, 10, 5]], float)  # IoU exactly 50/100
    assert box_iou(pred, gt)[0, 0] == 0.5
    tp, _, n_fp, n_fn = match_image(gt, pred, np.array([0.9]), 0.5)
    assert tp.tolist() == [False] and (n_fp, n_fn) == (1, 1)
    tp, _, n_fp, n_fn = match_image(gt, pred, np.array([0.9]), 0.49)
    assert tp.tolist() == [True] and (n_fp, n_fn) == (0, 0)


def test_higher_score_wins_the_gt_regardless_of_input_order() -> None:
    gt = np.array([[0, 0, 10, 10]], float)
    boxes = np.array([[0, 0, 10, 9], [0, 0, 10, 10]], float)
    tp, scores, _, _ = match_image(gt, boxes, np.array([0.95, 0.6]), 0.5)
    assert scores.tolist() == [0.95, 0.6] and tp.tolist() == [True, False]


# --------------------------------------------------------------------------- IoU


def test_box_iou_values_and_shapes() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 2, 2]], float)
    b = np.array([[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30]], float)
    iou = box_iou(a, b)
    assert iou.shape == (2, 3)
    np.testing.assert_allclose(iou, [[50 / 150, 1.0, 0.0], [0.0, 4 / 100, 0.0]])
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 3)
    assert box_iou(a, np.zeros((0, 4))).shape == (2, 0)


def test_box_iou_degenerate_boxes_give_zero_not_nan() -> None:
    iou = box_iou(np.array([[3, 3, 3, 3]], float), np.array([[3, 3, 3, 3], [0, 0, 10, 10]], float))
    assert iou.tolist() == [[0.0, 0.0]]


# --------------------------------------------------------------------------- AP


def test_ap_is_voc_all_point_interpolated() -> None:
    # 4 GT, detections in score order TP, FP, TP, TP: precision 1, 1/2, 2/3, 3/4 at recall
    # 1/4, 1/4, 1/2, 3/4. Envelope: 1 on (0, 1/4], 3/4 on (1/4, 3/4] -> AP = 1/4 + 1/2 * 3/4 = 0.625.
    # (Not interpolated: 0.6042; VOC 11-point: 0.6136.)
    gt = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10]], float)
    boxes = np.array([gt[0], [100, 100, 110, 110], gt[1], gt[2]])
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    row = evaluate_detections([gt], [(boxes, scores)], [0.5])["0.5"]
    assert row["AP"] == pytest.approx(62.5, abs=1e-9)
    assert average_precision(np.array([1, 0, 1, 1], bool), scores, 4) == pytest.approx(0.625)


def test_ap_uses_detections_below_the_score_threshold() -> None:
    gt = np.array([[0, 0, 10, 10]], float)
    row = evaluate_detections([gt], [(gt.copy(), np.array([0.1]))], [0.5], score_threshold=0.5)["0.5"]
    _check(row, {"AP": 100.0, "WCR": 0.0, "AER": 100.0, "FP": 0, "FN": 1})


def test_ap_edge_cases() -> None:
    assert average_precision(np.zeros(0, bool), np.zeros(0), 3) == 0.0
    assert average_precision(np.ones(2, bool), np.array([0.5, 0.4]), 0) is None


def test_score_equal_to_threshold_counts_in_float32() -> None:
    gt = np.array([[0, 0, 10, 10]], float)
    scores = np.array([0.7], np.float32)  # float32(0.7) < 0.7 in float64
    row = evaluate_detections([gt], [(gt.copy(), scores)], [0.5], score_threshold=0.7)["0.5"]
    assert (row["FP"], row["FN"], row["WCR"]) == (0, 0, 100.0)
    assert ImagePrediction("x.png", gt, scores, 0.7).count == 1


def test_counted_box_errors_per_image_add_up_to_aers_numerator() -> None:
    # image A: p2 (a duplicate, 0.7) is false and g2 missed; image B: p3 is below 0.5, p4 hits g3
    per_image = [
        counted_box_errors(gt, boxes, scores, 0.5, 0.5)
        for gt, (boxes, scores) in zip(GTS, PREDS, strict=True)
    ]
    assert per_image == [2, 0]
    row = evaluate_detections(GTS, PREDS, [0.5], score_threshold=0.5)["0.5"]
    assert sum(per_image) == row["FP"] + row["FN"]
    assert counted_box_errors(GTS[1], *PREDS[1], 0.25, 0.5) == 1  # p3 counted now: a false box
    assert counted_box_errors(GTS[1], np.zeros((0, 4)), np.zeros(0), 0.5, 0.5) == 1  # nothing found
    # a score written as 0.7 counts at threshold 0.7 (compared in float32, as evaluate_detections does),
    # also when it comes back from JSON as the float64 of its float32
    gt = np.array([[0, 0, 10, 10]], float)
    assert counted_box_errors(gt, gt.copy(), [float(np.float32(0.7))], 0.7, 0.5) == 0


# --------------------------------------------------------------------------- empty images


def test_empty_images() -> None:
    gt = np.array([[0, 0, 10, 10]], float)
    none = (np.zeros((0, 4)), np.zeros(0))
    # An image with neither GT nor detections is all right.
    row = evaluate_detections([np.zeros((0, 4)), gt], [none, (gt.copy(), np.array([0.9]))], [0.5])["0.5"]
    _check(row, {"AP": 100.0, "WCR": 100.0, "AER": 0.0, "FP": 0, "FN": 0})
    # GT but no detection: all FN.
    row = evaluate_detections([gt], [none], [0.5])["0.5"]
    _check(row, {"AP": 0.0, "WCR": 0.0, "AER": 100.0, "FP": 0, "FN": 1})
    # Detections but no GT anywhere: FP; AP and AER have nothing to divide by.
    row = evaluate_detections([np.zeros((0, 4))], [(gt.copy(), np.array([0.9]))], [0.5])["0.5"]
    assert row == {"AP": None, "WCR": 0.0, "AER": None, "FP": 1, "FN": 0}
    # No images at all.
    assert evaluate_detections([], [], [0.5])["0.5"] == {
        "AP": None,
        "WCR": None,
        "AER": None,
        "FP": 0,
        "FN": 0,
    }


def test_match_image_empty() -> None:
    gt = np.array([[0, 0, 10, 10], [20, 0, 30, 10]], float)
    tp, scores, n_fp, n_fn = match_image(gt, np.zeros((0, 4)), np.zeros(0), 0.5)
    assert tp.shape == (0,) and scores.shape == (0,) and (n_fp, n_fn) == (0, 2)
    tp, _, n_fp, n_fn = match_image(np.zeros((0, 4)), gt, np.array([0.2, 0.9]), 0.5)
    assert tp.tolist() == [False, False] and (n_fp, n_fn) == (2, 0)


# --------------------------------------------------------------------------- counting


def test_count_accuracy() -> None:
    out = count_accuracy([46, 45, 47, 50, 46], [46, 46, 46, 46, None])
    # errors 0, -1, +1, +4 (the image without expected count is skipped)
    intervals = {k: out.pop(k) for k in ("exact_ci95", "within1_ci95")}
    assert out == {"exact": 25.0, "within1": 75.0, "mae": 1.5, "bias": 1.0, "n": 4}
    # Wilson: (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n), z = 1.96; 3 of 4 mirrors 1 of 4
    assert intervals["exact_ci95"] == pytest.approx([4.56, 69.94], abs=0.01)
    assert intervals["within1_ci95"] == pytest.approx([30.06, 95.44], abs=0.01)


def test_share_interval_textbook_values() -> None:
    # none of 10: the upper bound is z²/(n + z²); all of 10 mirrors it; the interval narrows with n
    assert share_interval(0, 10) == pytest.approx([0.0, 100 * 1.96**2 / (10 + 1.96**2)], abs=0.01)
    assert share_interval(10, 10) == pytest.approx([100 - 100 * 1.96**2 / (10 + 1.96**2), 100.0], abs=0.01)
    low37, high37 = share_interval(17, 37)
    low200, high200 = share_interval(92, 200)
    assert low37 < 46 < high37 and high37 - low37 > 2 * (high200 - low200) * 0.9


def test_count_accuracy_nothing_to_compare() -> None:
    assert count_accuracy([46], [None]) == {
        "exact": None,
        "within1": None,
        "mae": None,
        "bias": None,
        "n": 0,
        "exact_ci95": None,
        "within1_ci95": None,
    }
    with pytest.raises(ValueError):
        count_accuracy([1, 2], [1])


# --------------------------------------------------------------------------- COCO mAP


def test_coco_map_perfect_and_quiet(capsys: pytest.CaptureFixture[str]) -> None:
    out = coco_map(GTS, [(g.copy(), np.full(len(g), 0.9)) for g in GTS])
    assert out == {"mAP": pytest.approx(100.0), "AP50": pytest.approx(100.0)}
    assert capsys.readouterr().out == ""


def test_coco_map_edge_cases() -> None:
    assert coco_map([np.zeros((0, 4))], [(np.zeros((0, 4)), np.zeros(0))]) == {"mAP": None, "AP50": None}
    assert coco_map(GTS, [(np.zeros((0, 4)), np.zeros(0))] * 2) == {"mAP": 0.0, "AP50": 0.0}


def test_coco_map_partial() -> None:
    # One of two GT found exactly, nothing else: recall 1/2 at precision 1 -> AP ~ 50 (101-point COCO).
    gt = np.array([[0, 0, 10, 10], [20, 0, 30, 10]], float)
    out = coco_map([gt], [(gt[:1].copy(), np.array([0.9]))])
    assert out["AP50"] == pytest.approx(100 * 51 / 101)
    assert out["mAP"] == pytest.approx(100 * 51 / 101)


# --------------------------------------------------------------------------- evaluate_records


def _records() -> list[ImageRecord]:
    return [
        ImageRecord("/data/a.png", GTS[0], expected_count=2),
        ImageRecord("/data/b.png", GTS[1]),  # no expected_count: the box count (1) is used
        ImageRecord("/data/c.png", [G1], expected_count=1),  # no prediction at all
    ]


def _predictions() -> list[ImagePrediction]:
    return [
        ImagePrediction("/data/a.png", *PREDS[0], score_threshold=0.5),
        ImagePrediction("/elsewhere/b.png", *PREDS[1], score_threshold=0.5),  # matched by file name
    ]


def test_evaluate_records() -> None:
    messages: list[str] = []
    out = evaluate_records(_records(), _predictions(), on_warning=messages.append)
    assert set(out) == {"by_iou", "count", "coco", "review", "count_chance"}
    assert list(out["by_iou"]) == ["0.5", "0.55", "0.6", "0.65", "0.7", "0.75", "0.8", "0.85"]
    # As the hand case, plus image c: 1 more GT, all missed. 4 GT; FP 1, FN 2; 1 of 3 images right.
    # AP: .9 TP, .7 FP, .6 TP, .3 FP with 4 GT -> 1/4 * 1 + 1/4 * 2/3 = 5/12.
    _check(out["by_iou"]["0.5"], {"AP": 500 / 12, "WCR": 100 / 3, "AER": 75.0, "FP": 1, "FN": 2})
    # Counts: a 2 vs 2, b 1 vs 1 (box count), c 0 vs 1.
    count = out["count"]
    assert {k: count[k] for k in ("exact", "within1", "mae", "bias")} == pytest.approx(
        {"exact": 200 / 3, "within1": 100.0, "mae": 1 / 3, "bias": -1 / 3}
    )
    assert count["n"] == 3 and count["exact_ci95"] == pytest.approx(share_interval(2, 3))
    assert set(out["coco"]) == {"mAP", "AP50"}
    assert any("no prediction" in m and "c.png" in m for m in messages)


def test_evaluate_records_score_threshold_override() -> None:
    out = evaluate_records(_records(), _predictions(), score_threshold=0.2, on_warning=lambda m: None)
    # b now counts p3 too: 2 vs 1.
    assert out["count"]["bias"] == pytest.approx(0.0)  # errors 0, +1, -1
    assert out["count"]["exact"] == pytest.approx(100 / 3)
    assert out["by_iou"]["0.5"]["FP"] == 2


# --------------------------------------------------------------------------- against a plain loop


def _reference_match(gt: np.ndarray, boxes: np.ndarray, scores: np.ndarray, t: float) -> list[bool]:
    """The paper's rule written as the obvious loop, one prediction at a time."""
    taken: set[int] = set()
    flags = []
    for i in sorted(range(len(boxes)), key=lambda k: -scores[k]):
        ious = [_iou(boxes[i], g) for g in gt]
        best = int(np.argmax(ious)) if ious else -1
        ok = best >= 0 and ious[best] > t and best not in taken
        if ok:
            taken.add(best)
        flags.append(ok)
    return flags


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def test_vectorised_match_equals_the_loop_on_random_crowds() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        n_gt, n_pred = rng.integers(0, 12), rng.integers(0, 16)
        xy = rng.uniform(0, 40, (n_gt, 2))
        gt = np.concatenate([xy, xy + rng.uniform(3, 15, (n_gt, 2))], axis=1)
        src = gt[rng.integers(0, max(n_gt, 1), n_pred)] if n_gt else rng.uniform(0, 40, (n_pred, 4))
        boxes = src + rng.normal(0, 2, (n_pred, 4))
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        scores = rng.permutation(n_pred) / max(n_pred, 1)  # distinct scores
        for t in (0.3, 0.5, 0.7):
            tp, _, n_fp, n_fn = match_image(gt, boxes, scores, t)
            expected = _reference_match(gt, boxes, scores, t)
            assert tp.tolist() == expected
            assert n_fp == expected.count(False) and n_fn == n_gt - sum(expected)
