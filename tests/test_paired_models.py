"""benchmarks/paired_models.py: two models compared cell by cell, on hand-made boxes."""

import importlib.util
from pathlib import Path

import numpy as np

from deepace.data.predictions import ImagePrediction
from deepace.data.records import ImageRecord

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "paired_models.py"
spec = importlib.util.spec_from_file_location("paired_models", SCRIPT)
paired_models = importlib.util.module_from_spec(spec)
spec.loader.exec_module(paired_models)


def _cells(n: int) -> list[ImageRecord]:
    boxes = np.array([[10.0 * i, 0.0, 10.0 * i + 8, 20.0] for i in range(4)], dtype=np.float32)
    return [ImageRecord(Path(f"cell{c}.png"), boxes, width=64, height=32, expected_count=4) for c in range(n)]


def _prediction(record: ImageRecord, drop: int, extra: int, shift: float = 0.0) -> ImagePrediction:
    """The cell's boxes less `drop` of them, plus `extra` false ones, all moved right by `shift` px."""
    boxes = record.boxes[: len(record.boxes) - drop] + np.array([shift, 0, shift, 0], dtype=np.float32)
    false = np.array([[50.0 + 3 * k, 25.0, 56.0 + 3 * k, 31.0] for k in range(extra)], dtype=np.float32)
    boxes = np.concatenate([boxes, false.reshape(-1, 4)])
    return ImagePrediction(record.path, boxes, np.full(len(boxes), 0.9, np.float32), score_threshold=0.5)


def test_the_model_with_fewer_box_errors_wins_each_cell() -> None:
    cells = _cells(12)
    first = [_prediction(r, drop=1, extra=1) for r in cells]  # count right by luck, 2 box errors each
    second = [_prediction(r, drop=0, extra=0) for r in cells]  # every box right
    r = paired_models.compare(cells, first, second, (0.5, 0.5), ious=(0.5,))
    e = r["box_errors"][0.5]
    assert (e["first"], e["second"], e["fewer_in_second"], e["more_in_second"]) == (24, 0, 12, 0)
    assert e["p"] < 0.01
    assert r["exact"]["first"] == r["exact"]["second"] == 100.0 and r["exact"]["p"] == 1.0


def test_loose_boxes_count_as_errors_only_at_a_strict_iou() -> None:
    cells = _cells(6)
    loose = [_prediction(r, 0, 0, shift=2.0) for r in cells]  # IoU 6/10 with each true box
    r = paired_models.compare(cells, loose, loose, (0.5, 0.5), ious=(0.5, 0.7))
    assert r["box_errors"][0.5]["first"] == 0 and r["box_errors"][0.7]["first"] == 6 * 8
    assert r["box_errors"][0.7]["p"] == 1.0  # the same predictions: no difference to test


def test_exact_counts_with_the_sign_test_and_thresholds_tuned_on_halves() -> None:
    cells = _cells(10)
    first = [_prediction(r, drop=1, extra=0) for r in cells]  # 3 of 4 in every cell
    second = [_prediction(r, drop=0, extra=0) for r in cells]
    r = paired_models.compare(cells, first, second, (0.5, 0.5), ious=(0.5,))
    assert (r["exact"]["first"], r["exact"]["second"]) == (0.0, 100.0)
    assert (r["exact"]["only_first"], r["exact"]["only_second"]) == (0, 10) and r["exact"]["p"] < 0.01
    assert r["two_fold_exact"] == [0.0, 100.0]
    # predictions are matched to the cells by image, in whatever order they come
    assert paired_models.aligned(cells, list(reversed(second)))[0].image == cells[0].path
