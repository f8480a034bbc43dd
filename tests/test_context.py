"""RoI context (model.roi_context): the heads also read each box's surroundings, starting from zero."""

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign

from deepace.models.context import ContextRoIPool, ContextTwoMLPHead, enlarge_boxes
from deepace.models.detector import adapt_state_dict, build_detector
from tests.helpers_detection import tiny_config

CASCADE = {"fpn": True, "head": "fc", "repulsion": "none", "cascade_ious": (0.6,)}


def test_enlarge_boxes_keeps_the_centre_and_scales_the_sides() -> None:
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
    torch.testing.assert_close(enlarge_boxes(boxes, 2.0), torch.tensor([[0.0, 0.0, 40.0, 80.0]]))


def test_the_context_part_sees_outside_the_box_and_the_own_part_does_not() -> None:
    pool = ContextRoIPool(
        MultiScaleRoIAlign(["0"], output_size=7, sampling_ratio=2),
        MultiScaleRoIAlign(["0"], output_size=3, sampling_ratio=4),
        scale=2.0,
    )
    box = [torch.tensor([[16.0, 16.0, 32.0, 32.0]])]
    features = {"0": torch.zeros(1, 4, 48, 48)}
    outside = {"0": features["0"].clone()}
    outside["0"][..., 8:12, 8:12] = 1.0  # inside the enlarged box (8..40), outside the box itself
    plain, changed = pool(features, box, [(48, 48)]), pool(outside, box, [(48, 48)])
    assert plain.shape == (1, 4 * 7 * 7 + 4 * 3 * 3)
    assert torch.equal(changed[:, : 4 * 49], plain[:, : 4 * 49])
    assert changed[:, 4 * 49 :].sum() > 0


def test_the_context_map_starts_at_zero_so_the_head_reads_only_the_box() -> None:
    torch.manual_seed(0)
    head = ContextTwoMLPHead(4, 7, 16)
    own = torch.rand(3, 4 * 7 * 7)
    with_context = head(torch.cat([own, torch.rand(3, 4 * 3 * 3)], dim=1))
    without = head(torch.cat([own, torch.zeros(3, 4 * 3 * 3)], dim=1))
    torch.testing.assert_close(with_context, without)


def test_a_trained_model_given_context_predicts_as_before_until_fine_tuned() -> None:
    torch.manual_seed(0)
    plain = build_detector(tiny_config(**CASCADE).model).eval()
    context = build_detector(tiny_config(**CASCADE, roi_context=2.0).model).eval()
    context.load_state_dict(adapt_state_dict(plain.state_dict(), plain.config, context))  # strict
    image = torch.rand(3, 128, 160)
    with torch.no_grad():
        expected, got = plain([image])[0], context([image])[0]
    assert len(expected["boxes"]) > 0
    torch.testing.assert_close(got["boxes"], expected["boxes"])
    torch.testing.assert_close(got["scores"], expected["scores"])
    back = adapt_state_dict(context.state_dict(), context.config, plain)
    assert back.keys() == plain.state_dict().keys()


def test_context_learns_and_needs_fc_heads() -> None:
    torch.manual_seed(0)
    model = build_detector(tiny_config(**CASCADE, roi_context=2.0).model).train()
    target = {"boxes": torch.tensor([[10.0, 10.0, 40.0, 70.0]]), "labels": torch.ones(1).long()}
    sum(model([torch.rand(3, 128, 160)], [target]).values()).backward()
    assert model.roi_heads.box_head.fc6_context.weight.grad.abs().sum() > 0
    assert model.roi_heads.stages[0].box_head.fc6_context.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="fc box head"):
        build_detector(tiny_config(**{**CASCADE, "head": "conv"}, roi_context=2.0).model)
