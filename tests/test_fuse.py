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


def test_optimised_loading_pools_with_one_shared_matrix_pooler(tmp_path: Path) -> None:
    """Every MultiScaleRoIAlign of the optimised detector (box and context poolers, shared by the cascade's
    stages) becomes a MatrixRoIAlign, still shared."""
    from torchvision.ops import MultiScaleRoIAlign

    from deepace.models.matrix_roi_align import MatrixRoIAlign

    config = tiny_config(backbone="mobilenet_v2", head="fc", roi_context=2.0, cascade_ious=[0.6])
    path = tmp_path / "m.pt"
    save_model(path, build_detector(config.model).eval(), config, score_threshold=0.3)
    fast = Detector.load(path, optimise=True, runtime="torch").model
    pools = [m for m in fast.modules() if isinstance(m, MultiScaleRoIAlign)]
    assert len(pools) == 2
    assert all(isinstance(m, MatrixRoIAlign) for m in pools)
    assert fast.roi_heads.stages[0].box_roi_pool is fast.roi_heads.box_roi_pool
    plain = Detector.load(path).model
    assert not any(isinstance(m, MatrixRoIAlign) for m in plain.modules())


def test_optimised_copy_leaves_the_detector_whole(tmp_path: Path) -> None:
    """`Detector.optimised_copy` (train-rescorer's candidate passes) runs as `deepace count` does, and the
    detector it was made from keeps every parameter, to be saved afterwards."""
    from deepace.models.matrix_roi_align import MatrixRoIAlign

    config = tiny_config(backbone="mobilenet_v2")
    path = tmp_path / "m.pt"
    save_model(path, build_detector(config.model).eval(), config, score_threshold=0.3)
    detector = Detector.load(path)
    keys = set(detector.model.state_dict())
    fast = detector.optimised_copy(runtime="torch")
    assert set(detector.model.state_dict()) == keys
    assert any(isinstance(m, FrozenBatchNorm2d) for m in detector.model.modules())
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in fast.model.modules())
    assert any(isinstance(m, MatrixRoIAlign) for m in fast.model.modules())
    img, _ = blob_image(np.random.default_rng(1), size=160, n=3)
    boxes, scores = detector.predict_gray(img)
    fast_boxes, fast_scores = fast.predict_gray(img)
    torch.testing.assert_close(torch.from_numpy(fast_scores), torch.from_numpy(scores), rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(torch.from_numpy(fast_boxes), torch.from_numpy(boxes), rtol=1e-3, atol=1e-2)
