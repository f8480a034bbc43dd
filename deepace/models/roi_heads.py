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
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection._utils import Matcher
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import box_iou, clip_boxes_to_image

from deepace.data.karyotype import NUM_KARYOTYPE_CLASSES
from deepace.models.hnas import HardNegativeAnchorSampler
from deepace.models.repulsion import RepulsionKind, paired_iou, repulsion_terms
from deepace.models.rescorer import Candidates, OverlapRescorer, select_candidates
from deepace.models.set_rescorer import SetRescorer
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
        rescorer: OverlapRescorer | SetRescorer | None = None,
        candidate_iou: float = 0.8,
        candidate_floor: float = 0.01,
        candidate_proposal_iou: float | None = None,
        karyotype_weight: float = 0.0,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.karyotype_weight = karyotype_weight
        self.karyotype_classifier = new_karyotype_classifier(self) if karyotype_weight > 0 else None
        # With a rescorer, inference replaces NMS + Soft-NMS by learned overlap rescoring (rescorer.py).
        self.rescorer = rescorer
        self.candidate_iou = candidate_iou
        self.candidate_floor = candidate_floor
        self.candidate_proposal_iou = candidate_proposal_iou
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
        if not self.training and self.rescorer is not None:
            return self.rescored_detections(features, proposals, image_shapes), {}
        captured: dict[str, Tensor] = {}

        def keep_predictor_io(_module, inputs, outputs) -> None:  # noqa: ANN001
            captured["box_features"], captured["box_regression"] = inputs[0], outputs[1]

        handle = self.box_predictor.register_forward_hook(keep_predictor_io)
        try:
            result, losses = super().forward(features, proposals, image_shapes, targets)
        finally:
            handle.remove()
        if self.training:
            losses |= self.sampled_losses(
                features, image_shapes, targets, captured["box_features"], captured["box_regression"]
            )
        self._sampled = None
        return result, losses

    def sampled_losses(
        self,
        features: dict[str, Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]],
        box_features: Tensor,
        box_regression: Tensor,
    ) -> dict[str, Tensor]:
        """Losses beyond torchvision's, from this step's sampled RoIs (`self._sampled`), the head's features
        and box regression for them: the repulsion term (§2.3) and the karyotype term."""
        losses = {}
        if self.repulsion != "none":
            losses["loss_repulsion"] = self.repulsion_weight * self.repulsion_loss(box_regression)
        if self.karyotype_classifier is not None:
            assert self._sampled is not None
            _, matched_idxs, labels, _ = self._sampled
            loss = karyotype_loss(self.karyotype_classifier, box_features, matched_idxs, labels, targets)
            losses["loss_karyotype"] = self.karyotype_weight * loss
        return losses

    def repulsion_loss(self, box_regression: Tensor) -> Tensor:
        """This step's repulsion term for the sampled RoIs (`self._sampled`)."""
        assert self._sampled is not None
        return repulsion_loss(self, self.repulsion, *self._sampled, box_regression, self.smooth_ln_sigma)

    def stage_outputs(
        self, features: dict[str, Tensor], proposals: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> tuple[list[Tensor], list[Tensor], Tensor]:
        """Each image's refined boxes; each head stage's class logits for them and the last stage's RoI
        features (images concatenated)."""
        embeddings = roi_features(self, features, proposals, image_shapes)
        class_logits, box_regression = self.box_predictor(embeddings)
        return refine(self, box_regression, proposals, image_shapes), [class_logits], embeddings

    def candidates(
        self, features: dict[str, Tensor], proposals: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> list[Candidates]:
        """Per image, the rescorer's candidates: boxes above the score floor after a loose NMS; with
        `candidate_proposal_iou`, also the proposals the stages moved away (`with_moved_proposals`)."""
        boxes, stage_logits, embeddings = self.stage_outputs(features, proposals, image_shapes)
        sizes = [len(b) for b in boxes]
        per_stage = [logits.split(sizes) for logits in stage_logits]
        appearance = self.rescorer is not None and self.rescorer.appearance
        per_image = embeddings.flatten(1).split(sizes) if appearance else [None] * len(boxes)
        found = []
        for i, image_boxes in enumerate(boxes):
            logits, origin = [stage[i] for stage in per_stage], None
            if self.candidate_proposal_iou is not None:
                image_boxes, logits, origin = with_moved_proposals(
                    image_boxes, proposals[i], logits, self.candidate_proposal_iou
                )
            found.append(
                select_candidates(
                    image_boxes, logits, self.candidate_floor, self.candidate_iou, per_image[i], origin
                )
            )
        return found

    def rescored_detections(
        self, features: dict[str, Tensor], proposals: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> list[dict[str, Tensor]]:
        assert self.rescorer is not None
        detections = []
        for candidates in self.candidates(features, proposals, image_shapes):
            probabilities = self.rescorer(candidates)
            keep = torch.where(probabilities >= self.score_thresh)[0]
            keep = keep[probabilities[keep].argsort(descending=True)][: self.detections_per_img]
            detections.append(
                {
                    "boxes": candidates.boxes[keep],
                    "scores": probabilities[keep],
                    "labels": torch.ones(len(keep), dtype=torch.int64, device=keep.device),
                }
            )
        return detections

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


def with_moved_proposals(
    boxes: Tensor, proposals: Tensor, stage_logits: list[Tensor], below_iou: float
) -> tuple[Tensor, list[Tensor], Tensor]:
    """The refined `boxes` followed by each proposal they moved away from (its own refined box overlaps
    it at IoU < `below_iou`), every stage's logits for those taken from the first stage (the only one that
    read the proposal itself), and each row's origin: (1 for a proposal, IoU of proposal and refined
    box)."""
    own = paired_iou(boxes, proposals)
    moved = own < below_iou
    logits = [torch.cat([stage, stage_logits[0][moved]]) for stage in stage_logits]
    kind = torch.cat([torch.zeros_like(own), torch.ones_like(own[moved])])
    origin = torch.stack([kind, torch.cat([own, own[moved]])], dim=1)
    return torch.cat([boxes, proposals[moved]]), logits, origin


def new_karyotype_classifier(heads: RoIHeads) -> nn.Linear:
    """A linear map from a stage's fc-head features to the chromosome classes (0 unknown, 1…24)."""
    if not isinstance(heads.box_head, TwoMLPHead):
        raise ValueError("model.karyotype_weight needs fc heads (model.head='fc')")
    return nn.Linear(heads.box_head.fc7.out_features, NUM_KARYOTYPE_CLASSES + 1)


def karyotype_loss(
    classifier: nn.Module,
    box_features: Tensor,
    matched_idxs: list[Tensor],
    labels: list[Tensor],
    targets: list[dict[str, Tensor]],
) -> Tensor:
    """Cross-entropy of the chromosome class over one stage's positive RoIs (`labels` > 0) whose matched
    ground truth has a known class (targets' "chromosome_class" > 0); zero when there are none."""
    classes = []
    for matched, target in zip(matched_idxs, targets, strict=True):
        known = target.get("chromosome_class")
        if known is None or known.numel() == 0:
            classes.append(torch.zeros_like(matched))
        else:
            classes.append(known[matched.clamp(min=0)])
    chromosome_class = torch.cat(classes)
    rows = (torch.cat(labels) > 0) & (chromosome_class > 0)
    if not bool(rows.any()):
        return box_features.sum() * 0.0
    return F.cross_entropy(classifier(box_features[rows]), chromosome_class[rows])


def repulsion_loss(
    heads: RoIHeads,
    kind: RepulsionKind,
    proposals: list[Tensor],
    matched_idxs: list[Tensor],
    labels: list[Tensor],
    gt_boxes: list[Tensor],
    box_regression: Tensor,
    smooth_ln_sigma: float = 1.0,
) -> Tensor:
    """Mean repulsion (eq. 2 / eq. 3) over the positive RoIs |P+| of one head stage: each positive RoI's
    box as `heads` regresses it, pushed off R, the ground truth it overlaps most after its own target G;
    RoIs with no second overlapping ground truth contribute 0."""
    decoded = heads.box_coder.decode(box_regression, proposals)  # (N, num_classes, 4)
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
        ious[torch.arange(positive.numel(), device=ious.device), target_idx] = -1.0
        best_iou, repulsion_idx = ious.max(dim=1)
        has_neighbour = best_iou > 0
        if not bool(has_neighbour.any()):
            continue
        rows = positive[has_neighbour]
        terms.append(
            repulsion_terms(
                kind,
                pred[rows, lab[rows]],
                gts[target_idx[has_neighbour]],
                gts[repulsion_idx[has_neighbour]],
                smooth_ln_sigma,
            )
        )
    if not terms:
        return box_regression.sum() * 0.0
    return torch.cat(terms).sum() / max(n_positive, 1)


def predict(
    heads: RoIHeads,
    features: dict[str, Tensor],
    boxes: list[Tensor],
    image_shapes: list[tuple[int, int]],
    backbone_gradient: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """One stage's class logits and box regression for `boxes`; the gradient its losses send back into
    the shared features is scaled by `backbone_gradient` (the value is unchanged)."""
    return heads.box_predictor(roi_features(heads, features, boxes, image_shapes, backbone_gradient))


def roi_features(
    heads: RoIHeads,
    features: dict[str, Tensor],
    boxes: list[Tensor],
    image_shapes: list[tuple[int, int]],
    backbone_gradient: float = 1.0,
) -> Tensor:
    """One stage's box-head features of `boxes` (what its predictor reads)."""
    pooled = heads.box_roi_pool(features, boxes, image_shapes)
    if backbone_gradient != 1.0:
        pooled = pooled * backbone_gradient + pooled.detach() * (1.0 - backbone_gradient)
    return heads.box_head(pooled)


def refine(
    heads: RoIHeads, box_regression: Tensor, boxes: list[Tensor], image_shapes: list[tuple[int, int]]
) -> list[Tensor]:
    """`boxes` moved by one stage's regression for the chromosome class (label 1), clipped to the image
    and detached: the next stage learns from where these boxes are, not how they got there."""
    decoded = heads.box_coder.decode(box_regression, boxes)[:, 1].detach()
    return [
        clip_boxes_to_image(b, shape)
        for b, shape in zip(decoded.split([len(b) for b in boxes]), image_shapes, strict=True)
    ]
