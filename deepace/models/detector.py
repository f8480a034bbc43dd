"""Assemble DeepACE (Fig. 2) from torchvision's Faster R-CNN parts and ours."""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import MultiScaleRoIAlign

from deepace.config import ModelConfig
from deepace.models.backbones import build_backbone
from deepace.models.cascade import CascadeRoIHeads
from deepace.models.context import CONTEXT_GRID, ContextRoIPool
from deepace.models.heads import build_box_head
from deepace.models.low_rank import adapt_low_rank
from deepace.models.pyramid import SingleMap, TwoLevelPyramid
from deepace.models.rescorer import OverlapRescorer
from deepace.models.roi_heads import DeepACERoIHeads
from deepace.models.rpn import DeepACERPN
from deepace.models.set_rescorer import SetRescorer
from deepace.models.transform import FixedScaleTransform

NUM_CLASSES = 2  # background, chromosome


class DeepACE(GeneralizedRCNN):
    """Faster R-CNN with HNAS, convolutional heads, TNRL and Soft-NMS, each switchable in ModelConfig."""

    def __init__(self, config: ModelConfig, load_backbone_weights: bool = True) -> None:
        body = build_backbone(
            config.backbone,
            config.backbone_weights,
            config.trainable_backbone_layers,
            load_weights=load_backbone_weights,
        )
        backbone = (
            TwoLevelPyramid(body, config.fpn_channels, config.fpn_finest_stride)
            if config.fpn
            else SingleMap(body)
        )
        anchors = anchor_generator(config)
        feature_levels = ["0", "1"] if config.fpn else ["0"]
        rpn = DeepACERPN(
            anchors,
            RPNHead(backbone.out_channels, anchors.num_anchors_per_location()[0]),
            fg_iou_thresh=0.7,
            bg_iou_thresh=0.3,
            batch_size_per_image=config.rpn_batch_size_per_image,
            positive_fraction=config.rpn_positive_fraction,
            pre_nms_top_n={
                "training": config.rpn_pre_nms_top_n_train,
                "testing": config.rpn_pre_nms_top_n_test,
            },
            post_nms_top_n={
                "training": config.rpn_post_nms_top_n_train,
                "testing": config.rpn_post_nms_top_n_test,
            },
            nms_thresh=config.rpn_nms_iou,
            hnas=config.hnas,
            soft_nms_method=config.rpn_soft_nms,
        )

        def new_box_head() -> tuple[nn.Module, nn.Module]:
            return build_box_head(
                config.head,
                backbone.out_channels,
                NUM_CLASSES,
                depthwise=config.conv_head_depthwise,
                context=config.roi_context is not None,
                fc6_rank=config.fc6_rank,
            )

        box_head, box_predictor = new_box_head()
        heads_class, cascade = DeepACERoIHeads, {}
        if config.cascade_ious:
            heads_class = CascadeRoIHeads
            cascade = {
                "stages": [(iou, *new_box_head()) for iou in config.cascade_ious],
                "repulsion_all_stages": config.repulsion_all_stages,
            }
        pooler: nn.Module = MultiScaleRoIAlign(featmap_names=feature_levels, output_size=7, sampling_ratio=2)
        if config.roi_context is not None:
            context_pooler = MultiScaleRoIAlign(
                featmap_names=feature_levels, output_size=CONTEXT_GRID, sampling_ratio=4
            )
            pooler = ContextRoIPool(pooler, context_pooler, config.roi_context)
        roi_heads = heads_class(
            pooler,
            box_head,
            box_predictor,
            fg_iou_thresh=config.box_fg_iou,
            bg_iou_thresh=min(0.5, config.box_fg_iou),  # below 0.5 the bar moves both: no gap left out
            batch_size_per_image=config.box_batch_size_per_image,
            positive_fraction=config.box_positive_fraction,
            bbox_reg_weights=None,
            score_thresh=config.box_score_thresh,
            nms_thresh=config.box_nms_iou,
            detections_per_img=config.detections_per_img,
            repulsion=config.repulsion,
            repulsion_weight=config.repulsion_weight,
            smooth_ln_sigma=config.smooth_ln_sigma,
            soft_nms_method=config.box_soft_nms,
            soft_nms_iou=config.box_nms_iou,
            soft_nms_sigma=config.box_soft_nms_sigma,
            hard_negative_iou=config.box_hard_negative_iou,
            rescorer=build_rescorer(config) if config.rescorer else None,
            candidate_iou=config.rescorer_candidate_iou,
            candidate_floor=config.rescorer_score_floor,
            candidate_proposal_iou=config.rescorer_proposal_iou,
            karyotype_weight=config.karyotype_weight,
            **cascade,
        )
        super().__init__(backbone, rpn, roi_heads, FixedScaleTransform(config.input_scale))
        self.config = config


def build_rescorer(config: ModelConfig) -> OverlapRescorer | SetRescorer:
    stages = 1 + len(config.cascade_ious)
    if config.rescorer_kind == "set":
        if config.rescorer_appearance or config.rescorer_proposal_iou is not None:
            raise ValueError(
                "the set rescorer reads neither RoI features nor box origins: rescorer_appearance must be "
                "false and rescorer_proposal_iou None"
            )
        return SetRescorer(stages)
    if config.rescorer_kind != "greedy":
        raise ValueError(f"unknown rescorer_kind {config.rescorer_kind!r} (greedy | set)")
    if config.rescorer_appearance and config.rescorer_proposal_iou is not None:
        raise ValueError(
            "moved proposals carry no RoI features of their own: rescorer_appearance must be false"
        )
    return OverlapRescorer(
        stages, appearance=config.rescorer_appearance, origin=config.rescorer_proposal_iou is not None
    )


def anchor_generator(config: ModelConfig) -> AnchorGenerator:
    """The paper's 4 scales × 9 ratios on the one stride-16 map; with the pyramid, the smaller half of the
    scales on the stride-8 level and the larger half on the stride-16 level (the RPN head is shared, so
    both levels need the same number of anchors per cell)."""
    # Anchors are given in original-image pixels; the network sees images resized by input_scale.
    sizes = tuple(sorted(s * config.input_scale for s in config.anchor_sizes))
    ratios = tuple(config.aspect_ratios)
    if not config.fpn:
        return AnchorGenerator(sizes=(sizes,), aspect_ratios=(ratios,))
    if len(sizes) % 2:
        raise ValueError(f"with model.fpn the anchor sizes must split evenly over 2 levels, got {sizes}")
    half = len(sizes) // 2
    return AnchorGenerator(sizes=(sizes[:half], sizes[half:]), aspect_ratios=(ratios, ratios))


def build_detector(config: ModelConfig, load_backbone_weights: bool = True) -> DeepACE:
    return DeepACE(config, load_backbone_weights)


_PYRAMID_KEY = re.compile(r"^(backbone\.fpn\.(?:inner|layer)_blocks\.)(\d+)(\..*)$")


def adapt_state_dict(state: dict[str, Tensor], source: ModelConfig, target: DeepACE) -> dict[str, Tensor]:
    """`source`'s weights for a `target` model whose pyramid starts one level finer or coarser, whose
    RoI heads have more or fewer cascade stages, that reads RoI context where the source does not (or
    the reverse), or whose heads' first layers are factorised where the source's are not (or the reverse,
    or at another rank); everything else fits as it is."""
    fresh = target.state_dict()
    adapted = adapt_low_rank(_adapt_pyramid(dict(state), source, target.config, fresh), fresh)
    return _adapt_cascade(_adapt_karyotype(_adapt_context(adapted, fresh), fresh), fresh)


def _adapt_pyramid(
    state: dict[str, Tensor], source: ModelConfig, target: ModelConfig, fresh: dict[str, Tensor]
) -> dict[str, Tensor]:
    """The pyramid's lateral and output convolutions are indexed finest first, so adding the stride-4 level
    shifts the stride-8 and stride-16 ones up by one (removing it shifts them down). The new stride-4 level
    starts as (nearly) the trained stride-8 one upsampled: its lateral convolution is zero, so its top-down
    input is the stride-8 map, and its output convolution is a copy of the stride-8 one. Fine-tuning then
    starts from the trained model's behaviour instead of from random RoI features.
    """
    finer = target.fpn_finest_stride
    if not (source.fpn and target.fpn) or source.fpn_finest_stride == finer:
        return state
    shift = 1 if finer < source.fpn_finest_stride else -1
    adapted = {}
    for key, value in state.items():
        match = _PYRAMID_KEY.match(key)
        if match is None:
            adapted[key] = value
            continue
        index = int(match.group(2)) + shift
        if index >= 0:
            adapted[f"{match.group(1)}{index}{match.group(3)}"] = value
    if shift == 1:
        for key in fresh:
            if key.startswith("backbone.fpn.inner_blocks.0."):
                adapted[key] = torch.zeros_like(fresh[key])
            elif key.startswith("backbone.fpn.layer_blocks.0."):
                adapted[key] = adapted[key.replace("layer_blocks.0.", "layer_blocks.1.")].clone()
    return adapted


_STAGE_KEY = re.compile(r"^roi_heads\.stages\.\d+\.(.*)$")


def _adapt_cascade(state: dict[str, Tensor], fresh: dict[str, Tensor]) -> dict[str, Tensor]:
    """A cascade stage the source lacks starts as a copy of the first stage's head with a zero box
    regression: it scores its boxes as the first stage does and leaves them where they are, so the
    fine-tune starts from the trained model's detections. Stages the target lacks are dropped."""
    adapted = {k: v for k, v in state.items() if not _STAGE_KEY.match(k) or k in fresh}
    for key in fresh:
        match = _STAGE_KEY.match(key)
        if match is None or key in adapted:
            continue
        if match.group(1).startswith("box_predictor.bbox_pred."):
            adapted[key] = torch.zeros_like(fresh[key])
        else:
            adapted[key] = state[f"roi_heads.{match.group(1)}"].clone()
    return adapted


def _adapt_optional(
    state: dict[str, Tensor], fresh: dict[str, Tensor], part: str, start: Callable[[Tensor], Tensor]
) -> dict[str, Tensor]:
    """An optional part of the heads (its keys contain `part`): where the source lacks it, it starts as
    `start(the target's freshly built tensor)`; where the target lacks it, it is dropped."""
    adapted = {k: v for k, v in state.items() if part not in k or k in fresh}
    for key in fresh:
        if part in key and key not in adapted:
            adapted[key] = start(fresh[key])
    return adapted


def _adapt_karyotype(state: dict[str, Tensor], fresh: dict[str, Tensor]) -> dict[str, Tensor]:
    """Karyotype classifiers (model.karyotype_weight) the source lacks start as the target built them."""
    return _adapt_optional(state, fresh, ".karyotype_classifier.", torch.clone)


def _adapt_context(state: dict[str, Tensor], fresh: dict[str, Tensor]) -> dict[str, Tensor]:
    """Context maps the source lacks start at zero (the heads predict as the source did)."""
    return _adapt_optional(state, fresh, ".fc6_context.", torch.zeros_like)
