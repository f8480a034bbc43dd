"""Assemble DeepACE (Fig. 2) from torchvision's Faster R-CNN parts and ours."""

from __future__ import annotations

from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import MultiScaleRoIAlign

from deepace.config import ModelConfig
from deepace.models.backbones import build_backbone
from deepace.models.heads import build_box_head
from deepace.models.pyramid import SingleMap, TwoLevelPyramid
from deepace.models.roi_heads import DeepACERoIHeads
from deepace.models.rpn import DeepACERPN
from deepace.models.transform import FixedScaleTransform

NUM_CLASSES = 2  # background, chromosome


class DeepACE(GeneralizedRCNN):
    """Faster R-CNN with HNAS, convolutional heads, TNRL and Soft-NMS, each switchable in ModelConfig."""

    def __init__(self, config: ModelConfig, load_backbone_weights: bool = True) -> None:
        weights = config.backbone_weights if load_backbone_weights else None
        body = build_backbone(config.backbone, weights, config.trainable_backbone_layers)
        backbone = TwoLevelPyramid(body, config.fpn_channels) if config.fpn else SingleMap(body)
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
        box_head, box_predictor = build_box_head(
            config.head, backbone.out_channels, NUM_CLASSES, depthwise=config.conv_head_depthwise
        )
        roi_heads = DeepACERoIHeads(
            MultiScaleRoIAlign(featmap_names=feature_levels, output_size=7, sampling_ratio=2),
            box_head,
            box_predictor,
            fg_iou_thresh=0.5,
            bg_iou_thresh=0.5,
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
        )
        super().__init__(backbone, rpn, roi_heads, FixedScaleTransform(config.input_scale))
        self.config = config


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
