"""The assembled model: every paper switch builds, trains one step and predicts."""

import pytest
import torch

from deepace.models.detector import adapt_state_dict, build_detector
from deepace.models.heads import ConvBoxPredictor
from deepace.models.hnas import HardNegativeAnchorSampler
from deepace.models.rpn import DeepACERPN
from tests.helpers_detection import ONE_CHROMOSOME, sample_head_rois, tiny_config

IMAGE = torch.rand(3, 128, 160)
TARGET = {
    "boxes": torch.tensor([[10.0, 10.0, 40.0, 70.0], [30.0, 20.0, 60.0, 80.0], [90, 40, 150, 70]]),
    "labels": torch.ones(3, dtype=torch.int64),
}


@pytest.mark.parametrize(
    "switches",
    [
        {},
        {"hnas": False},
        {"head": "fc"},
        {"repulsion": "repgt"},
        {"repulsion": "none", "rpn_soft_nms": None, "box_soft_nms": None},
        {"input_scale": 0.5},
        {"fpn": True},
        {"fpn": True, "head": "fc", "repulsion": "none"},
        {"fpn": True, "fpn_finest_stride": 4},
        {"box_hard_negative_iou": 0.1},
    ],
)
def test_switches_train_and_predict(switches: dict) -> None:
    torch.manual_seed(0)
    model = build_detector(tiny_config(**switches).model)
    model.train()
    losses = model([IMAGE], [TARGET])
    expected = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    if switches.get("repulsion", "tnrl") != "none":
        expected.add("loss_repulsion")
    assert set(losses) == expected
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        out = model([IMAGE])[0]
    assert out["boxes"].shape[1] == 4 and len(out["scores"]) == len(out["boxes"])
    assert (out["scores"][:-1] >= out["scores"][1:]).all()


def test_components_are_what_the_config_says() -> None:
    model = build_detector(tiny_config().model)
    assert isinstance(model.rpn, DeepACERPN)
    assert isinstance(model.rpn.fg_bg_sampler, HardNegativeAnchorSampler)
    assert isinstance(model.roi_heads.box_predictor, ConvBoxPredictor)
    assert model.rpn.anchor_generator.num_anchors_per_location() == [2 * 3]
    paper = build_detector(
        tiny_config(
            anchor_sizes=(32, 64, 96, 128), aspect_ratios=(1 / 5, 1 / 4, 1 / 3, 1 / 2, 1, 2, 3, 4, 5)
        ).model
    )
    assert paper.rpn.anchor_generator.num_anchors_per_location() == [36]


def test_anchors_scale_with_input_resolution() -> None:
    half = build_detector(tiny_config(input_scale=0.5).model)
    assert half.rpn.anchor_generator.sizes == ((16.0, 24.0),)


def test_conv_head_shapes_follow_the_paper() -> None:
    head = ConvBoxPredictor(64, 2)
    x = torch.rand(5, 64, 7, 7)
    assert head.cls_branch(x).shape == (5, 64)  # 7x7 -> 3x3/3 -> 2x2 -> 2x2/1 -> 1x1
    assert [m.out_channels for m in head.reg_branch if isinstance(m, torch.nn.Conv2d)] == [128, 32, 8, 1]
    scores, deltas = head(x)
    assert scores.shape == (5, 2) and deltas.shape == (5, 8)


def test_repulsion_term_is_weighted_by_alpha() -> None:
    torch.manual_seed(0)
    m1 = build_detector(tiny_config(repulsion_weight=1.0).model)
    torch.manual_seed(0)
    m10 = build_detector(tiny_config(repulsion_weight=10.0).model)
    torch.manual_seed(1)
    l1 = m1.train()([IMAGE], [TARGET])["loss_repulsion"]
    torch.manual_seed(1)
    l10 = m10.train()([IMAGE], [TARGET])["loss_repulsion"]
    assert l1.item() > 0
    assert l10.item() == pytest.approx(10 * l1.item(), rel=1e-4)


def test_pyramid_gives_stride_8_and_16_maps_and_splits_the_anchor_scales() -> None:
    model = build_detector(tiny_config(fpn=True, anchor_sizes=(32, 64, 96, 128)).model)
    maps = model.backbone(torch.rand(1, 3, 128, 160))
    assert list(maps) == ["0", "1"]
    assert maps["0"].shape[-2:] == (16, 20) and maps["1"].shape[-2:] == (8, 10)
    assert maps["0"].shape[1] == maps["1"].shape[1] == model.backbone.out_channels
    # smaller half of the paper's scales on the fine level, larger half on the coarse one
    assert model.rpn.anchor_generator.sizes == ((32.0, 64.0), (96.0, 128.0))
    assert model.rpn.anchor_generator.num_anchors_per_location() == [2 * 3, 2 * 3]


def test_pyramid_rois_of_chromosome_size_read_the_stride_8_level() -> None:
    model = build_detector(tiny_config(fpn=True).model)
    pooler = model.roi_heads.box_roi_pool
    # level "0" (stride 8) filled with 1, level "1" (stride 16) with 2: the pooled value names the level
    maps = {"0": torch.ones(1, 4, 32, 32), "1": torch.full((1, 4, 16, 16), 2.0)}
    boxes = [torch.tensor([[0.0, 0.0, 30.0, 120.0], [10.0, 10.0, 60.0, 60.0], [0.0, 0.0, 250.0, 250.0]])]
    pooled = pooler(maps, boxes, [(256, 256)])
    assert pooled.mean(dim=(1, 2, 3)).tolist() == [1.0, 1.0, 2.0]


def test_pyramid_needs_an_even_number_of_anchor_scales() -> None:
    with pytest.raises(ValueError, match="split evenly"):
        build_detector(tiny_config(fpn=True, anchor_sizes=(32, 64, 96)).model)


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet_v2", "vgg16"])
def test_finest_stride_4_pyramid_gives_stride_4_and_8_maps(backbone: str) -> None:
    model = build_detector(tiny_config(backbone=backbone, fpn=True, fpn_finest_stride=4).model)
    maps = model.backbone(torch.rand(1, 3, 128, 160))
    assert list(maps) == ["0", "1"]
    assert maps["0"].shape[-2:] == (32, 40) and maps["1"].shape[-2:] == (16, 20)
    # chromosome-sized RoIs now read the stride-4 level
    pooler = model.roi_heads.box_roi_pool
    levels = {"0": torch.ones(1, 4, 64, 64), "1": torch.full((1, 4, 32, 32), 2.0)}
    pooled = pooler(levels, [torch.tensor([[0.0, 0.0, 30.0, 90.0], [0.0, 0.0, 150.0, 150.0]])], [(256, 256)])
    assert pooled.mean(dim=(1, 2, 3)).tolist() == [1.0, 2.0]


def test_pyramid_rejects_other_finest_strides() -> None:
    with pytest.raises(ValueError, match="finest_stride"):
        build_detector(tiny_config(fpn=True, fpn_finest_stride=2).model)


def test_weights_move_between_pyramids_keeping_the_trained_levels() -> None:
    torch.manual_seed(0)
    stride8 = build_detector(tiny_config(fpn=True).model).eval()
    stride4 = build_detector(tiny_config(fpn=True, fpn_finest_stride=4).model).eval()
    stride4.load_state_dict(adapt_state_dict(stride8.state_dict(), stride8.config, stride4))  # strict
    fpn = stride4.backbone.fpn
    assert not fpn.inner_blocks[0][0].weight.any() and not fpn.inner_blocks[0][0].bias.any()
    assert torch.equal(fpn.layer_blocks[0][0].weight, fpn.layer_blocks[1][0].weight)
    image = torch.rand(1, 3, 128, 160)
    with torch.no_grad():
        old, new = stride8.backbone(image), stride4.backbone(image)
    assert torch.equal(new["1"], old["0"])  # the trained stride-8 level is untouched
    # and back: dropping the stride-4 level restores the original weights exactly
    back = adapt_state_dict(stride4.state_dict(), stride4.config, stride8)
    original = stride8.state_dict()
    assert back.keys() == original.keys()
    assert all(torch.equal(back[k], original[k]) for k in original)


def test_a_model_built_for_trained_weights_keeps_its_runs_frozen_stages() -> None:
    config = tiny_config(backbone_weights="/nonexistent/imagenet.pth").model  # never read
    body = build_detector(config, load_backbone_weights=False).backbone.body
    assert not body.conv1.weight.requires_grad and body.layer3[0].conv1.weight.requires_grad


@pytest.mark.parametrize("fg_iou, sampled_as_positive", [(0.5, 6), (0.6, 0)])
def test_box_fg_iou_sets_which_rois_the_heads_learn_as_chromosomes(
    fg_iou: float, sampled_as_positive: int
) -> None:
    torch.manual_seed(0)
    shifted = ONE_CHROMOSOME + torch.tensor([0.0, 29.0, 0.0, 29.0])  # IoU 71/129 = 0.55
    rois, labels = sample_head_rois(shifted.repeat(6, 1), box_fg_iou=fg_iou)
    at_055 = (rois[:, 1] == 129.0).sum().item()
    assert at_055 == sampled_as_positive  # at 0.6 they are neither positives nor negatives: left out
    assert int((labels == 1).sum()) == sampled_as_positive + 1  # + the ground-truth box itself


@pytest.mark.parametrize("fg_iou, labelled_positive", [(0.5, 0), (0.4, 6)])
def test_a_lower_box_fg_iou_makes_near_misses_positives(fg_iou: float, labelled_positive: int) -> None:
    torch.manual_seed(0)
    near_miss = ONE_CHROMOSOME + torch.tensor([0.0, 37.0, 0.0, 37.0])  # IoU 63/137 = 0.46
    rois, labels = sample_head_rois(near_miss.repeat(6, 1), box_fg_iou=fg_iou)
    at_046 = rois[:, 1] == 137.0
    assert int((labels[at_046] == 1).sum()) == labelled_positive
