from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from deepace.cli import data_cmds
from deepace.data.coco import read_coco, write_coco
from deepace.data.records import AnnotationError, ImageRecord
from deepace.data.taichung import TAICHUNG_CLASSES, read_taichung
from deepace.data.voc import read_voc_folder, write_voc_folder
from deepace.data.yolo import read_yolo_folder, write_yolo_folder
from tests.conftest import spread

BOXES = np.array([[1, 2, 11, 22], [30.5, 5, 40, 17.25], [0, 0, 80, 60]], np.float32)


def _image(folder: Path, name: str, h: int = 60, w: int = 80) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    Image.fromarray(spread(h, w)).save(path)
    return path


def _records(tmp_path: Path, labels: bool = False) -> list[ImageRecord]:
    a = _image(tmp_path / "images", "a.png")
    b = _image(tmp_path / "images", "b.png")
    return [
        ImageRecord(
            a,
            BOXES,
            labels=["A1", "C10", "C6"] if labels else None,
            width=80,
            height=60,
            expected_count=3,
            karyotype="47,XX,+21",
            meta={"list": "normal", "difficult": False},
        ),
        ImageRecord(
            b, np.zeros((0, 4)), labels=[] if labels else None, width=80, height=60, expected_count=46
        ),
    ]


def _same(a: ImageRecord, b: ImageRecord, atol: float = 0.0) -> None:
    assert a.path.resolve() == b.path.resolve()
    assert np.allclose(a.boxes, b.boxes, atol=atol)
    assert (a.labels or []) == (b.labels or [])
    assert (a.width, a.height) == (b.width, b.height)


# ---------------------------------------------------------------- COCO


def test_coco_round_trip_keeps_everything(tmp_path: Path) -> None:
    records = _records(tmp_path)
    write_coco(records, tmp_path / "set.json")
    data = json.loads((tmp_path / "set.json").read_text())
    assert data["images"][0]["file_name"] == "images/a.png"  # relative to the json's folder
    assert data["annotations"][1]["bbox"] == [30.5, 5.0, 9.5, 12.25]  # xywh in the file
    assert [c["name"] for c in data["categories"]] == ["chromosome"]
    back = read_coco(tmp_path / "set.json")
    assert len(back) == 2
    for a, b in zip(records, back, strict=True):
        _same(a, b)
        assert b.labels is None
        assert (a.expected_count, a.karyotype, a.meta) == (b.expected_count, b.karyotype, b.meta)


def test_coco_labels_natural_order_and_round_trip(tmp_path: Path) -> None:
    records = _records(tmp_path, labels=True)
    write_coco(records, tmp_path / "set.json")
    data = json.loads((tmp_path / "set.json").read_text())
    assert [c["name"] for c in data["categories"]] == ["A1", "C6", "C10"]
    back = read_coco(tmp_path / "set.json")
    assert back[0].labels == ["A1", "C10", "C6"] and back[1].labels == []


def test_coco_fixed_categories(tmp_path: Path) -> None:
    write_coco(_records(tmp_path, labels=True), tmp_path / "set.json", categories=TAICHUNG_CLASSES)
    data = json.loads((tmp_path / "set.json").read_text())
    assert [c["name"] for c in data["categories"]] == list(TAICHUNG_CLASSES)
    with pytest.raises(AnnotationError, match="C10"):
        write_coco(_records(tmp_path, labels=True), tmp_path / "x.json", categories=["A1", "C6"])


def test_coco_paths_outside_are_absolute_and_image_root(tmp_path: Path) -> None:
    records = _records(tmp_path)
    write_coco(records, tmp_path / "out" / "set.json")
    names = [e["file_name"] for e in json.loads((tmp_path / "out" / "set.json").read_text())["images"]]
    assert names == [
        str((tmp_path / "images" / "a.png").resolve()),
        str((tmp_path / "images" / "b.png").resolve()),
    ]
    assert read_coco(tmp_path / "out" / "set.json")[0].path.resolve() == records[0].path.resolve()

    write_coco(records, tmp_path / "out" / "rooted.json", image_root=tmp_path / "images")
    data = json.loads((tmp_path / "out" / "rooted.json").read_text())
    assert data["images"][0]["file_name"] == "a.png"
    with pytest.raises(AnnotationError, match="image file not found"):
        read_coco(tmp_path / "out" / "rooted.json")
    assert read_coco(tmp_path / "out" / "rooted.json", image_root=tmp_path / "images")[1].path.name == "b.png"


def test_coco_fills_missing_size_from_image(tmp_path: Path) -> None:
    path = _image(tmp_path, "c.png", h=33, w=44)
    record = ImageRecord(path, [[1, 1, 5, 5]])
    write_coco([record], tmp_path / "s.json")
    assert record.width is None  # the record is not changed
    assert read_coco(tmp_path / "s.json")[0].width == 44


def test_coco_atomic_write_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    (tmp_path / "set.json").write_text("old")
    write_coco(_records(tmp_path), tmp_path / "set.json")
    assert json.loads((tmp_path / "set.json").read_text())["images"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "set.json"]


def _coco(tmp_path: Path, bbox: list, **image: object) -> Path:
    _image(tmp_path, "a.png")
    entry = {"id": 1, "file_name": "a.png", "width": 80, "height": 60, **image}
    data = {
        "images": [entry],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": bbox}],
        "categories": [{"id": 1, "name": "chromosome"}],
    }
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    "bbox, message",
    [
        ([10, 10, -5, 4], "negative size"),
        ([10, 10, 0, 4], "zero or negative size"),
        ([70, 10, 30, 4], "outside the 80x60 image"),
        ([1, 2, 3], "must be \\[x, y, width, height\\]"),
        ([1, "a", 3, 4], "non-number"),
    ],
)
def test_coco_bad_boxes(tmp_path: Path, bbox: list, message: str) -> None:
    path = _coco(tmp_path, bbox)
    with pytest.raises(AnnotationError, match=message) as info:
        read_coco(path)
    assert str(path) in str(info.value)


def test_coco_broken_files(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text('{"images": [')
    with pytest.raises(AnnotationError, match="broken.json: not valid JSON"):
        read_coco(tmp_path / "broken.json")
    (tmp_path / "nokey.json").write_text('{"annotations": []}')
    with pytest.raises(AnnotationError, match="nokey.json: .*'images'"):
        read_coco(tmp_path / "nokey.json")
    (tmp_path / "noname.json").write_text('{"images": [{"id": 1}]}')
    with pytest.raises(AnnotationError, match="'file_name'"):
        read_coco(tmp_path / "noname.json")
    with pytest.raises(AnnotationError, match="no such file"):
        read_coco(tmp_path / "missing.json")
    path = _coco(tmp_path, [1, 1, 2, 2])
    data = json.loads(path.read_text())
    data["annotations"][0]["image_id"] = 7
    path.write_text(json.dumps(data))
    with pytest.raises(AnnotationError, match="unknown image id 7"):
        read_coco(path)


def test_coco_missing_image(tmp_path: Path) -> None:
    path = _coco(tmp_path, [1, 1, 2, 2])
    (tmp_path / "a.png").unlink()
    with pytest.raises(AnnotationError, match="image file not found"):
        read_coco(path)
    assert len(read_coco(path, check_images=False)) == 1


def test_coco_errors_list_skips_bad_image_and_goes_on(tmp_path: Path) -> None:
    write_coco(_records(tmp_path), tmp_path / "set.json")
    data = json.loads((tmp_path / "set.json").read_text())
    data["annotations"][0]["bbox"] = [5, 5, -1, 3]
    (tmp_path / "set.json").write_text(json.dumps(data))
    errors: list[AnnotationError] = []
    records = read_coco(tmp_path / "set.json", errors=errors)
    assert [r.path.name for r in records] == ["b.png"]
    assert len(errors) == 1 and "a.png" in str(errors[0])


# ---------------------------------------------------------------- VOC and YOLO


def test_voc_round_trip(tmp_path: Path) -> None:
    records = _records(tmp_path, labels=True)
    written = write_voc_folder(records, tmp_path / "voc")
    assert [p.name for p in written] == ["a.xml", "b.xml"]
    back = read_voc_folder(tmp_path / "voc", tmp_path / "images")
    for a, b in zip(records, back, strict=True):
        _same(a, b)
        assert (a.expected_count, a.karyotype) == (b.expected_count, b.karyotype)
    # without an image folder, the <path> written into the xml finds the image
    assert read_voc_folder(tmp_path / "voc")[0].path.resolve() == records[0].path.resolve()


def test_voc_plain_labels_stay_none(tmp_path: Path) -> None:
    write_voc_folder(_records(tmp_path), tmp_path / "voc")
    assert read_voc_folder(tmp_path / "voc", tmp_path / "images")[0].labels is None


def test_voc_errors(tmp_path: Path) -> None:
    write_voc_folder(_records(tmp_path), tmp_path / "voc")
    (tmp_path / "voc" / "a.xml").write_text("<annotation><object>")
    with pytest.raises(AnnotationError, match="a.xml: not valid XML"):
        read_voc_folder(tmp_path / "voc", tmp_path / "images")
    errors: list[AnnotationError] = []
    assert len(read_voc_folder(tmp_path / "voc", tmp_path / "images", errors=errors)) == 1
    assert len(errors) == 1
    (tmp_path / "voc" / "a.xml").unlink()
    (tmp_path / "images" / "b.png").unlink()
    with pytest.raises(AnnotationError, match="b.xml: image file not found"):
        read_voc_folder(tmp_path / "voc", tmp_path / "images")


def test_voc_box_outside_image(tmp_path: Path) -> None:
    records = _records(tmp_path)
    write_voc_folder(records, tmp_path / "voc")
    xml = tmp_path / "voc" / "a.xml"
    xml.write_text(xml.read_text().replace("<xmax>80</xmax>", "<xmax>120</xmax>"))
    with pytest.raises(AnnotationError, match="a.xml: .*outside the 80x60 image"):
        read_voc_folder(tmp_path / "voc", tmp_path / "images")


def test_yolo_round_trip(tmp_path: Path) -> None:
    records = _records(tmp_path, labels=True)
    write_yolo_folder(records, tmp_path / "labels")
    assert (tmp_path / "labels" / "classes.txt").read_text().split() == ["A1", "C6", "C10"]
    first = (tmp_path / "labels" / "a.txt").read_text().splitlines()[0].split()
    assert first[0] == "0" and np.allclose([float(v) for v in first[1:]], [6 / 80, 12 / 60, 10 / 80, 20 / 60])
    assert (tmp_path / "labels" / "b.txt").read_text() == ""
    back = read_yolo_folder(tmp_path / "labels")  # images/ beside labels/ is found
    assert len(back) == 2
    for a, b in zip(records, back, strict=True):
        _same(a, b, atol=1e-3)


def test_yolo_plain_and_errors(tmp_path: Path) -> None:
    write_yolo_folder(_records(tmp_path), tmp_path / "labels")
    assert read_yolo_folder(tmp_path / "labels")[0].labels is None
    (tmp_path / "labels" / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(AnnotationError, match="orphan.txt: no image"):
        read_yolo_folder(tmp_path / "labels")
    (tmp_path / "labels" / "orphan.txt").unlink()
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 -0.1 0.1\n")
    with pytest.raises(AnnotationError, match="a.txt: line 1: box has zero or negative size"):
        read_yolo_folder(tmp_path / "labels")


def test_yolo_write_needs_size(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match="size unknown"):
        write_yolo_folder([ImageRecord(tmp_path / "none.png", [[1, 1, 2, 2]])], tmp_path / "labels")


# ---------------------------------------------------------------- Taichung


def _mini_taichung(root: Path) -> None:
    records = [
        ImageRecord(_image(root / "images", "101.jpg"), BOXES[:2], labels=["A1", "X"], width=80, height=60),
        ImageRecord(_image(root / "images", "102.jpg"), BOXES[:1], labels=["Y"], width=80, height=60),
    ]
    write_voc_folder(records, root / "annotations")
    (root / "counts.csv").write_text(
        "image,chromosome_count,list,abnormal_pair,difficult\n"
        "101.jpg,2,normal,,0\n102.jpg,47,number_abnormalities,21,1\n"
    )


def test_read_taichung_synthetic(tmp_path: Path) -> None:
    _mini_taichung(tmp_path)
    records = read_taichung(tmp_path)
    assert [r.path.name for r in records] == ["101.jpg", "102.jpg"]
    assert [r.expected_count for r in records] == [2, 47]
    assert records[0].labels == ["A1", "X"]
    assert records[1].meta == {"list": "number_abnormalities", "abnormal_pair": "21", "difficult": True}
    (tmp_path / "images" / "102.jpg").unlink()
    with pytest.raises(AnnotationError, match="102.xml: image file not found"):
        read_taichung(tmp_path)


def test_read_taichung_real(shared_data: Path) -> None:
    root = shared_data / "taichung"
    if not (root / "annotations").is_dir():
        pytest.skip("no Taichung set")
    start = time.perf_counter()
    records = read_taichung(root)
    assert time.perf_counter() - start < 30  # about 5 s alone; the shared 2-core machine can be 2-3x slower
    assert len(records) == 2000
    assert all(r.expected_count is not None and r.width and r.height for r in records)
    assert sum(r.count == r.expected_count for r in records) == 1998  # as its README says
    assert {label for r in records for label in r.labels or []} == set(TAICHUNG_CLASSES)
    assert {r.meta["list"] for r in records} == {"normal", "number_abnormalities", "structural_abnormalities"}


# ---------------------------------------------------------------- CLI


def _app() -> typer.Typer:
    app = typer.Typer()
    data_cmds.register(app)

    @app.callback()
    def _root() -> None:
        pass

    return app


def test_cli_convert_coco_voc_yolo_and_back(tmp_path: Path) -> None:
    records = _records(tmp_path, labels=True)
    write_coco(records, tmp_path / "set.json")
    runner = CliRunner()
    res = runner.invoke(
        _app(), ["data", "convert", str(tmp_path / "set.json"), "--to", "voc", "--out", str(tmp_path / "voc")]
    )
    assert res.exit_code == 0, res.output
    assert "2 images, 3 boxes" in res.output
    res = runner.invoke(
        _app(),
        [
            "data",
            "convert",
            str(tmp_path / "voc"),
            "--to",
            "yolo",
            "--out",
            str(tmp_path / "yolo"),
            "--images",
            str(tmp_path / "images"),
        ],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        _app(),
        [
            "data",
            "convert",
            str(tmp_path / "yolo"),
            "--to",
            "coco",
            "--out",
            str(tmp_path / "back.json"),
            "--images",
            str(tmp_path / "images"),
        ],
    )
    assert res.exit_code == 0, res.output
    back = read_coco(tmp_path / "back.json")
    for a, b in zip(records, back, strict=True):
        _same(a, b, atol=1e-3)


def test_cli_convert_lists_failures_and_exits_1(tmp_path: Path) -> None:
    write_voc_folder(_records(tmp_path), tmp_path / "voc")
    (tmp_path / "voc" / "a.xml").write_text("garbage")
    res = CliRunner().invoke(
        _app(),
        [
            "data",
            "convert",
            str(tmp_path / "voc"),
            "--to",
            "coco",
            "--out",
            str(tmp_path / "o.json"),
            "--images",
            str(tmp_path / "images"),
        ],
    )
    assert res.exit_code == 1
    assert "1 failed" in res.output and "a.xml: not valid XML" in res.output
    assert [r.path.name for r in read_coco(tmp_path / "o.json")] == ["b.png"]  # the batch went on


def test_cli_convert_broken_json_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("{")
    res = CliRunner().invoke(
        _app(), ["data", "convert", str(tmp_path / "x.json"), "--to", "voc", "--out", str(tmp_path / "v")]
    )
    assert res.exit_code == 1
    assert "x.json: not valid JSON" in res.output and "Traceback" not in res.output


def test_cli_stats(tmp_path: Path) -> None:
    write_coco(_records(tmp_path), tmp_path / "set.json")
    res = CliRunner().invoke(_app(), ["data", "stats", str(tmp_path / "set.json")], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert re.search(r"│ images\s*│\s*2 │", res.output), res.output
    assert re.search(r"│ boxes\s*│\s*3 │", res.output)
    assert "in 1 of 2 images" in res.output  # a.png has 3 boxes and expects 3; b.png has 0 and expects 46
    assert "b.png" in res.output and "-46" in res.output
    assert "80.0" in res.output  # the largest box width
    assert re.search(r"identical boxes.*│\s*0 \(0\) │", res.output)
    assert re.search(r"same content as another.*│\s*2 \(1\) │", res.output)  # b.png is a copy of a.png
    assert re.search(r"IoU > 0.5.*│\s*0 │", res.output)


def test_cli_taichung_split(tmp_path: Path) -> None:
    _mini_taichung(tmp_path / "tc")
    res = CliRunner().invoke(
        _app(),
        ["data", "taichung", str(tmp_path / "tc"), "--out", str(tmp_path / "out"), "--val-fraction", "0.5"],
    )
    assert res.exit_code == 0, res.output
    train = read_coco(tmp_path / "out" / "train.json")
    val = read_coco(tmp_path / "out" / "val.json")
    assert len(train) + len(val) == 2
    assert {r.expected_count for r in train + val} == {2, 47}


def test_cli_split_warns_when_a_copy_of_a_training_image_is_in_val(tmp_path: Path) -> None:
    records = _records(tmp_path)  # a.png and b.png: the same pixels under two names
    other = ImageRecord(_image(tmp_path / "images", "c.png", h=64), expected_count=46, width=80, height=64)
    write_coco([*records, other], tmp_path / "all.json")
    (tmp_path / "val.txt").write_text("images/b.png\n")
    args = ["data", "split", str(tmp_path / "all.json"), "--out", str(tmp_path / "sp")]
    res = CliRunner().invoke(_app(), [*args, "--val-list", str(tmp_path / "val.txt")], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "1 image(s) in val have the same content as a training image (a.png = b.png)" in res.output
    (tmp_path / "val.txt").write_text("images/c.png\n")
    res = CliRunner().invoke(_app(), [*args, "--val-list", str(tmp_path / "val.txt")], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "same content" not in res.output


def test_cli_drawn_split_keeps_copies_on_one_side(tmp_path: Path) -> None:
    records = _records(tmp_path)  # a.png and b.png: the same pixels under two names
    others = [
        ImageRecord(_image(tmp_path / "images", f"c{h}.png", h=h), expected_count=3, width=80, height=h)
        for h in range(61, 69)
    ]
    write_coco([*records, *others], tmp_path / "all.json")

    def val_names(seed: int, *flags: str) -> tuple[set[str], str]:
        args = ["data", "split", str(tmp_path / "all.json"), "--out", str(tmp_path / "sp")]
        args += ["--seed", str(seed), "--val-fraction", "0.5", *flags]
        res = CliRunner().invoke(_app(), args, env={"COLUMNS": "200"})
        assert res.exit_code == 0, res.output
        return {r.path.name for r in read_coco(tmp_path / "sp" / "val.json")}, res.output

    straddled = 0
    for seed in range(8):
        val, output = val_names(seed)
        assert ("a.png" in val) == ("b.png" in val) and "same content as a training image" not in output
        assert "1 set(s) of images with the same content kept on one side" in output
        val, output = val_names(seed, "--copies-anywhere")
        if ("a.png" in val) != ("b.png" in val):
            straddled += 1
            assert "same content as a training image" in output
    assert straddled > 0


def test_cli_split_group_by_parent(tmp_path: Path) -> None:
    records = [
        ImageRecord(
            _image(tmp_path / f"slide{s}", f"c{c}.png", h=60 + 3 * s + c),  # no two alike
            expected_count=46 + s % 2,
            width=80,
            height=60 + 3 * s + c,
        )
        for s in range(6)
        for c in range(3)
    ]
    write_coco(records, tmp_path / "all.json")
    args = [
        "data",
        "split",
        str(tmp_path / "all.json"),
        "--out",
        str(tmp_path / "sp"),
        "--group-by",
        "parent",
    ]
    res = CliRunner().invoke(_app(), [*args, "--val-fraction", "0.34"])
    assert res.exit_code == 0, res.output
    train = read_coco(tmp_path / "sp" / "train.json")
    val = read_coco(tmp_path / "sp" / "val.json")
    assert len(train) + len(val) == 18 and val
    assert {r.path.parent.name for r in train}.isdisjoint({r.path.parent.name for r in val})


def test_cli_import_masks_uses_mask_importer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import deepace.data.masks as masks

    records = _records(tmp_path)  # a.png: 3 boxes, expects 3; b.png: 0 boxes, expects 46
    calls: list[Path] = []
    monkeypatch.setattr(
        masks, "import_mask_folder", lambda root: calls.append(root) or records, raising=False
    )
    res = CliRunner().invoke(
        _app(),
        ["data", "import-masks", str(tmp_path), "--out", str(tmp_path / "m.json")],
        env={"COLUMNS": "200"},
    )
    assert res.exit_code == 0, res.output
    assert calls == [tmp_path]
    assert "in 1 of 2 images" in res.output and "b.png" in res.output
    assert [r.expected_count for r in read_coco(tmp_path / "m.json")] == [3, 46]


def test_folder_formats_refuse_two_images_with_one_stem(tmp_path: Path) -> None:
    from deepace.data.records import AnnotationError, ImageRecord
    from deepace.data.voc import write_voc_folder
    from deepace.data.yolo import write_yolo_folder

    box = [[1.0, 1.0, 5.0, 5.0]]
    records = [
        ImageRecord(tmp_path / "a" / "cell.png", box, width=10, height=10),
        ImageRecord(tmp_path / "b" / "cell.tif", box, width=10, height=10),
    ]
    for write, fmt in ((write_voc_folder, "VOC"), (write_yolo_folder, "YOLO")):
        with pytest.raises(AnnotationError, match=f"{fmt} needs unique stems"):
            write(records, tmp_path / fmt)
