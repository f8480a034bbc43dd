"""Model files remember their training images by content, and calibration warns on them."""

from pathlib import Path

from typer.testing import CliRunner

from deepace.cli import app
from deepace.data.coco import write_coco
from deepace.inference import save_model
from deepace.models.detector import build_detector
from deepace.provenance import META_KEY, calibration_warning, fingerprint, fingerprints, trained_on
from tests.helpers_detection import tiny_config, write_blob_records


def test_a_fingerprint_follows_the_content_not_the_name(tmp_path: Path) -> None:
    first, second = write_blob_records(tmp_path / "imgs", 2, size=128)
    copy = tmp_path / "renamed-patient-id-free.png"
    copy.write_bytes(first.path.read_bytes())
    assert fingerprint(copy) == fingerprint(first.path)
    assert fingerprint(second.path) != fingerprint(first.path)
    listed = fingerprints([first.path, copy, second.path])
    assert listed == sorted({fingerprint(first.path), fingerprint(second.path)})


def test_training_images_are_found_at_any_depth_of_the_meta() -> None:
    meta = {
        META_KEY: ["a"],
        "base_meta": {"base_meta": {META_KEY: ["b", "c"]}, "rescorer": {"train": ["x.json"]}},
        "runs": [{META_KEY: ["d"]}],
        "calibration": {"files": ["e"]},
    }
    assert trained_on(meta) == {"a", "b", "c", "d"}
    assert trained_on({}) == set() and trained_on(None) == set()


def test_calibration_warns_only_on_images_that_trained_the_model(tmp_path: Path) -> None:
    records = write_blob_records(tmp_path / "imgs", 3, size=128)
    meta = {"base_meta": {META_KEY: fingerprints(r.path for r in records[:2])}}
    warning = calibration_warning(meta, [r.path for r in records])
    assert warning is not None and "2 of the 3 calibration images trained this model" in warning
    assert calibration_warning(meta, [records[2].path]) is None
    assert calibration_warning({"iteration": 5}, [r.path for r in records]) is None  # no record: no claim


def test_export_warns_when_calibrating_on_the_training_images(tmp_path: Path) -> None:
    config = tiny_config()
    train = write_blob_records(tmp_path / "train", 2, size=128)
    held_out = write_blob_records(tmp_path / "val", 2, size=128, seed=7)
    write_coco(train, tmp_path / "train.json")
    write_coco(held_out, tmp_path / "val.json")
    model = tmp_path / "model.pt"
    meta = {META_KEY: fingerprints(r.path for r in train)}
    save_model(model, build_detector(config.model), config, score_threshold=0.3, meta=meta)

    def export(calibration: str) -> str:
        args = ["export", str(model), "--out", str(tmp_path / "out.pt"), "--calibrate-on", calibration]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        return result.output

    assert "2 of the 2 calibration images trained this model" in export(str(tmp_path / "train.json"))
    assert "trained this model" not in export(str(tmp_path / "val.json"))
