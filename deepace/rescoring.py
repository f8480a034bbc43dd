"""Training the learned overlap rescorers (deepace/models/rescorer.py, set_rescorer.py) on a trained
detector's candidates.

The detector is frozen: it runs once over the training images (optionally flipped as well), each image's
candidates are labelled by which first claims each chromosome (the one it overlaps most, at IoU >= 0.5)
in falling score. The greedy perceptron learns those labels from teacher-forced features; the set
rescorer from each cell's candidates as a whole.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import box_iou
from tqdm import tqdm

from deepace.data.dataset import flip
from deepace.data.records import ImageRecord
from deepace.inference import Detector
from deepace.models.rescorer import ACCEPT_PROBABILITY, Candidates, OverlapRescorer, relation_features
from deepace.models.set_rescorer import SetRescorer, cell_graph


@dataclass
class LabelledCandidates:
    """One (possibly flipped) training image's candidates, in its own pixels, and which are chromosomes."""

    candidates: Candidates
    labels: Tensor  # (N,) bool


def match_labels(boxes: Tensor, gt_boxes: Tensor, iou_threshold: float = 0.5) -> Tensor:
    """True for each box (in falling score) that is the first to claim its chromosome: the one it overlaps
    most, at IoU >= `iou_threshold`. Unlike AP's matching, a second box on a claimed chromosome does not
    fall through to a crossing neighbour it also overlaps: it is what the rescorer must learn to drop."""
    labels = torch.zeros(len(boxes), dtype=torch.bool)
    if len(boxes) == 0 or len(gt_boxes) == 0:
        return labels
    best_iou, best = box_iou(boxes, gt_boxes).max(dim=1)
    claimed: set[int] = set()
    for i in range(len(boxes)):
        if float(best_iou[i]) >= iou_threshold and int(best[i]) not in claimed:
            labels[i] = True
            claimed.add(int(best[i]))
    return labels


def detector_with_rescorer(detector: Detector, overrides: Sequence[str] = ()) -> Detector:
    """The same trained detector with an untrained rescorer in its heads; `overrides` (`model.KEY=VALUE`)
    may change what does not touch the weights, e.g. model.rescorer_candidate_iou or the number of
    proposals (model.rpn_post_nms_top_n_test). The detector's counting thresholds were for its own scores,
    so the result counts at ACCEPT_PROBABILITY until calibrated."""
    from deepace.config import with_overrides
    from deepace.models.detector import build_detector

    config = with_overrides(detector.config, ["model.rescorer=true", *overrides])
    model = build_detector(config.model, load_backbone_weights=False)
    # the base's own rescorer, if any, is replaced (it may be of another kind)
    state = {k: v for k, v in detector.model.state_dict().items() if not k.startswith("roi_heads.rescorer.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not key.startswith("roi_heads.rescorer.") for key in missing):
        raise ValueError(
            f"{overrides} change the detector's weights: missing {missing}, unexpected {unexpected}"
        )
    return Detector(model, config, ACCEPT_PROBABILITY)


@torch.no_grad()
def image_candidates(detector: Detector, gray: np.ndarray, stain: str) -> Candidates:
    """The candidates the detector's heads give the rescorer for one image, in the image's pixels."""
    from deepace.data.images import rescale_gray
    from deepace.devices import model_device
    from deepace.models.transform import gray_to_tensor

    model = detector.model.eval()
    seen = rescale_gray(gray, detector.config.model.stain_scale(stain))
    images, _ = model.transform([gray_to_tensor(seen).to(model_device(model))])
    features = model.backbone(images.tensors)
    proposals, _ = model.rpn(images, features)
    candidates = model.roi_heads.candidates(features, proposals, images.image_sizes)[0]
    net_h, net_w = images.image_sizes[0]
    return in_image_pixels(candidates, gray.shape[1] / net_w, gray.shape[0] / net_h)


def in_image_pixels(candidates: Candidates, scale_x: float, scale_y: float) -> Candidates:
    """Candidates found in network pixels moved to the image's pixels (x scaled by `scale_x`, y by
    `scale_y`), on the CPU."""
    to_image = torch.tensor([scale_x, scale_y] * 2)
    embeddings = None if candidates.embeddings is None else candidates.embeddings.cpu()
    origin = None if candidates.origin is None else candidates.origin.cpu()
    return Candidates(
        candidates.boxes.cpu() * to_image,
        candidates.stage_scores.cpu(),
        candidates.scores.cpu(),
        embeddings,
        origin,
    )


FLIP_VIEWS: dict[str, list[tuple[bool, bool]]] = {
    "none": [(False, False)],
    "horizontal": [(False, False), (True, False)],
    "all": [(False, False), (True, False), (False, True), (True, True)],
}


def collect_candidates(
    detector: Detector,
    records: list[ImageRecord],
    flips: str = "none",
    progress: bool = True,
    counting: Detector | None = None,
) -> list[LabelledCandidates]:
    """Labelled candidates of every record, and with `flips` 'horizontal' of its mirror image too, with
    'all' of its horizontal, vertical and double flips: the detector's candidates differ on a flipped
    image, so each flip is more training data. Samples come record by record, views in that order. Each
    image is taken as `counting` (default `detector`) counts it (`Detector.counted_gray`: faint fluorescence
    darkened, which a first pass decides); pass the trained model as `counting` when `detector` carries a
    rescorer still to be trained, whose counts would decide at random."""
    if flips not in FLIP_VIEWS:
        raise ValueError(f"flips must be one of {', '.join(FLIP_VIEWS)}, not {flips!r}")
    views = FLIP_VIEWS[flips]
    out = []
    for record in tqdm(records, desc="candidates", unit="img", disable=not progress):
        gray, stain = (counting or detector).counted_gray(record.path)
        for horizontal, vertical in views:
            view, truth = flip(gray, record.boxes, horizontal, vertical)
            candidates = image_candidates(detector, view, stain)
            labels = match_labels(candidates.boxes, torch.from_numpy(truth))
            out.append(LabelledCandidates(candidates, labels))
    return out


def training_features(samples: list[LabelledCandidates]) -> tuple[Tensor, Tensor]:
    """Teacher-forced features (the accepted boxes are the higher-scored true ones) and labels."""
    features, labels = [], []
    for sample in samples:
        n = len(sample.labels)
        if n == 0:
            continue
        features.append(relation_features(sample.candidates, sample.labels[None, :].expand(n, n)))
        labels.append(sample.labels.float())
    return torch.cat(features), torch.cat(labels)


def own_decision_features(rescorer: OverlapRescorer, samples: list[LabelledCandidates]) -> Tensor:
    """Features built with the rescorer's own greedy decisions as the accepted boxes (what it sees at
    inference), in the order of `training_features`' rows."""
    rows = []
    for sample in samples:
        n = len(sample.labels)
        if n:
            accepted = rescorer(sample.candidates) >= ACCEPT_PROBABILITY
            rows.append(relation_features(sample.candidates, accepted[None, :].expand(n, n)))
    return torch.cat(rows)


def fit_rescorer(
    rescorer: OverlapRescorer,
    samples: list[LabelledCandidates],
    epochs: int = 30,
    lr: float = 1e-3,
    batch_size: int = 1024,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, float]:
    """Set the rescorer's normalisation from the samples' teacher-forced features and train it (Adam,
    cross-entropy, learning rate cosine-decayed to 0). Returns the final training loss and accuracy."""
    features, labels = training_features(samples)
    return fit_on_features(rescorer, features, labels, epochs, lr, batch_size, seed, progress)


def fit_on_features(
    rescorer: OverlapRescorer,
    features: Tensor,
    labels: Tensor,
    epochs: int = 30,
    lr: float = 1e-3,
    batch_size: int = 1024,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, float]:
    """`fit_rescorer` on given feature rows and labels."""
    rescorer.feature_mean.copy_(features.mean(dim=0))
    rescorer.feature_std.copy_(features.std(dim=0).clamp(min=1e-6))
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    for layer in rescorer.net:
        if hasattr(layer, "reset_parameters"):
            layer.reset_parameters()
    optimizer = torch.optim.Adam(rescorer.parameters(), lr=lr)
    steps_per_epoch = math.ceil(len(labels) / batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps_per_epoch)

    def batch_logits(batch: Tensor) -> tuple[Tensor, Tensor]:
        return rescorer.logits(features[batch]), labels[batch]

    train_batches(
        rescorer, batch_logits, len(labels), batch_size, epochs, optimizer, schedule, generator, progress
    )
    with torch.no_grad():
        return fit_summary(rescorer.logits(features), labels)


def train_batches(
    rescorer: torch.nn.Module,
    batch_logits: Callable[[Tensor], tuple[Tensor, Tensor]],
    n_items: int,
    batch_size: int,
    epochs: int,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
    progress: bool,
) -> None:
    """Cross-entropy training over `n_items` in random batches; `batch_logits(indices)` gives the batch's
    logits and labels. Leaves the rescorer in eval mode."""
    loss_fn = torch.nn.BCEWithLogitsLoss()
    rescorer.train()
    for _epoch in tqdm(range(epochs), desc="rescorer", unit="epoch", disable=not progress):
        order = torch.randperm(n_items, generator=generator)
        for start in range(0, n_items, batch_size):
            loss = loss_fn(*batch_logits(order[start : start + batch_size]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    rescorer.eval()


def fit_summary(logits: Tensor, labels: Tensor) -> dict[str, float]:
    """What the fits return: candidates, share of chromosomes, final training loss and accuracy."""
    return {
        "samples": float(len(labels)),
        "positives": float(labels.mean()),
        "loss": float(torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)),
        "accuracy": float(((logits > 0).float() == labels).float().mean()),
    }


def fit_set_rescorer(
    rescorer: SetRescorer,
    samples: list[LabelledCandidates],
    epochs: int = 8,  # 20 fitted the training cells better and the validation cells worse (BENCHMARKS.md)
    lr: float = 3e-3,
    cells_per_batch: int = 16,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, float]:
    """Set the set rescorer's normalisations from the samples' features and train it (Adam, cross-entropy,
    one-cycle learning rate peaking at `lr`), `cells_per_batch` cells per step as one graph. Returns the
    final training loss and accuracy, as `fit_rescorer` does."""
    graphs = [(*cell_graph(s.candidates), s.labels.float()) for s in samples if len(s.labels)]
    nodes = torch.cat([g[0] for g in graphs])
    pairs = torch.cat([g[1] for g in graphs])
    rescorer.node_mean.copy_(nodes.mean(dim=0))
    rescorer.node_std.copy_(nodes.std(dim=0).clamp(min=1e-6))
    rescorer.pair_mean.copy_(pairs.mean(dim=0))
    rescorer.pair_std.copy_(pairs.std(dim=0).clamp(min=1e-6))
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    for module in rescorer.modules():
        if isinstance(module, torch.nn.Linear):
            module.reset_parameters()
    optimizer = torch.optim.Adam(rescorer.parameters(), lr=lr)
    steps = epochs * math.ceil(len(graphs) / cells_per_batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps, pct_start=0.1)

    def batch_logits(cells: Tensor) -> tuple[Tensor, Tensor]:
        nodes, pairs, edges, labels = join_graphs([graphs[k] for k in cells.tolist()])
        return rescorer.graph_logits(nodes, pairs, edges), labels

    train_batches(
        rescorer, batch_logits, len(graphs), cells_per_batch, epochs, optimizer, schedule, generator, progress
    )
    with torch.no_grad():
        all_nodes, all_pairs, edges, labels = join_graphs(graphs)
        return fit_summary(rescorer.graph_logits(all_nodes, all_pairs, edges), labels)


def join_graphs(
    graphs: list[tuple[Tensor, Tensor, tuple[Tensor, Tensor], Tensor]],
) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor], Tensor]:
    """Several cells' (nodes, pairs, edges, labels) as one graph, node indices offset cell by cell."""
    offsets = np.cumsum([0] + [len(g[0]) for g in graphs[:-1]])
    return (
        torch.cat([g[0] for g in graphs]),
        torch.cat([g[1] for g in graphs]),
        (
            torch.cat([g[2][0] + int(o) for g, o in zip(graphs, offsets, strict=True)]),
            torch.cat([g[2][1] + int(o) for g, o in zip(graphs, offsets, strict=True)]),
        ),
        torch.cat([g[3] for g in graphs]),
    )


def fit_any_rescorer(
    rescorer: OverlapRescorer | SetRescorer,
    samples: list[LabelledCandidates],
    epochs: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, float]:
    """`fit_rescorer` or `fit_set_rescorer`, by the rescorer's kind; `epochs` None: each one's default."""
    if isinstance(rescorer, SetRescorer):
        return fit_set_rescorer(rescorer, samples, epochs or 8, seed=seed, progress=progress)
    return fit_rescorer(rescorer, samples, epochs or 30, seed=seed, progress=progress)
