"""Copy-paste augmentation (deepace/data/copy_paste.py) on hand-made cells, and its cached views."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deepace.data.copy_paste import (
    ChromosomeBank,
    ink_box,
    isolated_boxes,
    paste_chromosomes,
    paster,
)
from deepace.data.dataset import DetectionDataset
from deepace.data.records import ImageRecord
from deepace.head_finetune import cache_views
from deepace.models.detector import build_detector
from tests.helpers_detection import tiny_config, write_blob_records


def cell() -> tuple[np.ndarray, np.ndarray]:
    """A white 100×100 cell with two touching chromosomes (grey 100) and one apart (grey 50)."""
    gray = np.full((100, 100), 255, dtype=np.uint8)
    gray[10:40, 10:20] = 100
    gray[10:40, 20:30] = 100
    gray[60:90, 60:70] = 50
    boxes = np.array([[10, 10, 20, 40], [20, 10, 30, 40], [60, 60, 70, 90]], dtype=np.float32)
    return gray, boxes


def test_only_boxes_no_other_box_touches_are_isolated() -> None:
    _, boxes = cell()
    assert isolated_boxes(boxes) == [2]
    assert isolated_boxes(boxes, margin=-1.0) == [0, 1, 2]  # shrunk, the shared edge no longer touches
    assert isolated_boxes(np.zeros((0, 4), dtype=np.float32)) == []


def test_the_bank_keeps_the_isolated_chromosome_with_its_name() -> None:
    gray, boxes = cell()
    bank = ChromosomeBank()
    bank.add_from(gray, ImageRecord(Path("c.png"), boxes, labels=["A1", "A1", "C7"]))
    assert len(bank) == 1 and bank.names == ["C7"]
    assert bank.pieces[0].shape == (30, 10) and (bank.pieces[0] == 50).all()


def test_a_bank_from_records_reads_each_image_prepared_and_keeps_at_most_per_cell(tmp_path: Path) -> None:
    gray, boxes = cell()
    gray[0:5, 0:5] = 230  # above the paper's threshold: whitened when the image is prepared
    Image.fromarray(gray).save(tmp_path / "c.png")
    apart = np.array([[60, 60, 70, 90], [0, 0, 5, 5]], dtype=np.float32)
    record = ImageRecord(
        tmp_path / "c.png", np.concatenate([boxes, apart[1:]]), labels=["A1", "A1", "C7", "x"]
    )
    bank = ChromosomeBank.from_records([record, record], per_cell=1)
    assert bank.names == ["C7", "C7"]  # the whitened corner box has no chromosome pixel left
    assert len(ChromosomeBank.from_records([record])) == 1


def test_ink_box_is_the_tight_box_of_chromosome_pixels() -> None:
    piece = np.full((20, 30), 255, dtype=np.uint8)
    piece[5:9, 12:20] = 120
    assert ink_box(piece) == (12, 5, 20, 9)
    assert ink_box(np.full((4, 4), 230, dtype=np.uint8)) is None  # no pixel below 200


def test_a_pasted_chromosome_multiplies_into_the_cell_and_gets_its_tight_box() -> None:
    gray, boxes = cell()
    piece = np.full((12, 6), 255, dtype=np.uint8)
    piece[1:11, 1:5] = 102  # 0.4 transmittance, a 1-pixel white margin
    bank = ChromosomeBank([piece], ["B4"])
    out, new_boxes, names = paste_chromosomes(
        gray, boxes, ["A1", "A1", "C7"], bank, np.random.default_rng(0), count=1, across_share=1.0
    )
    np.testing.assert_array_equal(new_boxes[:3], boxes)  # the old boxes stay
    assert names == ["A1", "A1", "C7", "B4"]
    x1, y1, x2, y2 = new_boxes[3].astype(int)
    assert {x2 - x1, y2 - y1} == {4, 10}  # turned by a multiple of 90°, ink only
    inside = out[y1:y2, x1:x2].astype(int)
    before = gray[y1:y2, x1:x2].astype(int)
    np.testing.assert_array_equal(inside, np.round(before * 102 / 255))  # darker where it crosses
    # centred on a chromosome already there: it overlaps one of the three boxes
    overlaps = [min(x2, b[2]) > max(x1, b[0]) and min(y2, b[3]) > max(y1, b[1]) for b in boxes]
    assert any(overlaps)
    # outside the pasted box nothing changed (its margin is white: ×1)
    changed = np.argwhere(out != gray)
    assert ((changed[:, 0] >= y1) & (changed[:, 0] < y2) & (changed[:, 1] >= x1) & (changed[:, 1] < x2)).all()


def test_an_empty_bank_leaves_the_cell_as_it_was() -> None:
    gray, boxes = cell()
    out, new_boxes, names = paste_chromosomes(
        gray, boxes, ["a", "b", "c"], ChromosomeBank(), np.random.default_rng()
    )
    np.testing.assert_array_equal(out, gray)
    np.testing.assert_array_equal(new_boxes, boxes)
    assert names == ["a", "b", "c"]


def test_the_dataset_applies_an_augment_before_flipping(tmp_path: Path) -> None:
    gray, boxes = cell()
    Image.fromarray(gray).save(tmp_path / "c.png")
    record = ImageRecord(tmp_path / "c.png", boxes, labels=["A1", "A1", "C7"], width=100, height=100)
    bank = ChromosomeBank()
    bank.add_from(gray, record)
    dataset = DetectionDataset([record])
    plain_image, plain = dataset.load(0)
    image, target = dataset.load(0, hflip=True, augment=paster(bank, seed=3, count=2))
    assert len(target["boxes"]) == 5 and len(plain["boxes"]) == 3
    assert target["chromosome_class"].tolist() == [1, 1, 7, 7, 7]
    # the same seed gives the same view (a cache is reproducible)
    again, _ = dataset.load(0, hflip=True, augment=paster(bank, seed=3, count=2))
    torch.testing.assert_close(image, again)
    assert not torch.equal(image, plain_image.flip(-1))  # something was pasted


def test_the_cache_adds_pasted_views_to_the_sources_it_names(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = tiny_config(fpn=True, head="fc", repulsion="none")
    model = build_detector(config.model).eval()
    records = write_blob_records(tmp_path / "imgs", 2, size=128)
    bank = ChromosomeBank()
    for record in records:
        bank.add_from(np.asarray(Image.open(record.path).convert("L")), record)
    assert len(bank) > 0
    pasted_source, plain_source = tmp_path / "g.json", tmp_path / "m.json"
    index = cache_views(
        model,
        config,
        {pasted_source: records, plain_source: records},
        1,
        tmp_path / "cache",
        progress=False,
        pasted={pasted_source: bank},
        pasted_views=2,
    )
    views = [(Path(item["coco"]).stem, item["record"], item["view"]) for item in index]
    assert views == [("g", 0, 0), ("g", 0, 1), ("g", 0, 2), ("g", 1, 0), ("g", 1, 1), ("g", 1, 2)] + [
        ("m", 0, 0),
        ("m", 1, 0),
    ]
    entries = [torch.load(tmp_path / "cache" / item["file"], weights_only=False) for item in index[:3]]
    plain_count = len(entries[0]["boxes"])
    assert all(len(e["boxes"]) > plain_count for e in entries[1:])  # four chromosomes pasted by default
