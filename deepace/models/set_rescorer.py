"""Set rescoring (not in the paper): which candidate boxes are chromosomes, decided for all candidates of a
cell at once, each having read every candidate it overlaps, higher- or lower-scored.

Why: the greedy rescorer (rescorer.py) decides in falling score, so a candidate only sees the boxes above
it. A box on one arm of a chromosome that scores above the whole chromosome's box cannot know that box is
there; in the session-13 model's G-band errors, 151 of 351 false boxes lay inside one chromosome's box
(BENCHMARKS.md, "Where the errors are"). This is a small version of GossipNet (Hosang, Benenson and
Schiele, "Learning non-maximum suppression", CVPR 2017): each candidate starts from the greedy rescorer's
per-box features (scores, size, overlaps with the higher-scored candidates), then, in a few blocks, takes
the element-wise maximum of messages from the candidates it overlaps (an MLP of both candidates' states and
their pair geometry) and adds it to its state through a second MLP. It is trained on the same labels
(`deepace.rescoring.match_labels`: the first box, in falling detector score, to claim each chromosome), so
it learns the same target with both directions of context and no teacher forcing.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from deepace.models.rescorer import Candidates, box_features, feature_count, pair_geometry

PAIR_FEATURES = 9


def cell_graph(candidates: Candidates) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor]]:
    """A cell's candidates as a graph, from one computation of their pair geometry:
    - nodes (N, F): the greedy rescorer's features that do not depend on what was accepted;
    - the overlapping ordered pairs (i, j), i != j, and their (E, PAIR_FEATURES) geometry as seen from i:
      IoU, share of i inside j, share of j inside i, j's score minus i's, whether j scores higher, j's
      centre offset in i's widths and heights (clamped to ±3), and the log ratios of j's width and height
      to i's."""
    boxes, scores = candidates.boxes, candidates.scores
    n = len(boxes)
    geometry = pair_geometry(candidates)[:3]
    iou, covered, covering = geometry
    i, j = torch.where((covered > 0) & ~torch.eye(n, dtype=torch.bool, device=boxes.device))
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1e-3)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    offset = ((centres[j] - centres[i]) / wh[i]).clamp(-3, 3)
    overlaps = [iou[i, j], covered[i, j], covering[i, j], scores[j] - scores[i], (j < i).float()]
    pairs = torch.cat([torch.stack(overlaps, dim=1), offset, torch.log(wh[j] / wh[i])], dim=1)
    return box_features(candidates, geometry), pairs, (i, j)


class SetRescorer(nn.Module):
    """GossipNet-style blocks over a cell's candidates, and the input normalisations (set from the training
    features by `deepace.rescoring.fit_set_rescorer`). Several cells can be passed as one graph (their
    pairs never cross cells)."""

    appearance = False  # the heads pass no RoI features

    def __init__(self, num_stages: int, hidden: int = 64, blocks: int = 3) -> None:
        super().__init__()
        n_node = feature_count(num_stages) - 7  # the per-box part, not the "against accepted" one
        self.register_buffer("node_mean", torch.zeros(n_node))
        self.register_buffer("node_std", torch.ones(n_node))
        self.register_buffer("pair_mean", torch.zeros(PAIR_FEATURES))
        self.register_buffer("pair_std", torch.ones(PAIR_FEATURES))
        self.embed = nn.Sequential(nn.Linear(n_node, hidden), nn.ReLU())
        self.messages = nn.ModuleList(
            nn.Sequential(
                nn.Linear(2 * hidden + PAIR_FEATURES, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
            )
            for _ in range(blocks)
        )
        self.updates = nn.ModuleList(
            nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
            for _ in range(blocks)
        )
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def graph_logits(self, nodes: Tensor, pairs: Tensor, edges: tuple[Tensor, Tensor]) -> Tensor:
        """(N,) logits for `nodes` (N, F) linked by `edges` (i, j) with `pairs` (E, PAIR_FEATURES)."""
        state = self.embed((nodes - self.node_mean) / self.node_std)
        pairs = (pairs - self.pair_mean) / self.pair_std
        i, j = edges
        for message, update in zip(self.messages, self.updates, strict=True):
            sent = message(torch.cat([state[i], state[j], pairs], dim=1))
            # messages are >= 0 (ReLU), so a zero start makes "no neighbour" read as 0
            pooled = torch.zeros_like(state).scatter_reduce(
                0, i[:, None].expand_as(sent), sent, "amax", include_self=True
            )
            state = state + update(torch.cat([state, pooled], dim=1))
        return self.head(state).squeeze(-1)

    @torch.no_grad()
    def forward(self, candidates: Candidates) -> Tensor:
        """Each candidate's probability of being a chromosome that no higher-scored candidate claims."""
        if len(candidates.boxes) == 0:
            return candidates.scores.new_zeros(0)
        return torch.sigmoid(self.graph_logits(*cell_graph(candidates)))
