"""Further Fast R-CNN stages after the first, as in Cascade R-CNN (Cai & Vasconcelos, CVPR 2018).

Not in the paper. Our error analysis (BENCHMARKS.md, "Where the errors are") finds most false boxes
overlapping a chromosome only partly (IoU 0.1–0.5: on one arm, or across two touching ones) and nearly
every miss touching a neighbour: scoring and localisation among overlapping chromosomes. Each further
stage reads RoI features at the previous stage's refined boxes, learns with a stricter foreground IoU
(e.g. 0.6), so its score follows how well a box fits one chromosome, and refines the boxes again. At
inference the stages' class logits are averaged and the last stage's boxes go through the first stage's
post-processing (NMS + Soft-NMS, §3.2) once. As in Detectron2's cascade, the further stages' losses reach
the shared backbone scaled by 1 / (number of stages), so the extra heads do not multiply the backbone's
learning rate.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss

from deepace.models.roi_heads import (
    DeepACERoIHeads,
    karyotype_loss,
    new_karyotype_classifier,
    predict,
    refine,
    repulsion_loss,
    roi_features,
)

__all__ = ["CascadeRoIHeads", "predict", "refine", "stage_reg_weights"]

# Cascade R-CNN's regression normalisation per stage: 10/5, then 20/10, 30/15 (later stages' deltas are
# smaller, so they are scaled up to keep the regression loss in range).
FIRST_STAGE_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def stage_reg_weights(stage: int) -> tuple[float, float, float, float]:
    """Box-coder weights of stage `stage` (1 = the first, torchvision's default)."""
    x, y, w, h = FIRST_STAGE_REG_WEIGHTS
    return (x * stage, y * stage, w * stage, h * stage)


class CascadeRoIHeads(DeepACERoIHeads):
    """DeepACE's RoI heads (stage 1, with its repulsion loss and post-processing) plus further stages.

    `stages` gives, per further stage, its foreground IoU and its (box_head, box_predictor) pair; RoIs
    below that IoU are its negatives (no ignored band, as in Cascade R-CNN).
    """

    def __init__(
        self,
        *args,
        stages: Sequence[tuple[float, nn.Module, nn.Module]],
        repulsion_all_stages: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        # The repulsion term (§2.3) on the further stages' boxes too, not only the first's: each stage
        # regresses its boxes again, and among touching chromosomes a later stage can pull a box that the
        # first placed right onto the neighbour (BENCHMARKS.md, "Session 15: where the shipped model loses
        # whole cells").
        self.repulsion_all_stages = repulsion_all_stages
        if not stages:
            raise ValueError("a cascade needs at least one further stage")
        self.stages = nn.ModuleList(
            RoIHeads(
                self.box_roi_pool,
                box_head,
                box_predictor,
                fg_iou_thresh=iou,
                bg_iou_thresh=iou,
                batch_size_per_image=self.fg_bg_sampler.batch_size_per_image,
                positive_fraction=self.fg_bg_sampler.positive_fraction,
                bbox_reg_weights=stage_reg_weights(n),
                score_thresh=self.score_thresh,
                nms_thresh=self.nms_thresh,
                detections_per_img=self.detections_per_img,
            )
            for n, (iou, box_head, box_predictor) in enumerate(stages, start=2)
        )
        for stage in self.stages:
            stage.karyotype_classifier = (
                new_karyotype_classifier(stage) if self.karyotype_classifier is not None else None
            )

    def forward(self, features, proposals, image_shapes, targets=None):  # noqa: ANN001, ANN201
        if not self.training and self.rescorer is None:
            return self.cascade_detections(features, proposals, image_shapes), {}
        return super().forward(features, proposals, image_shapes, targets)

    def sampled_losses(
        self,
        features: dict[str, Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]],
        box_features: Tensor,
        box_regression: Tensor,
    ) -> dict[str, Tensor]:
        """The first stage's losses, then each further stage's on the previous stage's refined boxes."""
        losses = super().sampled_losses(features, image_shapes, targets, box_features, box_regression)
        assert self._sampled is not None
        boxes = refine(self, box_regression, self._sampled[0], image_shapes)
        gt_boxes = [t["boxes"] for t in targets]
        for n, stage in enumerate(self.stages, start=2):
            rois, matched_idxs, labels, regression_targets = stage.select_training_samples(boxes, targets)
            embeddings = roi_features(
                stage, features, rois, image_shapes, backbone_gradient=1.0 / (1 + len(self.stages))
            )
            class_logits, box_regression = stage.box_predictor(embeddings)
            loss_classifier, loss_box_reg = fastrcnn_loss(
                class_logits, box_regression, labels, regression_targets
            )
            losses[f"loss_classifier_stage{n}"] = loss_classifier
            losses[f"loss_box_reg_stage{n}"] = loss_box_reg
            if self.repulsion_all_stages and self.repulsion != "none":
                repulsion = repulsion_loss(
                    stage,
                    self.repulsion,
                    rois,
                    matched_idxs,
                    labels,
                    gt_boxes,
                    box_regression,
                    self.smooth_ln_sigma,
                )
                losses[f"loss_repulsion_stage{n}"] = self.repulsion_weight * repulsion
            if stage.karyotype_classifier is not None:
                loss = karyotype_loss(stage.karyotype_classifier, embeddings, matched_idxs, labels, targets)
                losses[f"loss_karyotype_stage{n}"] = self.karyotype_weight * loss
            boxes = refine(stage, box_regression, rois, image_shapes)
        return losses

    def stage_outputs(
        self, features: dict[str, Tensor], proposals: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> tuple[list[Tensor], list[Tensor], Tensor]:
        """Each image's boxes as the last stage leaves them, every stage's class logits, and the last
        stage's RoI features."""
        boxes, stage_logits = proposals, []
        for heads in (self, *self.stages):
            embeddings = roi_features(heads, features, boxes, image_shapes)
            class_logits, box_regression = heads.box_predictor(embeddings)
            stage_logits.append(class_logits)
            boxes = refine(heads, box_regression, boxes, image_shapes)
        return boxes, stage_logits, embeddings

    def cascade_detections(
        self, features: dict[str, Tensor], proposals: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> list[dict[str, Tensor]]:
        boxes, stage_logits, _ = self.stage_outputs(features, proposals, image_shapes)
        class_logits = torch.stack(stage_logits).mean(dim=0)
        # The boxes are final already: a zero regression decodes each box to itself.
        no_regression = class_logits.new_zeros(len(class_logits), 4 * class_logits.shape[1])
        final_boxes, scores, labels = self.postprocess_detections(
            class_logits, no_regression, boxes, image_shapes
        )
        return [
            {"boxes": b, "scores": s, "labels": lab}
            for b, s, lab in zip(final_boxes, scores, labels, strict=True)
        ]
