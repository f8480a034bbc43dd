"""Hard Negative Anchors Sampling (paper §2.2): stratified sampling of RPN training anchors.

torchvision's RPN ignores anchors with 0.3 <= IoU < 0.7. Those are mostly partial chromosomes, which the
paper wants the RPN to learn as background ("hard negatives"). Each image contributes `batch_size_per_image`
anchors: `positive_fraction` positives, then half of the rest hard negatives and the rest easy negatives.
"""

from __future__ import annotations

import torch
from torch import Tensor

# torchvision's RPN labels anchors 1 (IoU >= 0.7 or best for a ground truth), 0 (IoU < 0.3),
# -1 (0.3 <= IoU < 0.7, "between thresholds"), and -1 also for anchors crossing the image border when
# that is switched on (it is not, in torchvision's RPN).
POSITIVE, EASY_NEGATIVE, HARD_NEGATIVE = 1, 0, -1


class HardNegativeAnchorSampler:
    """Drop-in replacement for torchvision's BalancedPositiveNegativeSampler.

    When a stratum has too few anchors the shortfall is filled from the next stratum in the order
    positives -> hard negatives -> easy negatives (and easy -> hard when easy negatives run out), so every
    image still yields `batch_size_per_image` anchors whenever it has that many.
    """

    def __init__(
        self,
        batch_size_per_image: int = 512,
        positive_fraction: float = 0.25,
        hard_fraction_of_negatives: float = 0.5,
    ) -> None:
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.hard_fraction_of_negatives = hard_fraction_of_negatives

    def __call__(self, matched_idxs: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        pos_masks, neg_masks = [], []
        for labels in matched_idxs:
            pos, hard, easy = self.sample_image(labels)
            pos_mask = torch.zeros_like(labels, dtype=torch.uint8)
            neg_mask = torch.zeros_like(labels, dtype=torch.uint8)
            pos_mask[pos] = 1
            neg_mask[hard] = 1
            neg_mask[easy] = 1
            pos_masks.append(pos_mask)
            neg_masks.append(neg_mask)
        return pos_masks, neg_masks

    def sample_image(self, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Indices of the sampled positive, hard-negative and easy-negative anchors of one image."""
        positives = torch.where(labels >= POSITIVE)[0]
        hard = torch.where(labels == HARD_NEGATIVE)[0]
        easy = torch.where(labels == EASY_NEGATIVE)[0]

        n_pos = min(int(self.batch_size_per_image * self.positive_fraction), positives.numel())
        n_neg = self.batch_size_per_image - n_pos
        n_hard = min(int(n_neg * self.hard_fraction_of_negatives), hard.numel())
        n_easy = min(n_neg - n_hard, easy.numel())
        n_hard = min(n_neg - n_easy, hard.numel())  # easy negatives short: top up with hard ones

        return _pick(positives, n_pos), _pick(hard, n_hard), _pick(easy, n_easy)


def _pick(indices: Tensor, n: int) -> Tensor:
    return indices[torch.randperm(indices.numel(), device=indices.device)[:n]]
