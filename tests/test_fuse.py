from pathlib import Path

import numpy as np
import torch
from torchvision.ops.misc import FrozenBatchNorm2d

from deepace.inference import Detector, save_model
from deepace.models.backbones import build_backbone
from deepace.models.detector import build_detector
from deepace.models.fuse import fold_frozen_batchnorm
from tests.helpers_detection import blob_image, tiny_config


def test_folding_keeps_outputs_and_removes_batchnorms() -> None:
    torch.manual_seed(0)
    net = build_backbone("mobilenet_v2").eval()
    for m in net.modules():  # non-trivial statistics
        if isinstance(m, FrozenBatchNorm2d):
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.2, 0.2)
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        before = net(x)
        n = fold_frozen_batchnorm(net)
        after = net(x)
    assert n > 30
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in net.modules())
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)


def test_optimised_detector_predicts_what_the_saved_one_does(tmp_path: Path) -> None:
    """`Detector.load(optimise=True)` (what `deepace count` runs) folds the batch norms and goes
    channels-last, and finds the same boxes with the same scores as the plain model; plain loading keeps
    every parameter, so a model loaded to be refitted or exported loses nothing."""
    torch.manual_seed(0)
    config = tiny_config(backbone="mobilenet_v2")
    model = build_detector(config.model).eval()
    for m in model.modules():
        if isinstance(m, FrozenBatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.8, 1.2)
    path = tmp_path / "m.pt"
    save_model(path, model, config, score_threshold=0.3)
    img, _ = blob_image(np.random.default_rng(0), size=160, n=3)

    plain = Detector.load(path)
    fast = Detector.load(path, optimise=True)
    assert set(plain.model.state_dict()) == set(model.state_dict())
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in fast.model.modules())
    boxes, scores = plain.predict_gray(img)
    fast_boxes, fast_scores = fast.predict_gray(img)
    assert len(scores) > 0
    torch.testing.assert_close(torch.from_numpy(fast_scores), torch.from_numpy(scores), rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(torch.from_numpy(fast_boxes), torch.from_numpy(boxes), rtol=1e-3, atol=1e-2)


def test_threaded_roi_pooling_gives_the_rows_of_one_call() -> None:
    """ThreadedRoIPool splits each image's boxes between threads: the rows must come back in the
    pooler's order (image by image, box by box) and equal one call's, for channels-last maps too, with an
    image that has no boxes, and with fewer boxes than threads."""
    from torchvision.ops import MultiScaleRoIAlign

    from deepace.models.context import ContextRoIPool
    from deepace.models.fuse import ThreadedRoIPool

    torch.manual_seed(0)
    features = {
        "0": torch.rand(3, 8, 40, 48).contiguous(memory_format=torch.channels_last),
        "1": torch.rand(3, 8, 20, 24),
    }
    shapes = [(320, 384)] * 3

    def random_boxes(n: int) -> torch.Tensor:
        xy = torch.rand(n, 2) * 250
        return torch.cat([xy, xy + 8 + torch.rand(n, 2) * 120], dim=1)

    pool = ContextRoIPool(
        MultiScaleRoIAlign(["0", "1"], output_size=7, sampling_ratio=2),
        MultiScaleRoIAlign(["0", "1"], output_size=3, sampling_ratio=4),
        scale=1.5,
    )
    threaded = ThreadedRoIPool(pool, workers=3)
    for boxes in ([random_boxes(37), random_boxes(0), random_boxes(11)], [random_boxes(2)] * 3):
        expected = pool(features, boxes, shapes)
        got = threaded(features, boxes, shapes)
        assert got.shape == (sum(len(b) for b in boxes), expected.shape[1])
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_optimised_loading_threads_the_shared_roi_pooler(tmp_path: Path) -> None:
    from deepace.models.fuse import ThreadedRoIPool

    config = tiny_config(backbone="mobilenet_v2")
    path = tmp_path / "m.pt"
    save_model(path, build_detector(config.model).eval(), config, score_threshold=0.3)
    threads = torch.get_num_threads()
    try:
        fast = Detector.load(path, num_threads=2, optimise=True).model
        assert isinstance(fast.roi_heads.box_roi_pool, ThreadedRoIPool)
        single = Detector.load(path, num_threads=1, optimise=True).model
        assert not any(isinstance(m, ThreadedRoIPool) for m in single.modules())
    finally:
        torch.set_num_threads(threads)
