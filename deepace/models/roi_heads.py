"""DeepACE's Fast R-CNN stage: torchvision's RoIHeads plus the repulsion loss (§2.3) and NMS + Soft-NMS
post-processing (§3.2)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import box_iou

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
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
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
        if self.training and self.repulsion != "none":
            losses["loss_repulsion"] = self.repulsion_weight * self.repulsion_loss(captured["box_regression"])
        self._sampled = None
        return result, losses

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
