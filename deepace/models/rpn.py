"""The DeepACE region proposal network: torchvision's RPN with HNAS (§2.2) and Soft-NMS (§3.2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork, concat_box_prediction_layers

from deepace.models.hnas import HardNegativeAnchorSampler
from deepace.models.soft_nms import SoftNMSMethod, soft_nms


class DeepACERPN(RegionProposalNetwork):
    """`hnas=True` swaps the anchor sampler; `soft_nms_method` replaces the proposal NMS with Soft-NMS."""

    def __init__(
        self,
        *args,
        hnas: bool = True,
        soft_nms_method: SoftNMSMethod | None = "gaussian",
        soft_nms_sigma: float = 0.5,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.hnas = hnas
        if hnas:
            self.fg_bg_sampler = HardNegativeAnchorSampler(
                self.fg_bg_sampler.batch_size_per_image, self.fg_bg_sampler.positive_fraction
            )
        self.soft_nms_method = soft_nms_method
        self.soft_nms_sigma = soft_nms_sigma

    def filter_proposals(
        self,
        proposals: Tensor,
        objectness: Tensor,
        image_shapes: list[tuple[int, int]],
        num_anchors_per_level: list[int],
    ) -> tuple[list[Tensor], list[Tensor]]:
        if self.soft_nms_method is None:
            return super().filter_proposals(proposals, objectness, image_shapes, num_anchors_per_level)
        # Let torchvision clip, drop small/low boxes and rank the top pre-NMS proposals without suppressing
        # any (IoU can never exceed 1.0), then suppress softly.
        hard_threshold, post_n = self.nms_thresh, self._post_nms_top_n
        self.nms_thresh, self._post_nms_top_n = 1.0, self._pre_nms_top_n
        try:
            boxes, scores = super().filter_proposals(
                proposals, objectness, image_shapes, num_anchors_per_level
            )
        finally:
            self.nms_thresh, self._post_nms_top_n = hard_threshold, post_n
        final_boxes, final_scores = [], []
        for image_boxes, image_scores in zip(boxes, scores, strict=True):
            keep, decayed = soft_nms(
                image_boxes,
                image_scores,
                self.soft_nms_method,
                hard_threshold,
                self.soft_nms_sigma,
                max_output=self.post_nms_top_n(),
            )
            final_boxes.append(image_boxes[keep])
            final_scores.append(decayed)
        return final_boxes, final_scores

    def losses(
        self, images: ImageList, features: dict[str, Tensor], targets: list[dict[str, Tensor]]
    ) -> dict[str, Tensor]:
        """The training losses of `forward` without the proposals (whose ranking and Soft-NMS cost more than
        the losses when the RPN is trained alone on cached features, deepace.head_finetune)."""
        maps = list(features.values())
        objectness, pred_bbox_deltas = self.head(maps)
        anchors = self.anchor_generator(images, maps)
        objectness, pred_bbox_deltas = concat_box_prediction_layers(objectness, pred_bbox_deltas)
        labels, matched_gt_boxes = self.assign_targets_to_anchors(anchors, targets)
        regression_targets = self.box_coder.encode(matched_gt_boxes, anchors)
        loss_objectness, loss_rpn_box_reg = self.compute_loss(
            objectness, pred_bbox_deltas, labels, regression_targets
        )
        return {"loss_objectness": loss_objectness, "loss_rpn_box_reg": loss_rpn_box_reg}

    def compute_loss(
        self,
        objectness: Tensor,
        pred_bbox_deltas: Tensor,
        labels: list[Tensor],
        regression_targets: list[Tensor],
    ) -> tuple[Tensor, Tensor]:
        if not self.hnas:
            return super().compute_loss(objectness, pred_bbox_deltas, labels, regression_targets)
        # The sampler needs the hard-negative label (-1); the loss needs every negative labelled 0.
        pos_masks, neg_masks = self.fg_bg_sampler(labels)
        sampled_pos = torch.where(torch.cat(pos_masks))[0]
        sampled = torch.cat([sampled_pos, torch.where(torch.cat(neg_masks))[0]])
        targets = torch.cat(labels).clamp(min=0)
        box_loss = F.smooth_l1_loss(
            pred_bbox_deltas[sampled_pos],
            torch.cat(regression_targets)[sampled_pos],
            beta=1 / 9,
            reduction="sum",
        ) / max(sampled.numel(), 1)
        objectness_loss = F.binary_cross_entropy_with_logits(objectness.flatten()[sampled], targets[sampled])
        return objectness_loss, box_loss
