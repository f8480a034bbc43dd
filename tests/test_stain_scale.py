"""Fluorescence spreads are enlarged by `model.fluorescence_scale` on the way into the network, in
training and in counting alike, and boxes come back in the image's own pixels."""

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deepace.config import ModelConfig
from deepace.data.dataset import DetectionDataset
from deepace.data.images import rescale_gray
from deepace.data.records import ImageRecord
from deepace.inference import Detector
from tests.conftest import spread
from tests.helpers_detection import tiny_config

BOX = np.array([[10.0, 10.0, 14.0, 22.0]], dtype=np.float32)  # the first bar of `spread`


def _record(tmp_path: Path, fluorescence: bool) -> ImageRecord:
    path = tmp_path / ("dapi.png" if fluorescence else "gband.png")
    Image.fromarray(spread(fluorescence=fluorescence)).save(path)
    return ImageRecord(path, BOX.copy(), width=80, height=60)


def test_rescale_gray_changes_size_by_the_factor_and_keeps_identity() -> None:
    gray = spread()
    assert rescale_gray(gray, 1.0) is gray
    assert rescale_gray(gray, 2.0).shape == (120, 160)
    assert rescale_gray(gray, 0.5).dtype == np.uint8


def test_stain_scale_applies_to_fluorescence_only() -> None:
    config = ModelConfig(fluorescence_scale=2.0)
    assert config.stain_scale("fluorescence") == 2.0
    assert config.stain_scale("brightfield") == 1.0


def test_dataset_enlarges_fluorescence_images_and_their_boxes(tmp_path: Path) -> None:
    records = [_record(tmp_path, fluorescence=True), _record(tmp_path, fluorescence=False)]
    dataset = DetectionDataset(records, stain_scale=ModelConfig(fluorescence_scale=2.0).stain_scale)
    image, target = dataset.load(0)
    assert image.shape[-2:] == (120, 160)
    assert torch.allclose(target["boxes"], torch.from_numpy(BOX * 2))
    # the enlarged box still frames the (dark, after inversion) bar
    x0, y0, x1, y1 = (int(v) for v in target["boxes"][0])
    assert image[0, y0 + 2 : y1 - 2, x0 + 2 : x1 - 2].mean() < 0.5
    image, target = dataset.load(1)
    assert image.shape[-2:] == (60, 80)
    assert torch.allclose(target["boxes"], torch.from_numpy(BOX))
    flipped, target = dataset.load(0, hflip=True)
    assert torch.allclose(target["boxes"], torch.tensor([[160 - 28.0, 20.0, 160 - 20.0, 44.0]]))


class _EchoModel(torch.nn.Module):
    """Returns one box covering the whole input, so the input size it was given can be read back."""

    seen: tuple[int, int] = (0, 0)

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        h, w = images[0].shape[-2:]
        self.seen = (h, w)
        return [{"boxes": torch.tensor([[0.0, 0.0, float(w), float(h)]]), "scores": torch.tensor([0.9])}]


def test_detector_enlarges_fluorescence_input_and_maps_boxes_back() -> None:
    config = tiny_config()
    config.model.fluorescence_scale = 2.0
    model = _EchoModel()
    detector = Detector(model, config)
    gray = spread(fluorescence=False)
    boxes, _ = detector.predict_gray(gray, "fluorescence")
    assert model.seen == (120, 160)
    assert boxes.tolist() == [[0.0, 0.0, 80.0, 60.0]]  # back in the image's own pixels
    boxes, _ = detector.predict_gray(gray, "brightfield")
    assert model.seen == (60, 80)
    assert boxes.tolist() == [[0.0, 0.0, 80.0, 60.0]]


def test_flip_moves_the_boxes_with_the_pixels() -> None:
    import numpy as np

    from deepace.data.dataset import flip

    gray = np.full((40, 60), 255, np.uint8)
    gray[5:15, 10:30] = 0  # a dark bar at x 10..30, y 5..15
    boxes = np.array([[10, 5, 30, 15]], np.float32)
    for horizontal, vertical in ((True, False), (False, True), (True, True)):
        flipped, moved = flip(gray, boxes, horizontal, vertical)
        x1, y1, x2, y2 = moved[0].astype(int)
        assert flipped.flags["C_CONTIGUOUS"] and (flipped[y1:y2, x1:x2] == 0).all()
        assert (flipped == 0).sum() == (gray == 0).sum()
    assert boxes[0].tolist() == [10, 5, 30, 15]  # the input is not changed
