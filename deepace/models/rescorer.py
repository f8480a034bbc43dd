"""Learned overlap rescoring (not in the paper): which of several overlapping detections are separate
chromosomes, and which are second boxes on a chromosome already found.

Why (BENCHMARKS.md, "What suppression allows"): in 35.5% of G-band cells two chromosomes cross so that
their boxes overlap at IoU > 0.5. The paper's NMS at 0.5 (§3.2) keeps one of the two, so even a perfect
detector would count only 64.5% of those cells exactly; a looser NMS lets second boxes on one chromosome
through instead, because a detector's score says how much a box looks like a chromosome, not whether a
higher-scored box covers that chromosome already. Learned NMS (Hosang et al., CVPR 2017) answers the
second question from the detections themselves; this is a small version of it that trains in a minute on
a CPU: a multilayer perceptron over hand-made features of each candidate box and of its overlaps with the
boxes accepted before it, applied greedily in falling detector score (as NMS is).

The candidates are the detector's boxes after a loose NMS (`candidate_iou`, 0.8) that only merges
near-identical boxes (a perfect detector through NMS at 0.7 / 0.9 keeps 88.5% / 94% of G-band validation
cells exact). Training is teacher-forced: a candidate's "accepted before it" boxes are the higher-scored
candidates that first claim a chromosome (`deepace.rescoring.match_labels`); at inference they are the
higher-scored candidates the rescorer kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.ops import box_area, box_iou, nms, remove_small_boxes

# A candidate counts as accepted (for the later candidates' features) when its rescored probability is at
# least this; the counting threshold is calibrated separately on the rescored scores.
ACCEPT_PROBABILITY = 0.5


@dataclass
class Candidates:
    """One image's candidate detections, by falling detector score."""

    boxes: Tensor  # (N, 4)
    stage_scores: Tensor  # (N, S): each head stage's chromosome probability
    scores: Tensor  # (N,): the detector's score (softmax of the stages' mean logits)
    # (N, D): the last head stage's RoI feature of each box, when the rescorer compares appearances
    embeddings: Tensor | None = None
    # (N, 2), with model.rescorer_proposal_iou: 1 for a proposal the head stages moved away (0 for a
    # refined box), and the IoU between the proposal and its refined box (roi_heads.with_moved_proposals)
    origin: Tensor | None = None


def select_candidates(
    boxes: Tensor,
    stage_logits: Sequence[Tensor],
    score_floor: float,
    candidate_iou: float,
    embeddings: Tensor | None = None,
    origin: Tensor | None = None,
) -> Candidates:
    """Boxes scoring at least `score_floor`, near-identical ones merged by NMS at `candidate_iou`, by
    falling score. `stage_logits`: each stage's (N, 2) class logits for `boxes`;
    `embeddings`: their (N, D) RoI features, and `origin` (Candidates.origin), kept for the same boxes."""
    scores = torch.stack(list(stage_logits)).mean(dim=0).softmax(dim=-1)[:, 1]
    stage_scores = torch.stack([logits.softmax(dim=-1)[:, 1] for logits in stage_logits], dim=1)
    keep = torch.where(scores >= score_floor)[0]
    keep = keep[remove_small_boxes(boxes[keep], 1e-2)]
    keep = keep[nms(boxes[keep], scores[keep], candidate_iou)]
    chosen = None if embeddings is None else embeddings[keep].half()  # fp16: a cosine needs no more
    kept_origin = None if origin is None else origin[keep]
    return Candidates(boxes[keep], stage_scores[keep], scores[keep], chosen, kept_origin)


def pair_geometry(candidates: Candidates) -> tuple[Tensor, ...]:
    """N×N matrices: IoU, share of the row box covered by the column box, share of the column box covered
    by the row box, and, with embeddings, the cosine similarity of the two boxes' RoI features (a second
    box on one chromosome looks like the first; a crossing chromosome's box shows another pattern)."""
    boxes = candidates.boxes
    area = box_area(boxes).clamp(min=1e-6)
    lt = torch.max(boxes[:, None, :2], boxes[None, :, :2])
    rb = torch.min(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    matrices = (box_iou(boxes, boxes), inter / area[:, None], inter / area[None, :])
    if candidates.embeddings is None:
        return matrices
    unit = torch.nn.functional.normalize(candidates.embeddings.float(), dim=1)
    return (*matrices, unit @ unit.T)


def higher_scored(n: int, device: torch.device | None = None) -> Tensor:
    """N×N bool: [i, j] is True when candidate j comes before candidate i."""
    return torch.ones(n, n, dtype=torch.bool, device=device).tril(-1)


def box_features(candidates: Candidates, geometry: tuple[Tensor, ...]) -> Tensor:
    """The features that do not depend on which candidates were accepted: per box, the detector's and the
    stages' scores, size and elongation relative to the cell's confident boxes; and the overlaps with every
    higher-scored candidate (`overlap_features`)."""
    boxes, scores = candidates.boxes, candidates.scores
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1e-3)
    side = wh.prod(dim=1).sqrt()
    confident = scores >= 0.5
    reference = side[confident].median() if bool(confident.any()) else side.median()
    columns = [
        scores[:, None],
        candidates.stage_scores,
        torch.log(wh / reference),
        torch.log(wh.max(dim=1).values / wh.min(dim=1).values)[:, None],
        overlap_features(higher_scored(len(boxes), boxes.device), geometry, scores),
    ]
    if candidates.origin is not None:
        columns.append(candidates.origin)
    return torch.cat(columns, dim=1)


def overlap_features(mask: Tensor, geometry: tuple[Tensor, ...], scores: Tensor) -> Tensor:
    """Against the candidates in each row's `mask`: the largest and second-largest IoU, the largest share
    of this box inside one of them and of one of them inside this box, the score of the one with the
    largest IoU (and, with embeddings, how alike the two look), and how many overlap at IoU > 0.3 and
    > 0.5. `geometry` holds the rows' (R×N) matrices (`pair_geometry`)."""
    ious, covered, covering, *similarity = (torch.where(mask, m, torch.zeros_like(m)) for m in geometry)
    top = ious.topk(min(2, ious.shape[1]), dim=1)
    best_iou, best = top.values[:, 0], top.indices[:, 0]
    second_iou = top.values[:, -1] if ious.shape[1] > 1 else torch.zeros_like(best_iou)
    overlapping = best_iou > 0
    columns = [
        best_iou,
        second_iou,
        covered.max(dim=1).values,
        covering.max(dim=1).values,
        torch.where(overlapping, scores[best], torch.zeros_like(best_iou)),
        (ious > 0.3).sum(dim=1).float(),
        (ious > 0.5).sum(dim=1).float(),
    ]
    for matrix in similarity:
        alike = matrix.gather(1, best[:, None])[:, 0]
        columns.append(torch.where(overlapping, alike, torch.zeros_like(alike)))
    return torch.stack(columns, dim=1)


class AcceptedOverlaps:
    """`overlap_features` of every candidate against the candidates accepted so far, kept up to date as
    the greedy pass accepts them: one accepted box updates every candidate's running maxima and counts
    (a few operations on N values), instead of each candidate's row being rebuilt from its N masked
    values, and `row(i)` gives the same numbers as `overlap_features` would. (The candidate the largest
    IoU points to, whose score and similarity are read, is the first accepted one on an exact tie.)"""

    def __init__(self, geometry: tuple[Tensor, ...], scores: Tensor) -> None:
        self.geometry = geometry
        self.scores = scores
        zeros = scores.new_zeros(len(scores))
        self.best, self.second = zeros.clone(), zeros.clone()
        self.best_index = torch.zeros(len(scores), dtype=torch.long, device=scores.device)
        self.covered, self.covering = zeros.clone(), zeros.clone()
        self.over_03, self.over_05 = zeros.clone(), zeros.clone()

    def accept(self, j: int) -> None:
        """Candidate `j` was accepted: fold its column of the pair matrices into every row."""
        iou, covered, covering = (m[:, j] for m in self.geometry[:3])
        beats = iou > self.best
        self.second = torch.where(beats, self.best, torch.maximum(self.second, iou))
        self.best_index = torch.where(beats, j, self.best_index)
        self.best = torch.where(beats, iou, self.best)
        self.covered = torch.maximum(self.covered, covered)
        self.covering = torch.maximum(self.covering, covering)
        self.over_03 += iou > 0.3
        self.over_05 += iou > 0.5

    def row(self, i: int) -> Tensor:
        """Candidate `i`'s (1, F) overlap features."""
        best = self.best_index[i]
        overlapping = bool(self.best[i] > 0)
        zero = self.best.new_zeros(())
        columns = [
            self.best[i],
            self.second[i],
            self.covered[i],
            self.covering[i],
            self.scores[best] if overlapping else zero,
            self.over_03[i],
            self.over_05[i],
        ]
        columns += [matrix[i, best] if overlapping else zero for matrix in self.geometry[3:]]
        return torch.stack(columns)[None, :]


def relation_features(candidates: Candidates, accepted: Tensor) -> Tensor:
    """Every candidate's features (rows) when candidate j counts as accepted for candidate i where
    `accepted[i, j]` (N×N bool; only higher-scored j are read). Training passes the teacher's answers."""
    geometry = pair_geometry(candidates)
    mask = accepted & higher_scored(len(candidates.boxes), candidates.boxes.device)
    return torch.cat(
        [box_features(candidates, geometry), overlap_features(mask, geometry, candidates.scores)], dim=1
    )


def feature_count(num_stages: int, appearance: bool = False, origin: bool = False) -> int:
    return 1 + num_stages + 2 + 1 + 2 * (8 if appearance else 7) + (2 if origin else 0)


class OverlapRescorer(nn.Module):
    """The perceptron and its input normalisation (set from the training features by `fit_rescorer`).
    With `appearance`, the candidates must carry embeddings (their RoI features); with `origin`, their
    origin (moved proposals among them, model.rescorer_proposal_iou)."""

    def __init__(
        self, num_stages: int, hidden: int = 64, appearance: bool = False, origin: bool = False
    ) -> None:
        super().__init__()
        self.appearance = appearance
        n_in = feature_count(num_stages, appearance, origin)
        self.register_buffer("feature_mean", torch.zeros(n_in))
        self.register_buffer("feature_std", torch.ones(n_in))
        self.net = nn.Sequential(
            nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )

    def logits(self, features: Tensor) -> Tensor:
        return self.net((features - self.feature_mean) / self.feature_std).squeeze(-1)

    @torch.no_grad()
    def forward(self, candidates: Candidates) -> Tensor:
        """Each candidate's probability of being a chromosome not found by a higher-scored one, decided
        greedily in candidate order: each decision enters the later candidates' features."""
        n = len(candidates.boxes)
        probabilities = candidates.scores.new_zeros(n)
        if n == 0:
            return probabilities
        geometry = pair_geometry(candidates)
        fixed = box_features(candidates, geometry)
        overlaps = AcceptedOverlaps(geometry, candidates.scores)
        for i in range(n):
            row = torch.cat([fixed[i : i + 1], overlaps.row(i)], dim=1)
            probabilities[i] = torch.sigmoid(self.logits(row))[0]
            if probabilities[i] >= ACCEPT_PROBABILITY:
                overlaps.accept(i)
        return probabilities
