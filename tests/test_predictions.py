"""The prediction file: round trip, atomic write, clear errors, pairing with ground-truth records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from deepace.data.predictions import (
    ImagePrediction,
    PredictionFileError,
    match_predictions,
    read_predictions,
    write_predictions,
)
from deepace.data.records import ImageRecord


def _pred(image: str = "cells/a.png", threshold: float = 0.5) -> ImagePrediction:
    boxes = np.array([[1.5, 2.25, 30.1, 40.7], [100, 100, 120, 130], [5, 5, 9, 9]], np.float32)
    scores = np.array([0.31, 0.97, 0.5], np.float32)
    return ImagePrediction(Path(image), boxes, scores, threshold)


def test_count() -> None:
    p = _pred()
    assert p.count == 2  # 0.97 and 0.5 (>= is inclusive)
    assert p.count_at(0.3) == 3
    assert p.count_at(0.98) == 0
    assert ImagePrediction("x.png").count == 0


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "out" / "pred.json"
    preds = [_pred("cells/a.png", 0.5), ImagePrediction("/abs/b.tif", score_threshold=0.3)]
    write_predictions(preds, path)
    back = read_predictions(path)
    assert len(back) == 2
    a = back[0]
    assert a.image == Path("cells/a.png") and a.score_threshold == 0.5 and a.count == 2
    order = np.argsort(-preds[0].scores)  # written in falling score order
    np.testing.assert_array_equal(a.scores, preds[0].scores[order])  # float32 values exactly
    np.testing.assert_array_equal(a.boxes, preds[0].boxes[order])
    assert a.boxes.dtype == np.float32 and a.scores.dtype == np.float32
    b = back[1]
    assert b.image == Path("/abs/b.tif") and b.boxes.shape == (0, 4) and b.scores.shape == (0,)
    assert b.score_threshold == pytest.approx(0.3)


def test_orientation_counts_round_trip_and_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "pred.json"
    several = ImagePrediction("a.png", view_counts=(46, 45, 46))
    write_predictions([several, ImagePrediction("b.png")], path)
    entries = json.loads(path.read_text())["images"]
    assert entries[0]["view_counts"] == [46, 45, 46] and "view_counts" not in entries[1]
    assert [p.view_counts for p in read_predictions(path)] == [(46, 45, 46), None]
    entries[0]["view_counts"] = [46, "45"]
    path.write_text(json.dumps({"images": entries}))
    with pytest.raises(PredictionFileError, match="view_counts"):
        read_predictions(path)


def test_file_layout(tmp_path: Path) -> None:
    path = tmp_path / "pred.json"
    write_predictions([_pred()], path)
    data = json.loads(path.read_text())
    entry = data["images"][0]
    assert set(entry) == {"image", "count", "score_threshold", "exact_chance", "detections"}
    assert entry["count"] == 2 and entry["score_threshold"] == 0.5
    # two of the boxes scoring 0.97, 0.5 and 0.31 are chromosomes
    assert entry["exact_chance"] == round(0.97 * 0.5 * 0.69 + 0.97 * 0.5 * 0.31 + 0.03 * 0.5 * 0.31, 3)
    assert [d["score"] for d in entry["detections"]] == [0.97, 0.5, 0.31]  # shortest float32 text
    assert entry["detections"][0]["box"] == [100.0, 100.0, 120.0, 130.0]
    assert [p.name for p in tmp_path.iterdir()] == ["pred.json"]  # no temporary file left


def test_write_is_atomic_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "pred.json"
    write_predictions([_pred()], path)
    before = path.read_text()

    class Boom(ImagePrediction):
        @property
        def count(self) -> int:  # fails while the text is being built
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_predictions([Boom(Path("x.png"))], path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["pred.json"]


def test_reads_extra_keys_and_default_threshold(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    entry = {"image": "a.png", "detections": [{"box": [0, 0, 1, 1], "score": 0.9, "label": "x"}], "w": 3}
    path.write_text(json.dumps({"images": [entry], "model": "m"}))
    (p,) = read_predictions(path)
    assert p.score_threshold == 0.5 and p.count == 1


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("{not json", "not valid json"),
        ("[1, 2]", "'images' list"),
        ('{"images": {}}', "'images' list"),
        ('{"images": [{"detections": []}]}', "images[0]: missing 'image'"),
        ('{"images": [{"image": "a.png"}]}', "missing 'detections'"),
        (
            '{"images": [{"image": "a.png", "detections": [{"box": [0, 0, 1], "score": 1}]}]}',
            "detections[0].box",
        ),
        ('{"images": [{"image": "a.png", "detections": [{"box": [0, 0, 1, 1]}]}]}', "'box' and 'score'"),
        ('{"images": [{"image": "a.png", "detections": [{"box": [0, 0, 1, 1], "score": NaN}]}]}', "score"),
        ('{"images": [{"image": "a.png", "detections": [{"box": [0, "a", 1, 1], "score": 1}]}]}', "box"),
        ('{"images": [{"image": "a.png", "detections": [], "score_threshold": "x"}]}', "score_threshold"),
    ],
)
def test_broken_files(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(PredictionFileError) as info:
        read_predictions(path)
    assert str(path) in str(info.value) and needle in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PredictionFileError, match="not found"):
        read_predictions(tmp_path / "nope.json")


def test_mismatched_lengths() -> None:
    with pytest.raises(ValueError):
        ImagePrediction("a.png", np.zeros((2, 4)), np.zeros(3))


def test_match_by_path_then_name(tmp_path: Path) -> None:
    a, b = tmp_path / "gt" / "a.png", tmp_path / "gt" / "b.png"
    records = [ImageRecord(a), ImageRecord(b), ImageRecord(tmp_path / "gt" / "c.png")]
    preds = [
        ImagePrediction(tmp_path / "elsewhere" / "a.png"),  # same name as a, other folder
        ImagePrediction(tmp_path / "gt" / "sub" / ".." / "a.png"),  # same file as a, exactly
        ImagePrediction(tmp_path / "other" / "b.png"),  # b by name only
        ImagePrediction(tmp_path / "z.png"),  # matches nothing
    ]
    matched, warnings = match_predictions(records, preds)
    assert matched[0] is preds[1]  # exact path wins over the name
    assert matched[1] is preds[2]
    assert matched[2] is None
    assert any("no prediction" in w and "c.png" in w for w in warnings)
    assert any("2 prediction(s) match no ground-truth image" in w for w in warnings)


def test_ambiguous_name_is_not_guessed(tmp_path: Path) -> None:
    records = [ImageRecord(tmp_path / "gt" / "a.png")]
    preds = [ImagePrediction(tmp_path / "x" / "a.png"), ImagePrediction(tmp_path / "y" / "a.png")]
    matched, warnings = match_predictions(records, preds)
    assert matched == [None]
    assert any("share its file name" in w for w in warnings)


def test_duplicate_entries_use_the_first(tmp_path: Path) -> None:
    records = [ImageRecord(tmp_path / "a.png")]
    first, second = ImagePrediction(tmp_path / "a.png"), ImagePrediction(tmp_path / "a.png")
    matched, warnings = match_predictions(records, [first, second])
    assert matched[0] is first
    assert any("more than one prediction" in w for w in warnings)
