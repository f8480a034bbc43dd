"""`deepace count` plumbing with a small (untrained) model file: outputs, formats, failures."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from deepace.cli import app
from deepace.inference import save_model
from deepace.models.detector import build_detector
from tests.helpers_detection import tiny_config, write_blob_records


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = tiny_config()
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_model(path, build_detector(config.model), config, score_threshold=0.3, half=True)
    return path


def test_count_writes_table_json_csv_and_annotated_images(tmp_path: Path, model_file: Path) -> None:
    write_blob_records(tmp_path / "cells" / "sub", 2, size=128)
    (tmp_path / "cells" / "notes.txt").write_text("not an image")  # skipped: image type is by content
    out, js, cs = tmp_path / "annotated", tmp_path / "d.json", tmp_path / "c.csv"
    result = CliRunner().invoke(
        app,
        [
            "count",
            str(tmp_path / "cells"),
            "--weights",
            str(model_file),
            "--out",
            str(out),
            "--json",
            str(js),
            "--csv",
            str(cs),
        ],
    )
    assert result.exit_code == 0, result.output
    table = "".join(c for c in result.output if c not in " \n│")  # long names fold over lines
    assert "cell0.png" in table and "cell1.png" in table
    data = json.loads(js.read_text())
    assert len(data["images"]) == 2
    for entry in data["images"]:
        assert entry["score_threshold"] == pytest.approx(0.3)
        scores = [d["score"] for d in entry["detections"]]
        assert entry["count"] == sum(s >= 0.3 for s in scores)
        assert all(s >= 0.05 for s in scores)
    rows = list(csv.DictReader(cs.open()))
    assert [r["image"].endswith(f"cell{i}.png") for i, r in enumerate(rows)] == [True, True]
    for entry, row in zip(data["images"], rows, strict=True):
        assert 0.0 <= entry["exact_chance"] <= 1.0 and float(row["exact_chance"]) == entry["exact_chance"]
    assert len(list(out.glob("*.png"))) == 2


def test_unreadable_file_is_reported_others_counted_exit_nonzero(tmp_path: Path, model_file: Path) -> None:
    write_blob_records(tmp_path, 1, size=128)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage")
    result = CliRunner().invoke(
        app,
        [
            "count",
            str(tmp_path / "cell0.png"),
            str(broken),
            str(tmp_path / "missing.tif"),
            "--weights",
            str(model_file),
        ],
    )
    assert result.exit_code == 1
    assert "broken.png" in result.output and "missing.tif" in result.output
    assert "2 file(s) could not be counted" in result.output


def test_score_threshold_override_and_bad_stain(tmp_path: Path, model_file: Path) -> None:
    write_blob_records(tmp_path, 1, size=128)
    js = tmp_path / "d.json"
    result = CliRunner().invoke(
        app,
        ["count", str(tmp_path), "--weights", str(model_file), "--score-threshold", "0.9", "--json", str(js)],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(js.read_text())["images"][0]["score_threshold"] == pytest.approx(0.9)
    bad = CliRunner().invoke(app, ["count", str(tmp_path), "--weights", str(model_file), "--stain", "uv"])
    assert bad.exit_code != 0


def test_runtime_option_picks_the_backbones_runtime(tmp_path: Path, model_file: Path) -> None:
    """`--runtime onnx` and `--runtime torch` count the same boxes; an unknown runtime is refused."""
    write_blob_records(tmp_path / "cells", 2, size=128)
    base = ["count", str(tmp_path / "cells"), "--weights", str(model_file)]
    scores = {}
    for runtime in ("onnx", "torch"):
        js = tmp_path / f"{runtime}.json"
        result = CliRunner().invoke(app, [*base, "--runtime", runtime, "--json", str(js)])
        assert result.exit_code == 0, result.output
        scores[runtime] = [
            d["score"] for image in json.loads(js.read_text())["images"] for d in image["detections"]
        ]
    assert len(scores["torch"]) > 0
    assert scores["onnx"] == pytest.approx(scores["torch"], abs=1e-4)
    assert CliRunner().invoke(app, [*base, "--runtime", "tensorrt"]).exit_code != 0


def _per_stain_model(folder: Path) -> Path:
    """An untrained model file counting brightfield images at 0.3 and fluorescence ones at 0.7."""
    config = tiny_config()
    model = folder / "m.pt"
    save_model(
        model,
        build_detector(config.model),
        config,
        0.5,
        stain_thresholds={"brightfield": 0.3, "fluorescence": 0.7},
    )
    return model


def test_per_stain_thresholds_follow_the_detected_stain(tmp_path: Path) -> None:
    from PIL import Image

    from deepace.inference import Counter

    model = _per_stain_model(tmp_path)
    records = write_blob_records(tmp_path, 1, size=128)
    dapi = tmp_path / "dapi.png"
    Image.fromarray(255 - np.asarray(Image.open(records[0].path))).save(dapi)  # bright on dark
    counter = Counter(model)
    assert counter.count_image(records[0].path).score_threshold == pytest.approx(0.3)
    assert counter.count_image(dapi).score_threshold == pytest.approx(0.7)
    assert Counter(model, score_threshold=0.9).count_image(dapi).score_threshold == pytest.approx(0.9)


def test_export_calibrates_thresholds_and_halves_weights(tmp_path: Path, model_file: Path) -> None:
    import torch

    from deepace.data.coco import write_coco

    write_coco(write_blob_records(tmp_path / "imgs", 2, size=128), tmp_path / "val.json")
    out = tmp_path / "shipped.pt"
    result = CliRunner().invoke(
        app, ["export", str(model_file), "--out", str(out), "--calibrate-on", str(tmp_path / "val.json")]
    )
    assert result.exit_code == 0, result.output
    assert "brightfield: 2 images, threshold" in result.output and " a cell" in result.output  # with its bias
    payload = torch.load(out, weights_only=False)
    assert set(payload["stain_thresholds"]) == {"brightfield"}
    assert payload["score_threshold"] == payload["stain_thresholds"]["brightfield"]
    assert all(v.dtype == torch.float16 for v in payload["state_dict"].values() if v.is_floating_point())


def test_a_folder_with_a_corrupt_image_reports_it(tmp_path: Path, model_file: Path) -> None:
    write_blob_records(tmp_path / "case", 1, size=128)
    (tmp_path / "case" / "cut-off.jpg").write_bytes(b"")  # named like an image, no content
    result = CliRunner().invoke(app, ["count", str(tmp_path / "case"), "--weights", str(model_file)])
    assert result.exit_code == 1
    assert "cut-off.jpg" in result.output and "1 file(s) could not be counted" in result.output


class _OneBoxModel:
    """Stands in for the network: records the input size and returns one box in input pixels."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []

    def eval(self) -> "_OneBoxModel":
        return self

    def __call__(self, images: list) -> list[dict]:
        import torch

        self.seen.append(tuple(images[0].shape[-2:]))
        return [{"boxes": torch.tensor([[10.0, 20.0, 50.0, 60.0]]), "scores": torch.tensor([0.9])}]


def test_magnification_resizes_the_input_and_maps_boxes_back(tmp_path: Path, model_file: Path) -> None:
    from deepace.inference import Counter

    write_blob_records(tmp_path, 1, size=128)
    image = next(tmp_path.rglob("*.png"))
    counter = Counter(model_file, stain="brightfield", magnification=2.0)
    fake = _OneBoxModel()
    counter.detector.model = fake
    counter.detector.config.model.min_box_ink = None  # the fake box need not lie on a blob
    scale = counter.detector.config.model.stain_scale("brightfield") * 2.0
    result = counter.count_image(image)
    assert fake.seen == [(round(128 * scale), round(128 * scale))]
    np.testing.assert_allclose(result.boxes[0], np.array([10, 20, 50, 60]) / scale, rtol=1e-6)
    assert (result.width, result.height) == (128, 128)  # the image's own pixels


def test_magnification_option_reaches_the_counter(tmp_path: Path, model_file: Path) -> None:
    write_blob_records(tmp_path / "cells", 1, size=128)
    base = ["count", str(tmp_path / "cells"), "--weights", str(model_file), "--json"]
    plain = CliRunner().invoke(app, [*base, str(tmp_path / "a.json")])
    enlarged = CliRunner().invoke(app, [*base, str(tmp_path / "b.json"), "--magnification", "1.5"])
    assert plain.exit_code == 0 and enlarged.exit_code == 0, plain.output + enlarged.output
    a, b = (json.loads((tmp_path / n).read_text())["images"][0] for n in ("a.json", "b.json"))
    assert a["detections"] != b["detections"]  # the model saw another image
    bad = CliRunner().invoke(app, [*base, str(tmp_path / "c.json"), "--magnification", "0"])
    assert bad.exit_code != 0


def test_views_count_each_image_in_several_orientations(tmp_path: Path, model_file: Path) -> None:
    write_blob_records(tmp_path / "cells", 2, size=128)
    js, cs = tmp_path / "d.json", tmp_path / "c.csv"
    args = [
        "count",
        str(tmp_path / "cells"),
        "--weights",
        str(model_file),
        "--json",
        str(js),
        "--csv",
        str(cs),
    ]
    result = CliRunner().invoke(app, [*args, "--views", "3"])
    assert result.exit_code == 0, result.output
    assert "orientations" in result.output
    for entry in json.loads(js.read_text())["images"]:
        views = entry["view_counts"]
        assert len(views) == 3
        assert entry["count"] == sorted(views)[1]  # the median orientation's boxes are the ones written
        assert entry["count"] == sum(d["score"] >= entry["score_threshold"] for d in entry["detections"])
    for row in csv.DictReader(cs.open()):
        assert len(row["orientation_counts"].split()) == 3
    result = CliRunner().invoke(app, [*args, "--views", "4"])
    assert result.exit_code == 2 and "odd" in result.output
    CliRunner().invoke(app, args)
    assert "view_counts" not in json.loads(js.read_text())["images"][0]  # one orientation: no field


def test_an_image_whose_counting_fails_is_reported_and_the_batch_goes_on(
    tmp_path: Path, model_file: Path
) -> None:
    from unittest import mock

    from deepace.inference import Detector

    write_blob_records(tmp_path, 2, size=128)
    js = tmp_path / "d.json"
    detect_read = Detector.detect_read
    calls = []

    def failing_second(self: Detector, raw: np.ndarray, *args: object) -> object:
        calls.append(raw.shape)
        if len(calls) == 1:
            raise RuntimeError("out of memory")
        return detect_read(self, raw, *args)

    with mock.patch.object(Detector, "detect_read", failing_second):
        result = CliRunner().invoke(
            app,
            [
                "count",
                str(tmp_path / "cell0.png"),
                str(tmp_path / "cell1.png"),
                "--weights",
                str(model_file),
                "--json",
                str(js),
            ],
        )
    assert len(calls) == 2 and result.exit_code == 1
    assert "1 file(s) could not be counted" in result.output
    assert "counting failed: RuntimeError: out of memory" in "".join(result.output.split("\n"))
    assert [Path(e["image"]).name for e in json.loads(js.read_text())["images"]] == ["cell1.png"]


def test_an_image_too_large_for_memory_is_refused_before_the_model_reads_it(
    tmp_path: Path, model_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    import deepace.inference as inference
    from deepace.inference import Counter, Detector, ImageTooLargeError
    from tests.helpers_detection import RecordingModel

    monkeypatch.setattr(inference, "MAX_MODEL_MEGAPIXELS", 0.004)  # 4,000 pixels
    model = RecordingModel()
    detector = Detector(model, tiny_config(), score_threshold=0.5)
    with pytest.raises(ImageTooLargeError, match="4800x60 pixels at scale 1"):
        detector.predict_gray(np.full((60, 4800), 255, np.uint8))
    assert model.inputs == []  # refused before the model (or the resize) ran
    detector.predict_gray(np.full((60, 60), 255, np.uint8))  # 3,600 pixels: read
    with pytest.raises(ImageTooLargeError):
        detector.predict_gray(np.full((60, 60), 255, np.uint8), magnification=1.1)  # 4,356 once enlarged
    assert len(model.inputs) == 1
    halved = Detector(model, tiny_config(input_scale=0.5), score_threshold=0.5)
    halved.predict_gray(np.full((60, 120), 255, np.uint8))  # 7,200 pixels, read at half: 1,800
    assert len(model.inputs) == 2

    # in a batch: that image is reported, the others are counted
    Image.fromarray(np.full((60, 4800), 255, np.uint8)).save(tmp_path / "scan.png")
    Image.fromarray(np.full((40, 40), 255, np.uint8)).save(tmp_path / "cell.png")
    scan, cell = Counter(model_file).count_paths(
        [tmp_path / "scan.png", tmp_path / "cell.png"], progress=False
    )
    assert scan.error is not None and "ImageTooLargeError" in scan.error and "crop the cell" in scan.error
    assert cell.error is None


def test_bad_output_paths_and_options_are_refused_before_any_counting(
    tmp_path: Path, model_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import deepace.inference as inference

    write_blob_records(tmp_path / "cells", 1, size=128)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    base = ["count", str(tmp_path / "cells"), "--weights", str(model_file)]

    def no_counting(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(inference.Counter, "__init__", no_counting)
    for extra, message in (
        (["--out", str(a_file)], "is a file, not a folder"),
        (["--out", str(a_file / "sub")], "cannot write in"),
        (["--json", str(tmp_path)], "is a folder, not a file"),
        (["--csv", str(a_file / "c.csv")], "a_file is a file, not a folder"),
        (["--score-threshold", "1.5"], "less than or equal to 1"),
        (["--score-threshold", "-0.1"], "greater than or equal to 0"),
        (["--threads", "0"], "greater than or equal to 1"),
    ):
        result = CliRunner().invoke(app, [*base, *extra])
        text = " ".join(result.output.replace("│", " ").split())  # rich boxes and folds long messages
        assert result.exit_code == 2 and message in text, (extra, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit)
    assert a_file.read_text() == "x"  # the file given as --out is left as it was


def test_an_unreadable_model_file_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    write_blob_records(tmp_path / "cells", 1, size=128)
    empty, text = tmp_path / "empty.pt", tmp_path / "notes.pt"
    empty.write_bytes(b"")
    text.write_text("# not a model\n")
    for weights, why in (
        (tmp_path / "missing.pt", "model file not found"),
        (empty, "not a readable model file (EOFError"),
        (text, "not a readable model file (UnpicklingError"),
        (tmp_path, "a folder, not a model file"),
    ):
        result = CliRunner().invoke(app, ["count", str(tmp_path / "cells"), "--weights", str(weights)])
        assert result.exit_code == 2 and "cannot load the model" in result.output, result.output
        assert why in " ".join(result.output.split()) and "Traceback" not in result.output


def test_annotated_copies_of_images_sharing_a_name_do_not_overwrite_each_other(tmp_path: Path) -> None:
    from deepace.cli.count_cmd import annotated_names

    images = [tmp_path / "a.tif", tmp_path / "a.png", tmp_path / "sub" / "a.jpg", tmp_path / "b.png"]
    names = annotated_names(images)
    assert names == {images[0]: "a.tif", images[1]: "a.png", images[2]: "sub__a.jpg", images[3]: "b"}
    assert annotated_names(images[2:]) == {images[2]: "a", images[3]: "b"}  # no clash: stems as before
    assert annotated_names([]) == {}


def test_a_forced_stain_that_does_not_fit_the_image_is_warned_about(tmp_path: Path, model_file: Path) -> None:
    from PIL import Image

    records = write_blob_records(tmp_path / "cells", 1, size=128)
    dapi = tmp_path / "cells" / "dapi.png"
    Image.fromarray(255 - np.asarray(Image.open(records[0].path))).save(dapi)  # bright on dark

    def warned(stain: str) -> str:
        result = CliRunner().invoke(
            app, ["count", str(tmp_path / "cells"), "--weights", str(model_file), "--stain", stain]
        )
        assert result.exit_code == 0, result.output
        text = " ".join(result.output.split())
        return text[text.find("warning: ") :] if "look like the other stain" in text else ""

    assert "read with --stain brightfield" in warned("brightfield") and "dapi.png" in warned("brightfield")
    assert "cell0.png" not in warned("brightfield")
    assert "read with --stain fluorescence" in warned("fluorescence") and "cell0.png" in warned(
        "fluorescence"
    )
    assert "dapi.png" not in warned("fluorescence")
    assert warned("auto") == ""


def test_annotated_copies_in_an_out_folder_among_the_inputs_are_not_counted(
    tmp_path: Path, model_file: Path
) -> None:
    write_blob_records(tmp_path / "cells", 2, size=128)
    args = [
        "count",
        str(tmp_path / "cells"),
        "--weights",
        str(model_file),
        "--out",
        str(tmp_path / "cells" / "annotated"),
    ]
    for _ in range(2):  # the second run finds the first run's annotated copies in the folder it counts
        result = CliRunner().invoke(app, [*args, "--json", str(tmp_path / "d.json")])
        assert result.exit_code == 0, result.output
        assert len(json.loads((tmp_path / "d.json").read_text())["images"]) == 2
    assert len(list((tmp_path / "cells" / "annotated").glob("*.png"))) == 2
    # a run at another threshold replaces each annotated copy instead of adding one with another count
    result = CliRunner().invoke(app, [*args, "--score-threshold", "0.0"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name.split("_count")[0] for p in (tmp_path / "cells" / "annotated").glob("*.png")) == [
        "cell0",
        "cell1",
    ]


def test_export_keeps_the_threshold_of_a_stain_it_is_not_calibrated_on(tmp_path: Path) -> None:
    import torch

    from deepace.data.coco import write_coco

    model = _per_stain_model(tmp_path)
    write_coco(write_blob_records(tmp_path / "imgs", 2, size=128), tmp_path / "val.json")  # brightfield only
    out = tmp_path / "out.pt"
    args = ["export", str(model), "--out", str(out), "--calibrate-on", str(tmp_path / "val.json")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "fluorescence: no such images to calibrate on; its threshold 0.700 is kept" in result.output
    thresholds = torch.load(out, weights_only=False)["stain_thresholds"]
    assert thresholds["fluorescence"] == pytest.approx(0.7) and set(thresholds) == {
        "brightfield",
        "fluorescence",
    }

    write_coco([], tmp_path / "empty.json")
    result = CliRunner().invoke(app, [*args[:4], "--calibrate-on", str(tmp_path / "empty.json")])
    assert result.exit_code == 2 and "no images to calibrate on" in result.output
