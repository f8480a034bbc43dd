from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from deepace.data.records import ImageRecord
from deepace.data.splits import parent_group, split_records


def _records(n46: int = 180, n45: int = 12, n47: int = 6, n43: int = 1) -> list[ImageRecord]:
    counts = [46] * n46 + [45] * n45 + [47] * n47 + [43] * n43
    return [ImageRecord(Path(f"/data/img{i:04d}.jpg"), expected_count=c) for i, c in enumerate(counts)]


def _names(records: list[ImageRecord]) -> list[str]:
    return [r.path.name for r in records]


def test_split_is_deterministic_and_independent_of_order() -> None:
    records = _records()
    train, val = split_records(records, val_fraction=0.1, seed=0)
    shuffled = records[:]
    random.Random(5).shuffle(shuffled)
    train2, val2 = split_records(shuffled, val_fraction=0.1, seed=0)
    assert _names(val) == _names(val2) and _names(train) == _names(train2)
    assert _names(val) == sorted(_names(val))
    assert set(_names(train)).isdisjoint(_names(val))
    assert len(train) + len(val) == len(records)
    other_train, other_val = split_records(records, val_fraction=0.1, seed=1)
    assert _names(other_val) != _names(val)


def test_split_is_stratified_rare_counts_in_val() -> None:
    records = _records()
    train, val = split_records(records, val_fraction=0.1, seed=0)
    val_counts = Counter(r.expected_count for r in val)
    train_counts = Counter(r.expected_count for r in train)
    assert val_counts[46] == 18 and val_counts[45] in (1, 2) and val_counts[47] == 1
    assert train_counts[45] >= 10 and train_counts[47] == 5
    assert val_counts[43] == 0 and train_counts[43] == 1  # a single image cannot be on both sides
    assert 19 <= len(val) <= 22


@pytest.mark.parametrize("seed", range(5))
def test_rare_counts_in_val_for_every_seed(seed: int) -> None:
    _, val = split_records(_records(n47=2), val_fraction=0.1, seed=seed)
    assert {45, 46, 47} <= {r.expected_count for r in val}


def test_split_groups_stay_together() -> None:
    records = [
        ImageRecord(Path(f"/mfish/slide{s:02d}/cell{c}.tif"), expected_count=46 if s % 3 else 47)
        for s in range(20)
        for c in range(4)
    ]
    train, val = split_records(records, val_fraction=0.2, seed=0, group=parent_group)
    train_slides = {parent_group(r) for r in train}
    val_slides = {parent_group(r) for r in val}
    assert train_slides.isdisjoint(val_slides)
    assert len(val) % 4 == 0 and 12 <= len(val) <= 20
    assert {r.expected_count for r in val} == {46, 47}


def test_split_without_stratify_and_custom_key() -> None:
    records = _records()
    _, val = split_records(records, val_fraction=0.25, stratify=None)
    assert len(val) == round(0.25 * len(records))
    _, val = split_records(records, val_fraction=0.1, stratify=lambda r: r.expected_count == 46)
    assert any(r.expected_count != 46 for r in val)


def test_split_edge_fractions() -> None:
    records = _records()
    train, val = split_records(records, val_fraction=0.0)
    assert val == [] and len(train) == len(records)
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="val_fraction"):
            split_records(records, val_fraction=bad)
    assert split_records([], val_fraction=0.1) == ([], [])


def test_split_does_not_depend_on_how_the_data_folder_is_spelled() -> None:
    from deepace.data.splits import split_records as split

    def spelled(root: str) -> list[ImageRecord]:
        return [
            ImageRecord(Path(root) / "images" / r.path.name, expected_count=r.expected_count)
            for r in _records()
        ]

    vals = [
        _names(split(spelled(root), val_fraction=0.1)[1])
        for root in ("../shared/data", "/work/shared/data", "d")
    ]
    assert vals[0] == vals[1] == vals[2]


def test_split_by_list_reproduces_a_recorded_split() -> None:
    from deepace.data.splits import split_by_list

    records = [ImageRecord(Path(f"/x/data/slide{i % 3}/img{i}.tif")) for i in range(9)]
    train, val = split_by_list(records, ["slide1/img1.tif", "slide1/img4.tif", ""])
    assert _names(val) == ["img1.tif", "img4.tif"]
    assert len(train) == 7 and set(_names(train)).isdisjoint(_names(val))
    with pytest.raises(ValueError, match="matches 0 images"):
        split_by_list(records, ["slide1/img2.tif"])
    with pytest.raises(ValueError, match="matches 0 images"):
        split_by_list(records, ["mg1.tif"])  # a suffix of a name is no match


def test_paths_named_together_land_on_one_side_even_across_groups_and_strata() -> None:
    records = _records()
    pairs = [(records[i].path, records[190 + i % 8].path) for i in range(0, 40, 5)]  # 46s with rare counts

    def split_pairs(seed: int, together: list) -> int:
        train, val = split_records(records, val_fraction=0.3, seed=seed, together=together)
        assert len(train) + len(val) == len(records) and 50 <= len(val) <= 70
        in_val = {r.path for r in val}
        return sum((a in in_val) != (b in in_val) for a, b in pairs)

    assert all(split_pairs(seed, pairs) == 0 for seed in range(10))
    assert sum(split_pairs(seed, []) for seed in range(10)) > 0  # without `together` the draw splits pairs
    assert split_records(records, seed=3, together=[]) == split_records(records, seed=3)
    assert _names(split_records(records[::-1], seed=3, together=pairs[::-1])[1]) == _names(
        split_records(records, seed=3, together=pairs)[1]
    )


def test_together_joins_whole_groups() -> None:
    records = [
        ImageRecord(Path(f"/mfish/slide{s:02d}/cell{c}.tif"), expected_count=46)
        for s in range(10)
        for c in range(3)
    ]
    copies = [[Path("/mfish/slide00/cell0.tif"), Path("/mfish/slide05/cell2.tif")]]
    for seed in range(6):
        train, val = split_records(records, val_fraction=0.3, seed=seed, group=parent_group, together=copies)
        val_slides = {parent_group(r) for r in val}
        assert ("slide00" in val_slides) == ("slide05" in val_slides)
        assert val_slides.isdisjoint(parent_group(r) for r in train)
