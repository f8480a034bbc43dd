"""`deepace evaluate` end to end on a hand-written COCO file and prediction file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from deepace.cli import app
from deepace.data.predictions import ImagePrediction, write_predictions

IOU_KEYS = ["0.5", "0.55", "0.6", "0.65", "0.7", "0.75", "0.8", "0.85"]


def _write_gt(folder: Path) -> Path:
    # Same hand case as tests/test_metrics.py: a.png has g1, g2; b.png has g3. Boxes as COCO [x, y, w, h].
    coco = {
        "images": [
            {
                "id": 1,
                "file_name": "a.png",
                "width": 64,
                "height": 64,
                "expected_count": 2,
                "karyotype": "46,XX",
            },
            {"id": 7, "file_name": "b.png", "width": 64, "height": 64},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [20, 0, 10, 10], "area": 100, "iscrowd": 0},
            {"id": 3, "image_id": 7, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "chromosome"}],
    }
    path = folder / "gt.json"
    path.write_text(json.dumps(coco))
    return path


def _write_pred(folder: Path, with_b: bool = True) -> Path:
    preds = [
        ImagePrediction(folder / "a.png", [[0, 0, 10, 10], [1, 0, 11, 10]], [0.9, 0.7], 0.5),
        ImagePrediction(Path("somewhere/else/b.png"), [[5, 0, 15, 10], [0, 0, 10, 8]], [0.3, 0.6], 0.5),
    ]
    path = folder / "pred.json"
    write_predictions(preds if with_b else preds[:1], path)
    return path


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


def test_json_output(tmp_path: Path, runner: CliRunner) -> None:
    result = runner.invoke(
        app, ["evaluate", "--gt", str(_write_gt(tmp_path)), "--pred", str(_write_pred(tmp_path)), "--json"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert list(out) == ["by_iou", "count", "coco", "review", "count_chance"]
    assert list(out["by_iou"]) == IOU_KEYS
    for row in out["by_iou"].values():
        assert list(row) == ["AP", "WCR", "AER", "FP", "FN"]
    assert list(out["count"]) == ["exact", "within1", "mae", "bias", "n", "exact_ci95", "within1_ci95"]
    assert list(out["coco"]) == ["mAP", "AP50"]
    # Hand values (see tests/test_metrics.py): AP 5/9, WCR 50 %, AER 2/3 at IoU 0.5; p4 fails at 0.8.
    assert out["by_iou"]["0.5"]["AP"] == pytest.approx(500 / 9)
    assert out["by_iou"]["0.5"]["WCR"] == pytest.approx(50.0)
    assert out["by_iou"]["0.5"]["AER"] == pytest.approx(200 / 3)
    assert (out["by_iou"]["0.8"]["FP"], out["by_iou"]["0.8"]["FN"]) == (2, 2)
    # Counts: a 2 vs expected_count 2, b 1 vs its 1 box.
    intervals = {k: out["count"].pop(k) for k in ("exact_ci95", "within1_ci95")}
    assert out["count"] == {"exact": 100.0, "within1": 100.0, "mae": 0.0, "bias": 0.0, "n": 2}
    # two of two cells right: Wilson's interval still reaches down to z²/(n + z²) below 100%
    assert intervals["exact_ci95"] == pytest.approx([100 - 100 * 1.96**2 / (2 + 1.96**2), 100.0], abs=0.01)
    # the model's chances: a 2 of 2 boxes at 0.9 and 0.7 (0.63), b 1 of 0.6 and 0.3 (0.6·0.7 + 0.4·0.3)
    chance = out["count_chance"]
    assert chance["mean_chance"] == pytest.approx(100 * (0.63 + 0.54) / 2)
    assert (chance["exact"], chance["auc"], chance["n"]) == (100.0, None, 2)
    assert [b["cells"] for b in chance["bands"]] == [0, 0, 1, 1]


def test_score_threshold_option(tmp_path: Path, runner: CliRunner) -> None:
    args = ["evaluate", "--gt", str(_write_gt(tmp_path)), "--pred", str(_write_pred(tmp_path)), "--json"]
    out = json.loads(runner.invoke(app, [*args, "--score-threshold", "0.2"]).stdout)
    # b now counts the low-IoU p3 as well: one more FP, b counted 2 instead of 1.
    assert out["by_iou"]["0.5"]["FP"] == 2 and out["by_iou"]["0.5"]["WCR"] == 0.0
    assert out["count"]["bias"] == pytest.approx(0.5)


def test_tune_threshold_counts_at_the_best_threshold(tmp_path: Path, runner: CliRunner) -> None:
    # The file's threshold (0.95) counts nothing; a (expected 2) scores 0.9, 0.7 and b (expected 1) 0.6,
    # 0.3, so every threshold in (0.3, 0.6] counts both cells exactly; ties go to the one nearest 0.5.
    preds = [
        ImagePrediction(tmp_path / "a.png", [[0, 0, 10, 10], [20, 0, 30, 10]], [0.9, 0.7], 0.95),
        ImagePrediction(tmp_path / "b.png", [[0, 0, 10, 10], [40, 40, 50, 50]], [0.6, 0.3], 0.95),
    ]
    write_predictions(preds, tmp_path / "pred.json")
    args = ["evaluate", "--gt", str(_write_gt(tmp_path)), "--pred", str(tmp_path / "pred.json")]
    untuned = json.loads(runner.invoke(app, [*args, "--json"]).stdout)
    assert untuned["count"]["exact"] == 0.0
    tuned = json.loads(runner.invoke(app, [*args, "--json", "--tune-threshold"]).stdout)
    assert tuned["tuned_threshold"] == pytest.approx(0.5)
    assert tuned["count"]["exact"] == 100.0 and tuned["by_iou"]["0.5"]["WCR"] == 100.0
    table = runner.invoke(app, [*args, "--tune-threshold"])
    assert table.exit_code == 0 and "tuned on these cells" in table.stdout
    both = runner.invoke(app, [*args, "--tune-threshold", "--score-threshold", "0.5"])
    assert both.exit_code == 1 and "not both" in both.stderr


def test_image_without_prediction_is_all_missed(tmp_path: Path, runner: CliRunner) -> None:
    pred = _write_pred(tmp_path, with_b=False)
    result = runner.invoke(app, ["evaluate", "--gt", str(_write_gt(tmp_path)), "--pred", str(pred), "--json"])
    assert result.exit_code == 0
    assert "no prediction" in result.stderr and "b.png" in result.stderr
    row = json.loads(result.stdout)["by_iou"]["0.5"]
    assert (row["FP"], row["FN"]) == (1, 2)


def test_table_output(tmp_path: Path, runner: CliRunner) -> None:
    result = runner.invoke(
        app, ["evaluate", "--gt", str(_write_gt(tmp_path)), "--pred", str(_write_pred(tmp_path))]
    )
    assert result.exit_code == 0, result.output
    text = result.stdout
    for key in [*IOU_KEYS, "Mean", "AP", "WCR", "AER", "FP", "FN", "COCO", "mAP"]:
        assert key in text
    assert "55.56" in text and "66.67" in text  # AP and AER at IoU 0.5
    assert "expected_count for 1 image, number of ground-truth boxes for 1 image" in text
    assert "chance that its count is exact: mean 58.5% against 100.0% exact" in text


@pytest.mark.parametrize("missing", ["gt", "pred"])
def test_missing_file(tmp_path: Path, runner: CliRunner, missing: str) -> None:
    gt, pred = _write_gt(tmp_path), _write_pred(tmp_path)
    (gt if missing == "gt" else pred).unlink()
    result = runner.invoke(app, ["evaluate", "--gt", str(gt), "--pred", str(pred)])
    assert result.exit_code == 1
    assert "not found" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_broken_prediction_file(tmp_path: Path, runner: CliRunner) -> None:
    pred = tmp_path / "pred.json"
    pred.write_text("{oops")
    result = runner.invoke(app, ["evaluate", "--gt", str(_write_gt(tmp_path)), "--pred", str(pred)])
    assert result.exit_code == 1 and "not valid json" in result.stderr


def test_predictions_written_by_library_are_numpy_free(tmp_path: Path) -> None:
    # The file must be plain json (the CLI reads it back with json.loads).
    data = json.loads(_write_pred(tmp_path).read_text())
    assert isinstance(data["images"][0]["detections"][0]["score"], float)
    assert np.isclose(data["images"][0]["detections"][0]["score"], 0.9)


def test_predictions_for_other_images_or_an_empty_ground_truth_are_refused(
    tmp_path: Path, runner: CliRunner
) -> None:
    gt = _write_gt(tmp_path)
    other = tmp_path / "other.json"
    write_predictions(
        [ImagePrediction(tmp_path / "zz.png", np.zeros((1, 4)) + [0, 0, 5, 5], np.array([0.9]), 0.5)], other
    )
    result = runner.invoke(app, ["evaluate", "--gt", str(gt), "--pred", str(other)])
    assert result.exit_code == 1 and "are they predictions for other images?" in result.stderr
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "c"}]}))
    result = runner.invoke(app, ["evaluate", "--gt", str(empty), "--pred", str(_write_pred(tmp_path))])
    assert result.exit_code == 1 and "no images" in result.stderr
