"""benchmarks/widen_heads.py: widening a stage's fc layers leaves what it computes unchanged."""

import importlib.util
from pathlib import Path

import torch
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

from deepace.models.context import ContextTwoMLPHead

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "widen_heads.py"
spec = importlib.util.spec_from_file_location("widen_heads", SCRIPT)
widen_heads = importlib.util.module_from_spec(spec)
spec.loader.exec_module(widen_heads)


def test_a_widened_stage_computes_the_same_and_its_new_units_can_learn() -> None:
    torch.manual_seed(0)
    head, predictor = ContextTwoMLPHead(4, 3, 16, context_size=2), FastRCNNPredictor(16, 2)
    torch.nn.init.normal_(head.fc6_context.weight)  # as after training
    x = torch.randn(5, 4 * 3 * 3 + 4 * 2 * 2)
    before = [t.detach().clone() for t in predictor(head(x))]
    widen_heads.widen_stage(head, predictor, 40)
    assert head.fc7.weight.shape == (40, 40) and predictor.cls_score.weight.shape == (2, 40)
    after = predictor(head(x))
    for old, new in zip(before, after, strict=True):
        torch.testing.assert_close(new, old)
    # the new units are live: gradients reach the predictor's new columns and fc7's weights on new fc6 units
    sum(t.sum() for t in after).backward()
    assert predictor.cls_score.weight.grad[:, 16:].abs().sum() > 0
    assert head.fc7.weight.grad[:16, 16:].abs().sum() > 0  # old units start to read the new ones
