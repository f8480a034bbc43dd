"""Cascade stages (model.cascade_ious): each stage learns from and refines the previous stage's boxes."""

import math

import pytest
import torch
from torch import nn

from deepace.models.cascade import CascadeRoIHeads, predict
from deepace.models.detector import adapt_state_dict, build_detector
from deepace.models.roi_heads import repulsion_loss
from tests.helpers_detection import ONE_CHROMOSOME, tiny_config

CASCADE = {"fpn": True, "head": "fc", "repulsion": "none", "cascade_ious": (0.6,)}
IMAGE_SHAPE = (256, 256)
FEATURES = {"0": torch.rand(1, 128, 32, 32), "1": torch.rand(1, 128, 16, 16)}  # strides 8 and 16
SHIFTED = ONE_CHROMOSOME + torch.tensor([0.0, 29.0, 0.0, 29.0])  # IoU 71/129 = 0.55 with the chromosome
TARGET = {"boxes": ONE_CHROMOSOME, "labels": torch.ones(1, dtype=torch.int64)}


def set_predictor(predictor: nn.Module, chromosome_logit: float, dy: float) -> None:
    """Every RoI gets the same class logits (0, chromosome_logit) and moves by dy (encoded) vertically."""
    with torch.no_grad():
        for layer in (predictor.cls_score, predictor.bbox_pred):
            layer.weight.zero_()
            layer.bias.zero_()
        predictor.cls_score.bias[1] = chromosome_logit
        predictor.bbox_pred.bias[5] = dy


def cascade_heads(**model: object) -> CascadeRoIHeads:
    torch.manual_seed(0)
    heads = build_detector(tiny_config(**{**CASCADE, **model}).model).roi_heads
    assert isinstance(heads, CascadeRoIHeads)
    return heads


@pytest.mark.parametrize("head", ["fc", "conv"])
def test_each_stage_has_its_losses_and_the_model_predicts(head: str) -> None:
    torch.manual_seed(0)
    model = build_detector(tiny_config(**{**CASCADE, "head": head, "cascade_ious": (0.6, 0.7)}).model)
    image = torch.rand(3, 128, 160)
    target = {
        "boxes": torch.tensor([[10.0, 10.0, 40.0, 70.0], [90, 40, 150, 70]]),
        "labels": torch.ones(2).long(),
    }
    model.train()
    losses = model([image], [target])
    assert {
        "loss_classifier_stage2",
        "loss_box_reg_stage2",
        "loss_classifier_stage3",
        "loss_box_reg_stage3",
    } < set(losses)
    sum(losses.values()).backward()
    assert model.roi_heads.stages[1].box_predictor.cls_score.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        out = model([image])[0]
    assert out["boxes"].shape[1] == 4 and (out["scores"][:-1] >= out["scores"][1:]).all()


@pytest.mark.parametrize("first_stage_dy, second_stage_positives", [(-2.9, 7), (0.0, 2)])
def test_the_second_stage_learns_from_the_first_stages_refined_boxes(
    first_stage_dy: float, second_stage_positives: int
) -> None:
    """Six proposals at IoU 0.55 are first-stage positives (IoU ≥ 0.5). Moved onto the chromosome by the
    first stage (dy = −29 px / 100 px × 10) they are second-stage positives at its IoU 0.6, with its own
    copy of the ground truth: 7. Left where they are, they are its negatives; its positives are the
    ground truth twice (as the first stage's sample and as its own copy): 2."""
    heads = cascade_heads()
    set_predictor(heads.box_predictor, 0.0, first_stage_dy)
    stage = heads.stages[0]
    sampled_labels = []
    select = stage.select_training_samples

    def spy(proposals, targets):  # noqa: ANN001, ANN202
        result = select(proposals, targets)
        sampled_labels.append(result[2][0])
        return result

    stage.select_training_samples = spy
    background = torch.tensor([[20.0, 20.0, 50.0, 60.0]]) + torch.arange(40.0)[:, None] / 10
    heads.train()
    heads(FEATURES, [torch.cat([SHIFTED.repeat(6, 1), background])], [IMAGE_SHAPE], [TARGET])
    assert int((sampled_labels[0] == 1).sum()) == second_stage_positives


def test_detections_are_the_last_stages_boxes_scored_by_the_mean_of_the_stages_logits() -> None:
    heads = cascade_heads()
    set_predictor(heads.box_predictor, 2.0, -2.9)  # stage 1 moves the proposal onto the chromosome
    set_predictor(heads.stages[0].box_predictor, 0.0, 2.0)  # stage 2 (weights 20): 10 px down
    heads.eval()
    with torch.no_grad():
        detections, losses = heads(FEATURES, [SHIFTED], [IMAGE_SHAPE])
    assert losses == {}
    (out,) = detections
    torch.testing.assert_close(out["boxes"], torch.tensor([[100.0, 110.0, 130.0, 210.0]]), atol=1e-3, rtol=0)
    mean_logit = (2.0 + 0.0) / 2
    torch.testing.assert_close(
        out["scores"], torch.tensor([math.exp(mean_logit) / (1 + math.exp(mean_logit))])
    )


def test_a_trained_single_stage_model_starts_a_cascade_and_comes_back_unchanged() -> None:
    torch.manual_seed(0)
    single = build_detector(tiny_config(**{**CASCADE, "cascade_ious": ()}).model).eval()
    cascade = build_detector(tiny_config(**CASCADE).model).eval()
    cascade.load_state_dict(adapt_state_dict(single.state_dict(), single.config, cascade))  # strict
    heads = cascade.roi_heads
    stage = heads.stages[0]
    assert torch.equal(stage.box_head.fc6.weight, heads.box_head.fc6.weight)
    assert torch.equal(stage.box_predictor.cls_score.weight, heads.box_predictor.cls_score.weight)
    assert not stage.box_predictor.bbox_pred.weight.any()  # it leaves the first stage's boxes where they are
    back = adapt_state_dict(cascade.state_dict(), cascade.config, single)
    original = single.state_dict()
    assert back.keys() == original.keys()
    assert all(torch.equal(back[k], original[k]) for k in original)


def test_a_cascade_needs_a_stage() -> None:
    with pytest.raises(ValueError, match="at least one"):
        CascadeRoIHeads(
            None, nn.Identity(), nn.Identity(), 0.5, 0.5, 32, 0.25, None, 0.05, 0.5, 100, stages=[]
        )


def test_a_stage_can_send_a_scaled_gradient_into_the_shared_features() -> None:
    stage = cascade_heads().stages[0]
    grads = []
    for scale in (1.0, 0.25):
        features = {k: v.clone().requires_grad_() for k, v in FEATURES.items()}
        logits, regression = predict(stage, features, [SHIFTED], [IMAGE_SHAPE], backbone_gradient=scale)
        (logits.sum() + regression.sum()).backward()
        grads.append(features["0"].grad)
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[1], grads[0] * 0.25)


TOUCHING = torch.tensor([[10.0, 10.0, 40.0, 70.0], [40.0, 10.0, 70.0, 70.0]])  # two chromosomes side by side


@pytest.mark.parametrize("all_stages", [True, False])
def test_the_repulsion_term_reaches_the_further_stages_only_when_asked(all_stages: bool) -> None:
    torch.manual_seed(0)
    config = tiny_config(
        **{**CASCADE, "cascade_ious": (0.6, 0.7), "repulsion": "tnrl", "repulsion_all_stages": all_stages}
    )
    model = build_detector(config.model).train()
    losses = model([torch.rand(3, 96, 96)], [{"boxes": TOUCHING, "labels": torch.ones(2).long()}])
    stage_terms = {"loss_repulsion_stage2", "loss_repulsion_stage3"}
    assert "loss_repulsion" in losses
    assert stage_terms & set(losses) == (stage_terms if all_stages else set())


def test_a_further_stages_repulsion_pushes_its_box_off_the_neighbour() -> None:
    """A RoI on the left chromosome (IoU 0.5) that reaches 10 px into the right one: the stage's TNRL is
    -ln(1 - 600/1800) and its gradient moves the box left (positive d loss / d dx)."""
    stage = cascade_heads(repulsion="tnrl").stages[0]
    regression = torch.zeros(1, 8, requires_grad=True)  # (background, chromosome) × (dx, dy, dw, dh)
    loss = repulsion_loss(
        stage,
        "tnrl",
        [torch.tensor([[20.0, 10.0, 50.0, 70.0]])],
        [torch.tensor([0])],
        [torch.tensor([1])],
        [TOUCHING],
        regression,
    )
    assert loss.item() == pytest.approx(-math.log(1 - 600 / 1800), rel=1e-4)
    loss.backward()
    assert regression.grad[0, 4] > 0 and regression.grad[0, :4].abs().sum() == 0
