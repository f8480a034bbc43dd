"""DeepACE's Fast R-CNN stage: torchvision's RoIHeads plus the repulsion loss (§2.3) and NMS + Soft-NMS
post-processing (§3.2), and optionally hard-negative RoI sampling (HNAS, §2.2, carried over to this stage).

With ``hard_negative_iou`` set (e.g. 0.1, Fast R-CNN's original lower bound for background RoIs), the
proposals a head trains on are drawn like the RPN's anchors under HNAS: the positive fraction first, then
half of the rest from "hard" negatives (IoU with every chromosome in [hard_negative_iou, fg_iou)), e.g. a
box straddling two touching chromosomes, and the rest from easy ones. torchvision samples negatives
uniformly, and in a spread most proposals below IoU 0.5 are easy ones.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.models.detection._utils import Matcher
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import box_iou

from deepace.models.hnas import HardNegativeAnchorSampler
from deepace.models.repulsion import RepulsionKind, repulsion_terms
from deepace.models.soft_nms import SoftNMSMethod, soft_nms


class DeepACERoIHeads(RoIHeads):
    def __init__(
        self,
        *args,
        repulsion: RepulsionKind = "tnrl",
        repulsion_weight: float = 10.0,
        smooth_ln_sigma: float = 1.0,
        soft_nms_method: SoftNMSMethod | None = "gaussian",
        soft_nms_iou: float = 0.5,
        soft_nms_sigma: float = 0.5,
        hard_negative_iou: float | None = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        if hard_negative_iou is not None:
            # Proposals between the thresholds get torchvision's "ignore" label -1, which the HNAS sampler
            # reads as "hard negative"; select_training_samples turns them back into background (0).
            fg_iou = self.proposal_matcher.high_threshold
            if not 0.0 < hard_negative_iou < fg_iou:
                raise ValueError(f"hard_negative_iou must be in (0, {fg_iou}), got {hard_negative_iou}")
            self.proposal_matcher = Matcher(fg_iou, hard_negative_iou, allow_low_quality_matches=False)
            self.fg_bg_sampler = HardNegativeAnchorSampler(
                self.fg_bg_sampler.batch_size_per_image, self.fg_bg_sampler.positive_fraction
            )
        if repulsion not in ("none", "repgt", "tnrl"):
            raise ValueError(f"unknown repulsion {repulsion!r} (none | repgt | tnrl)")
        self.repulsion = repulsion
        self.repulsion_weight = repulsion_weight
        self.smooth_ln_sigma = smooth_ln_sigma
        self.soft_nms_method = soft_nms_method
        self.soft_nms_iou = soft_nms_iou
        self.soft_nms_sigma = soft_nms_sigma
        self._sampled: tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]] | None = None

    def select_training_samples(self, proposals, targets):  # noqa: ANN001, ANN201 (torchvision's signature)
        proposals, matched_idxs, labels, regression_targets = super().select_training_samples(
            proposals, targets
        )
        labels = [lab.clamp(min=0) for lab in labels]  # sampled hard negatives (-1) are background
        self._sampled = (proposals, matched_idxs, labels, [t["boxes"] for t in targets])
        return proposals, matched_idxs, labels, regression_targets

    def forward(self, features, proposals, image_shapes, targets=None):  # noqa: ANN001, ANN201
        captured: dict[str, Tensor] = {}

        def keep_regression(_module, _inputs, outputs) -> None:  # noqa: ANN001
            captured["box_regression"] = outputs[1]

        handle = self.box_predictor.register_forward_hook(keep_regression)
        try:
            result, losses = super().forward(features, proposals, image_shapes, targets)
        finally:
            handle.remove()
        if self.training:
            losses |= self.sampled_losses(features, image_shapes, targets, captured["box_regression"])
        self._sampled = None
        return result, losses

    def sampled_losses(self, features, image_shapes, targets, box_regression: Tensor) -> dict[str, Tensor]:  # noqa: ANN001
        """Losses beyond torchvision's, from this step's sampled RoIs (`self._sampled`) and the head's box
        regression for them: the repulsion term (§2.3)."""
        if self.repulsion == "none":
            return {}
        return {"loss_repulsion": self.repulsion_weight * self.repulsion_loss(box_regression)}

    def repulsion_loss(self, box_regression: Tensor) -> Tensor:
        """Mean repulsion over the positive proposals |P+| (eq. 2 / eq. 3); proposals with no second
        overlapping ground truth contribute 0."""
        assert self._sampled is not None
        proposals, matched_idxs, labels, gt_boxes = self._sampled
        decoded = self.box_coder.decode(box_regression, proposals)  # (N, num_classes, 4)
        decoded = decoded.split([len(p) for p in proposals])
        terms, n_positive = [], 0
        for props, matched, lab, gts, pred in zip(
            proposals, matched_idxs, labels, gt_boxes, decoded, strict=True
        ):
            positive = torch.where(lab > 0)[0]
            n_positive += positive.numel()
            if positive.numel() == 0 or gts.shape[0] < 2:
                continue
            target_idx = matched[positive]
            ious = box_iou(props[positive], gts)
            ious[torch.arange(positive.numel()), target_idx] = -1.0
            best_iou, repulsion_idx = ious.max(dim=1)
            has_neighbour = best_iou > 0
            if not bool(has_neighbour.any()):
                continue
            rows = positive[has_neighbour]
            pred_boxes = pred[rows, lab[rows]]
            terms.append(
                repulsion_terms(
                    self.repulsion,
                    pred_boxes,
                    gts[target_idx[has_neighbour]],
                    gts[repulsion_idx[has_neighbour]],
                    self.smooth_ln_sigma,
                )
            )
        if not terms:
            return box_regression.sum() * 0.0
        return torch.cat(terms).sum() / max(n_positive, 1)

    def postprocess_detections(self, class_logits, box_regression, proposals, image_shapes):  # noqa: ANN001, ANN201
        boxes, scores, labels = super().postprocess_detections(
            class_logits, box_regression, proposals, image_shapes
        )
        if self.soft_nms_method is None:
            return boxes, scores, labels
        out_boxes, out_scores, out_labels = [], [], []
        for b, s, lab in zip(boxes, scores, labels, strict=True):
            keep, decayed = soft_nms(
                b,
                s,
                self.soft_nms_method,
                self.soft_nms_iou,
                self.soft_nms_sigma,
                score_threshold=self.score_thresh,
            )
            out_boxes.append(b[keep])
            out_scores.append(decayed)
            out_labels.append(lab[keep])
        return out_boxes, out_scores, out_labels
