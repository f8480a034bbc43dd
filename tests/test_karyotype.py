"""The karyotype term (model.karyotype_weight): each head stage names its positive RoIs' chromosome class."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from deepace.data.dataset import DetectionDataset
from deepace.data.karyotype import karyotype_class
from deepace.data.records import ImageRecord
from deepace.models.detector import adapt_state_dict, build_detector
from deepace.models.roi_heads import karyotype_loss
from tests.conftest import spread
from tests.helpers_detection import tiny_config

CASCADE = {"fpn": True, "head": "fc", "repulsion": "none", "cascade_ious": (0.6, 0.7)}


@pytest.mark.parametrize(
    ("name", "expected"),
    [("A1", 1), ("C10", 10), ("G22", 22), ("X", 23), ("Y", 24), ("7", 7), ("22", 22), ("x", 23)],
)
def test_taichung_and_mfish_names_map_to_the_same_classes(name: str, expected: int) -> None:
    assert karyotype_class(name) == expected


@pytest.mark.parametrize("name", ["chromosome", "23", "0", "H1", "A", "", "1p"])
def test_other_names_are_unknown(name: str) -> None:
    assert karyotype_class(name) == 0


def test_loss_is_the_cross_entropy_of_known_positive_rois_only() -> None:
    classifier = nn.Linear(4, 25)
    features = torch.randn(5, 4, requires_grad=True)
    # image 1: RoIs 0-2 (positive on ground truth 1, positive on 0, negative); image 2: RoIs 3-4, both
    # positive on ground truth 0, whose class is unknown (0)
    matched = [torch.tensor([1, 0, 0]), torch.tensor([0, 0])]
    labels = [torch.tensor([1, 1, 0]), torch.tensor([1, 1])]
    targets = [{"chromosome_class": torch.tensor([23, 5])}, {"chromosome_class": torch.tensor([0])}]
    loss = karyotype_loss(classifier, features, matched, labels, targets)
    log_p = classifier(features).log_softmax(dim=1)
    assert torch.isclose(loss, -(log_p[0, 5] + log_p[1, 23]) / 2)
    # nothing known: zero, still connected to the graph
    none = karyotype_loss(classifier, features, matched, labels, [{"boxes": torch.zeros(2, 4)}] * 2)
    assert none.item() == 0.0 and none.requires_grad


def test_every_stage_learns_classes_when_asked_and_fine_tunes_from_a_model_without() -> None:
    torch.manual_seed(0)
    image = torch.rand(3, 128, 160)
    target = {
        "boxes": torch.tensor([[10.0, 10.0, 40.0, 70.0], [90, 40, 150, 70]]),
        "labels": torch.ones(2).long(),
        "chromosome_class": torch.tensor([1, 23]),
    }
    plain = build_detector(tiny_config(**CASCADE).model).train()
    assert not any("karyotype" in name for name in plain([image], [target]))
    config = tiny_config(**CASCADE, karyotype_weight=0.5).model
    model = build_detector(config)
    model.load_state_dict(adapt_state_dict(plain.state_dict(), plain.config, model))  # --init
    model.train()
    losses = model([image], [target])
    names = {"loss_karyotype", "loss_karyotype_stage2", "loss_karyotype_stage3"}
    assert names <= set(losses)
    # an untrained classifier is about uniform over 25 classes: weight × ln 25, when RoIs were positive
    assert all(0.0 < losses[n].item() < 0.5 * math.log(25) * 1.5 for n in names)
    sum(losses.values()).backward()
    heads = model.roi_heads
    for classifier in (heads.karyotype_classifier, *(s.karyotype_classifier for s in heads.stages)):
        assert classifier.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():  # inference does not read it
        assert model([image])[0]["boxes"].shape[1] == 4


def test_conv_heads_refuse_it() -> None:
    with pytest.raises(ValueError, match="fc heads"):
        build_detector(tiny_config(**{**CASCADE, "head": "conv"}, karyotype_weight=1.0).model)


def test_the_dataset_gives_each_box_its_class(tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "cell.png"
    Image.fromarray(spread()).save(path)
    boxes = np.array([[10, 10, 14, 22], [40, 30, 44, 42], [60, 15, 64, 27]], dtype=np.float32)
    record = ImageRecord(path=path, boxes=boxes, labels=["A1", "X", "chromosome"])
    _, target = DetectionDataset([record]).load(0, hflip=True)
    assert target["chromosome_class"].tolist() == [1, 23, 0]
