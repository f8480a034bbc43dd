"""Boxes from expert label images, karyotype counts and the M-FISH folder import."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepace.data.masks import (
    RELATIVE_LENGTH,
    boxes_from_label_image,
    clean_karyotype,
    import_mask_folder,
    parse_karyotype_count,
    read_case_info,
)
from deepace.data.records import AnnotationError

WIDTH = 8  # rod width in pixels; a rod of relative length r is LENGTH_SCALE * r long
LENGTH_SCALE = 6


def _rod(labels: np.ndarray, value: int, y: int, x: int, length: int, vertical: bool = True) -> None:
    if vertical:
        labels[y : y + length, x : x + WIDTH] = value
    else:
        labels[y : y + WIDTH, x : x + length] = value


def _cell(skip: tuple[int, ...] = ()) -> np.ndarray:
    """A made-up cell: one vertical rod of each class 1..10 (length from the relative lengths), in a row
    at the top of a 300x400 label image, leaving the lower half free for the case under test."""
    labels = np.zeros((300, 400), np.uint8)
    for i, value in enumerate(v for v in range(1, 11) if v not in skip):
        _rod(labels, value, 5, 10 + 30 * i, int(LENGTH_SCALE * RELATIVE_LENGTH[value]))
    return labels


def _length(value: int) -> int:
    return int(LENGTH_SCALE * RELATIVE_LENGTH[value])


# ----------------------------------------------------------------------------------------------- karyotype


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("46,XY", 46),
        ("46,XX", 46),
        ("45,XX,-13", 45),
        ("47,XY,+21", 47),
        ("47,XXY", 47),
        ("45,X", 45),
        (" 44,XX,-8, -13", 44),
        ("47,XX,+r(9)", 47),
        ("hello", None),
        ("", None),
        ("XY,46", None),
        ("46", None),
        ("46;XY", None),
        ("1234,XY", None),
    ],
)
def test_parse_karyotype_count(text: str, count: int | None) -> None:
    assert parse_karyotype_count(text) == count


def test_parse_karyotype_count_rejects_non_strings() -> None:
    assert parse_karyotype_count(None) is None


def test_clean_karyotype_cuts_trailing_junk() -> None:
    assert clean_karyotype("47,XX,+r(9)acare Hermann Cytogenetics") == "47,XX,+r(9)"
    assert clean_karyotype("46,XX,t(4;9)YUTUYTUY") == "46,XX,t(4;9)"
    assert clean_karyotype("46,XX\x00\x00") == "46,XX"
    assert clean_karyotype("45,XY,-18,t(15;18), +t(20;5)") == "45,XY,-18,t(15;18),+t(20;5)"
    assert clean_karyotype("no karyotype here") is None


def test_read_case_info(tmp_path: Path) -> None:
    info = tmp_path / "Case Info"
    info.write_text("47,XX,+r(9)acare Hermann\nPatient Name:\n")
    assert read_case_info(info) == "47,XX,+r(9)"
    assert read_case_info(tmp_path / "missing") is None


# ------------------------------------------------------------------------------------------------ boxes


def test_single_chromosome_gives_its_exact_extent() -> None:
    labels = np.zeros((50, 60), np.uint8)
    labels[10:31, 20:27] = 7
    boxes, names = boxes_from_label_image(labels)
    assert names == ["7"]
    np.testing.assert_array_equal(boxes, [[20, 10, 27, 31]])


def test_empty_and_overlap_only_images_give_no_boxes() -> None:
    assert len(boxes_from_label_image(np.zeros((20, 20), np.uint8))[0]) == 0
    only_overlap = np.zeros((20, 20), np.uint8)
    only_overlap[5:9, 5:9] = 255
    boxes, names = boxes_from_label_image(only_overlap)
    assert boxes.shape == (0, 4) and names == []


def test_specks_are_dropped() -> None:
    labels = _cell()
    labels[250:252, 300:302] = 15  # 4 isolated pixels
    boxes, names = boxes_from_label_image(labels)
    assert len(boxes) == 10 and "15" not in names


def test_cell_of_separate_chromosomes_counts_each_once() -> None:
    boxes, names = boxes_from_label_image(_cell())
    assert sorted(names, key=int) == [str(v) for v in range(1, 11)]


def test_two_touching_homologs_side_by_side_give_two_boxes() -> None:
    labels = _cell(skip=(4,))
    _rod(labels, 4, 120, 100, _length(4))
    _rod(labels, 4, 120, 100 + WIDTH, _length(4))  # touching along its whole length
    boxes, names = boxes_from_label_image(labels)
    assert names.count("4") == 2 and len(boxes) == 11
    four = boxes[[n == "4" for n in names]]
    assert np.all(four[:, 2] - four[:, 0] <= WIDTH + 2)  # cut between the rods, not across them


def test_two_touching_homologs_end_to_end_give_two_boxes() -> None:
    labels = _cell(skip=(6,))
    _rod(labels, 6, 180, 20, _length(6), vertical=False)
    _rod(labels, 6, 182, 20 + _length(6), _length(6), vertical=False)  # end to end, slightly offset
    boxes, names = boxes_from_label_image(labels)
    assert names.count("6") == 2 and len(boxes) == 11


def test_crossing_chromosomes_stay_one_each() -> None:
    """A class-2 rod crossed by a class-3 rod: the overlap cuts the class-2 rod in two, yet it is one."""
    labels = _cell(skip=(2, 3))
    _rod(labels, 2, 120, 150, _length(2))  # vertical
    _rod(labels, 3, 150, 120, _length(3), vertical=False)  # horizontal, crossing it
    labels[150 : 150 + WIDTH, 150 : 150 + WIDTH] = 255
    boxes, names = boxes_from_label_image(labels)
    assert sorted(names, key=int) == [str(v) for v in range(1, 11)]
    two = boxes[names.index("2")]
    np.testing.assert_array_equal(two, [150, 120, 150 + WIDTH, 120 + _length(2)])


def test_two_homologs_crossing_each_other_give_two() -> None:
    """Two class-5 rods crossing: four pieces at one overlap, paired straight through the crossing."""
    labels = _cell(skip=(5,))
    length = _length(5)
    _rod(labels, 5, 110, 150, length)
    _rod(labels, 5, 124, 135, length, vertical=False)
    labels[124 : 124 + WIDTH, 150 : 150 + WIDTH] = 255  # in the middle of both
    boxes, names = boxes_from_label_image(labels)
    assert names.count("5") == 2 and len(boxes) == 11
    five = boxes[[n == "5" for n in names]]
    sizes = sorted((five[:, 2] - five[:, 0]).tolist())
    assert sizes == [WIDTH, length]


def test_rejects_non_2d() -> None:
    with pytest.raises(AnnotationError):
        boxes_from_label_image(np.zeros((2, 3, 4), np.uint8))


# ------------------------------------------------------------------------------------------------ folders


def test_import_mask_folder_on_made_up_slide(tmp_path: Path) -> None:
    slide = tmp_path / "S01__XY"
    slide.mkdir()
    labels = _cell()
    Image.fromarray(labels).save(slide / "S0101XYK.tif")
    Image.fromarray(np.full(labels.shape, 30, np.uint8)).save(slide / "S0101XYD.tif")
    (slide / "Case Info").write_text("46,XY\n")
    (record,) = import_mask_folder(tmp_path)
    assert record.path == slide / "S0101XYD.tif"
    assert (record.width, record.height) == (400, 300)
    assert record.count == 10 and record.expected_count == 46 and record.karyotype == "46,XY"
    record.validate()


def test_import_mask_folder_needs_the_image(tmp_path: Path) -> None:
    Image.fromarray(_cell()).save(tmp_path / "S0101XYK.tif")
    with pytest.raises(AnnotationError, match="S0101XYD.tif"):
        import_mask_folder(tmp_path)


def test_import_one_real_slide(shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "mfish" / "A01__XY"
    if not source.is_dir():
        pytest.skip("M-FISH set not there")
    shutil.copytree(source, tmp_path / "A01__XY")
    records = import_mask_folder(tmp_path)
    assert len(records) == 5
    for record in records:
        record.validate()
        assert record.karyotype == "46,XY" and record.expected_count == 46
        assert (record.width, record.height) == (645, 517)
        assert abs(record.count - 46) <= 1


def test_mfish_agreement_with_karyotype(shared_data: Path) -> None:
    root = shared_data / "mfish"
    if not root.is_dir():
        pytest.skip("M-FISH set not there")
    records = import_mask_folder(root)
    assert len(records) == 136
    agree = np.mean([r.count == r.expected_count for r in records])
    assert agree >= 0.95, f"box count equals the karyotype count on only {agree:.1%} of images"
