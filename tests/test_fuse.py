import torch
from torchvision.ops.misc import FrozenBatchNorm2d

from deepace.models.backbones import build_backbone
from deepace.models.fuse import fold_frozen_batchnorm


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
