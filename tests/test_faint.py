"""Faint fluorescence spreads (deepace/faint.py): dim chromosomes next to bright nuclei come out light grey
after the stretch and would be whitened by the paper's pre-processing; the detector counts such an image
again with its ink scaled up, and leaves every other image as it is."""

from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image

from deepace.faint import darkened, ink_level
from deepace.inference import CellResult, Detector
from tests.helpers_detection import RecordingModel, tiny_config

BAR = (slice(20, 44), slice(30, 36))  # rows, columns of the chromosome-like bar
BAR_BOX = [28.0, 18.0, 38.0, 46.0]  # x1, y1, x2, y2 around it


def test_darkened_maps_the_level_to_the_target_keeps_white_and_saturates_black() -> None:
    gray = np.array([[255, 220, 180, 100, 0]], np.uint8)
    out = darkened(gray, level=220, target=150)
    assert out[0, 0] == 255  # background stays white
    assert out[0, 1] == 150  # the level reaches the target
    assert out[0, 2] == round(255 - (255 - 180) * 3.0)  # every ink value scaled by (255-150)/(255-220) = 3
    assert out[0, 3] == 0 and out[0, 4] == 0  # darker ones saturate at black
    assert (np.diff(out[0].astype(int)) <= 0).all()  # order kept
    with pytest.raises(ValueError):
        darkened(gray, level=150, target=160)  # that would lighten


def test_ink_level_reads_the_darker_quarter_of_the_counted_boxes_only() -> None:
    gray = np.full((40, 40), 255, np.uint8)
    gray[5:15, 5:10] = 200  # a pale chromosome filling half of its box
    gray[25:35, 25:30] = 20  # a dark one, in a box scoring below the threshold
    boxes = np.array([[5, 5, 15, 15], [25, 25, 35, 35]], np.float32)
    scores = np.array([0.9, 0.2], np.float32)
    assert ink_level(gray, boxes, scores, threshold=0.5) == 200.0  # the dark box is not counted
    assert ink_level(gray, boxes, scores, threshold=0.1) == pytest.approx(
        np.percentile(np.concatenate([gray[5:15, 5:15].ravel(), gray[25:35, 25:35].ravel()]), 25)
    )
    assert ink_level(gray, boxes, scores, threshold=0.95) is None  # nothing counted
    # boxes reaching past the border are clipped to it (not wrapped round by negative indices)
    corner = np.full((40, 40), 255, np.uint8)
    corner[:3, :3] = 0
    assert ink_level(corner, np.array([[-5, -5, 3, 3]], np.float32), np.array([0.9]), 0.5) == 0.0


def _dapi(tmp_path: Path, bar: int, name: str) -> Path:
    """A fluorescence image: a bar of grey `bar` on a dark background, and a saturated nucleus that sets
    the top of the stretch."""
    raw = np.full((60, 80), 5, np.uint8)
    raw[BAR] = bar
    raw[2:14, 60:76] = 250  # the nucleus: 4% of the pixels
    path = tmp_path / name
    Image.fromarray(raw).save(path)
    return path


def _detector() -> tuple[Detector, RecordingModel]:
    config = tiny_config()
    config.model.fluorescence_scale = 1.0
    model = RecordingModel([BAR_BOX], [0.9])
    return Detector(model, config, score_threshold=0.5), model


def test_a_faint_fluorescence_image_is_detected_again_darkened(tmp_path: Path) -> None:
    detector, model = _detector()
    found = detector.detect(_dapi(tmp_path, bar=30, name="faint.png"))
    assert found.stain == "fluorescence" and len(model.inputs) == 2
    first, second = (255 * x[0][BAR].mean().item() for x in model.inputs)
    assert first == 255  # the paper's whitening erased the faint bar in the first pass
    assert second == pytest.approx(detector.config.model.faint_fluorescence_target, abs=1)
    assert found.ink_level is not None and found.ink_level > detector.config.model.faint_fluorescence_level
    assert found.gray[BAR].mean() == pytest.approx(second, abs=0.5)  # the image the boxes were found in


def test_dark_fluorescence_brightfield_and_switched_off_are_detected_once(tmp_path: Path) -> None:
    detector, model = _detector()
    found = detector.detect(_dapi(tmp_path, bar=200, name="bright.png"))  # chromosomes come out dark
    assert found.stain == "fluorescence" and len(model.inputs) == 1 and found.ink_level is None

    detector, model = _detector()
    faint = _dapi(tmp_path, bar=30, name="faint.png")
    found = detector.detect(faint, stain="brightfield")  # read as brightfield: no stretch to undo
    assert len(model.inputs) == 1 and found.ink_level is None

    detector, model = _detector()
    detector.config.model.faint_fluorescence_level = None
    assert detector.detect(faint).ink_level is None and len(model.inputs) == 1

    detector, model = _detector()
    detector.config.model.faint_fluorescence_level = 100.0
    detector.config.model.faint_fluorescence_target = 230.0  # above the bar's grey: it would lighten it
    assert detector.detect(faint).ink_level is None and len(model.inputs) == 1


def test_a_case_keeps_which_images_were_faint(tmp_path: Path) -> None:
    from deepace.report.case import read_model_json, summarize_case, write_model_json
    from deepace.report.page import _badges

    results = [
        CellResult(tmp_path / "faint.png", 80, 60, faint_ink_level=204.0),
        CellResult(tmp_path / "plain.png", 80, 60),
    ]
    write_model_json(tmp_path, results)
    back = read_model_json(tmp_path)
    assert back["faint.png"].faint_ink_level == 204.0 and back["plain.png"].faint_ink_level is None
    # and the report marks it
    summary = summarize_case("case", back, {})
    assert {c.name: c.darkened for c in summary.cells} == {"faint.png": True, "plain.png": False}
    assert "counted darkened" in _badges(summary.cells[0]) and "darkened" not in _badges(summary.cells[1])


def test_the_magnification_check_measures_a_faint_image_darkened(tmp_path: Path) -> None:
    from deepace.magnification import image_width

    raw = np.full((200, 200), 5, np.uint8)
    raw[40:160, 90:102] = 45  # a dim chromosome 12 px wide
    raw[5:35, 150:195] = 250  # a bright nucleus sets the top of the stretch
    path = tmp_path / "faint.png"
    Image.fromarray(raw).save(path)
    # stretched and inverted, the bar is grey 213: the paper's pre-processing whitens it all
    assert image_width(path, "fluorescence", 200, lambda stain: 1.0) == ("fluorescence", None)
    stain, width = image_width(path, "fluorescence", 200, lambda stain: 1.0, darken=(213.0, 124.0))
    assert stain == "fluorescence" and width == pytest.approx(12, rel=0.15)


def test_the_counted_gray_is_the_image_detect_found_its_boxes_in(tmp_path: Path) -> None:
    detector, model = _detector()
    faint = _dapi(tmp_path, bar=30, name="faint.png")
    gray, stain = detector.counted_gray(faint)
    assert stain == "fluorescence" and len(model.inputs) == 2  # a first pass told it was faint
    np.testing.assert_array_equal(gray, detector.detect(faint).gray)

    detector, model = _detector()
    gray, stain = detector.counted_gray(_dapi(tmp_path, bar=200, name="bright.png"))
    assert len(model.inputs) == 1
    np.testing.assert_array_equal(gray, detector.prepare(tmp_path / "bright.png"))

    detector, model = _detector()
    gray, stain = detector.counted_gray(faint, stain="brightfield")
    assert stain == "brightfield" and model.inputs == []  # nothing to tell: no detection run
    np.testing.assert_array_equal(gray, detector.prepare(faint, "brightfield"))


def test_rescorer_candidates_of_a_faint_image_come_from_the_image_the_trained_model_counts(
    tmp_path: Path,
) -> None:
    from deepace.data.coco import ImageRecord
    from deepace.rescoring import collect_candidates

    detector, _ = _detector()
    faint = _dapi(tmp_path, bar=30, name="faint.png")
    seen: list[np.ndarray] = []

    def candidates_of(_detector: Detector, gray: np.ndarray, _stain: str) -> mock.MagicMock:
        seen.append(gray)
        return mock.MagicMock()

    record = ImageRecord(faint, np.array([BAR_BOX], np.float32))
    blind = Detector(_EmptyModel(), detector.config, score_threshold=0.5)  # e.g. an untrained rescorer
    with (
        mock.patch("deepace.rescoring.image_candidates", candidates_of),
        mock.patch("deepace.rescoring.match_labels"),
    ):
        collect_candidates(detector, [record], progress=False)
        collect_candidates(blind, [record], progress=False)
        collect_candidates(blind, [record], progress=False, counting=detector)
    darkened_gray = detector.detect(faint).gray
    np.testing.assert_array_equal(seen[0], darkened_gray)
    assert not np.array_equal(seen[1], darkened_gray)  # its own count finds nothing: not darkened
    np.testing.assert_array_equal(seen[2], darkened_gray)  # the counting model decides


class _EmptyModel(torch.nn.Module):
    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        return [{"boxes": torch.zeros((0, 4)), "scores": torch.zeros(0)}]


def _calibration_predictions(detector: Detector, records: list, _progress: bool) -> list:
    """Fake predictions whose fluorescence scores depend on the threshold the detector counts that stain
    at, as the faint second pass makes them: below 0.45 it reads the image another way."""
    from deepace.data.predictions import ImagePrediction

    out = []
    for record in records:
        if record.path.name.startswith("g"):
            out.append(
                (ImagePrediction(record.path, np.zeros((2, 4)), np.array([0.9, 0.8]), 0.5), "brightfield")
            )
            continue
        low = detector.threshold_for("fluorescence") < 0.45
        scores = np.array([0.9, 0.36, 0.1] if low else [0.9, 0.21, 0.15])
        out.append((ImagePrediction(record.path, np.zeros((3, 4)), scores, 0.5), "fluorescence"))
    return out


def test_fluorescence_thresholds_are_calibrated_on_what_counting_at_them_gives() -> None:
    from deepace.cli.train_cmds import calibrate_stain_thresholds
    from deepace.data.coco import ImageRecord

    records = [ImageRecord(Path(name), expected_count=2) for name in ("g1.png", "f1.png")]
    calls = []

    def predictions(detector: Detector, chosen: list, progress: bool) -> list:
        calls.append([r.path.name for r in chosen])
        return _calibration_predictions(detector, chosen, progress)

    detector, _ = _detector()
    with mock.patch("deepace.engine.predict_records_with_stains", predictions):
        thresholds = calibrate_stain_thresholds(detector, records)
    # at 0.5 the best is 0.2; counting at 0.2 gives other scores, whose best (0.35) is stable
    assert thresholds["fluorescence"] == 0.35 and calls == [["g1.png", "f1.png"], ["f1.png"], ["f1.png"]]
    assert thresholds["brightfield"] == pytest.approx(0.5)

    detector, _ = _detector()
    detector.config.model.faint_fluorescence_level = None  # no second pass: one round
    calls.clear()
    with mock.patch("deepace.engine.predict_records_with_stains", predictions):
        assert calibrate_stain_thresholds(detector, records)["fluorescence"] == 0.2
    assert len(calls) == 1
