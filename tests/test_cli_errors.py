"""`deepace` ends with one line, not a traceback, when what the user gave it is wrong (cli/__init__.py)."""

import sys
from pathlib import Path

import pytest

from deepace.cli import main
from deepace.data.coco import write_coco
from tests.helpers_detection import write_blob_records


def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["deepace", *args])
    with pytest.raises(SystemExit) as stop:
        main()
    out = capsys.readouterr()
    text = out.out + out.err
    assert "Traceback" not in text
    return int(stop.value.code or 0), " ".join(text.replace("│", " ").split())  # rich boxes and folds


def test_user_errors_end_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_model = tmp_path / "bad.pt"
    bad_model.write_text("# not a model")
    code, text = run(monkeypatch, capsys, "export", str(bad_model), "--out", str(tmp_path / "o.pt"))
    assert code == 2 and text.startswith("error: ") and "not a readable model file" in text

    records = write_blob_records(tmp_path / "cells", 1, size=128)
    write_coco(records, tmp_path / "train.json")
    records[0].path.unlink()  # the annotations now name a missing image
    code, text = run(
        monkeypatch, capsys, "predict", "--coco", str(tmp_path / "train.json"), "--out", "p.json"
    )
    assert code == 2 and text.startswith("error: ") and "cell0.png" in text

    write_blob_records(tmp_path / "cells", 1, size=128)
    base = ["train", "--train", str(tmp_path / "train.json"), "--out", str(tmp_path / "run")]
    code, text = run(monkeypatch, capsys, *base, "--set", "train.iterations=abc")
    assert code == 2 and "train.iterations takes a whole number, not 'abc'" in text
    code, text = run(monkeypatch, capsys, *base, "--set", "train.bogus=3")
    assert code == 2 and "unknown train key 'bogus'" in text

    write_coco([], tmp_path / "empty.json")
    code, text = run(
        monkeypatch, capsys, "train", "--train", str(tmp_path / "empty.json"), "--out", str(tmp_path / "r2")
    )
    assert code == 2 and "no training images" in text


def test_messages_with_brackets_are_printed_as_they_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """rich reads [bold] as markup: it dropped '[x, y, width, height]' from messages and crashed on
    '[/b]' in a file name; a name with [bold] lost it."""
    bad = tmp_path / "slide[bold]2.json"
    bad.write_text(
        '{"images": [{"id": 1, "file_name": "x.png"}], "categories": [{"id": 1, "name": "c"}],'
        ' "annotations": [{"id": 1, "image_id": 1, "bbox": [1, 2, 3], "category_id": 1}]}'
    )
    code, text = run(monkeypatch, capsys, "data", "stats", str(bad))
    assert code == 1 and "slide[bold]2.json" in text and "'bbox' must be [x, y, width, height]" in text


def test_predict_and_export_refuse_an_output_path_that_is_a_folder_before_the_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_coco(write_blob_records(tmp_path / "cells", 1, size=128), tmp_path / "val.json")
    folder = tmp_path / "cells"
    for args in (
        ["predict", "--coco", str(tmp_path / "val.json"), "--out", str(folder)],
        ["export", "x.pt", "--out", str(folder)],
    ):
        code, text = run(monkeypatch, capsys, *args)
        assert code == 2 and "is a folder, not a file" in text  # before the model file was even read
    assert not list(tmp_path.rglob("*.tmp"))
