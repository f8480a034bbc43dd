"""Tiny detection problems for fast model and engine tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deepace.config import Config, ModelConfig, TrainConfig
from deepace.data.records import ImageRecord


def blob_image(rng: np.random.Generator, size: int = 160, n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Dark elongated 'chromosomes' on a light background, not touching, with their exact boxes."""
    img = np.full((size, size), 235, dtype=np.uint8)
    boxes: list[list[float]] = []
    while len(boxes) < n:
        w, h = (int(v) for v in rng.integers(14, 26, 2))
        if rng.random() < 0.5:
            h = int(h * 2)
        else:
            w = int(w * 2)
        x, y = int(rng.integers(4, size - w - 4)), int(rng.integers(4, size - h - 4))
        cand = [x, y, x + w, y + h]
        if any(
            not (cand[2] + 4 < b[0] or b[2] + 4 < cand[0] or cand[3] + 4 < b[1] or b[3] + 4 < cand[1])
            for b in boxes
        ):
            continue
        img[y : y + h, x : x + w] = 60
        boxes.append([float(v) for v in cand])
    return img, np.array(boxes, dtype=np.float32)


def write_blob_records(folder: Path, n_images: int, seed: int = 0, size: int = 160) -> list[ImageRecord]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n_images):
        img, boxes = blob_image(rng, size)
        path = folder / f"cell{i}.png"
        Image.fromarray(img).save(path)
        records.append(ImageRecord(path, boxes, width=size, height=size, expected_count=len(boxes)))
    return records


def tiny_config(iterations: int = 40, **model: object) -> Config:
    base = {
        "backbone": "resnet18",
        "anchor_sizes": (32, 48),
        "aspect_ratios": (0.5, 1.0, 2.0),
        "rpn_pre_nms_top_n_train": 200,
        "rpn_post_nms_top_n_train": 50,
        "rpn_pre_nms_top_n_test": 200,
        "rpn_post_nms_top_n_test": 50,
        "rpn_batch_size_per_image": 128,
        "box_batch_size_per_image": 32,
    }
    base.update(model)
    return Config(
        model=ModelConfig(**base),  # type: ignore[arg-type]
        train=TrainConfig(
            iterations=iterations,
            lr=0.01,
            warmup_iterations=5,
            val_every=10_000,
            checkpoint_every=10,
            log_every=5,
            seed=0,
            clip_grad_norm=10.0,
        ),
    )


ONE_CHROMOSOME = torch.tensor([[100.0, 100.0, 130.0, 200.0]])


def sample_head_rois(proposals: torch.Tensor, **model: object) -> tuple[torch.Tensor, torch.Tensor]:
    """The RoIs (and labels) the box head of a tiny model (batch 32, 25% positive) trains on, drawn from
    `proposals` plus 400 background boxes, with ONE_CHROMOSOME as the only ground truth."""
    from deepace.models.detector import build_detector

    heads = build_detector(tiny_config(**model).model).roi_heads
    background = torch.tensor([[300.0, 300.0, 330.0, 400.0]]) + torch.arange(400.0)[:, None] / 10
    target = {"boxes": ONE_CHROMOSOME, "labels": torch.ones(1, dtype=torch.int64)}
    sampled, _, labels, _ = heads.select_training_samples([torch.cat([proposals, background])], [target])
    return sampled[0], labels[0]


class RecordingModel(torch.nn.Module):
    """A stand-in detector: the same `boxes` and `scores` (none by default) whatever it is given; keeps each
    input image, to check how a Detector read and prepared it."""

    def __init__(self, boxes: list[list[float]] | None = None, scores: list[float] | None = None) -> None:
        super().__init__()
        self.inputs: list[torch.Tensor] = []
        self.boxes = torch.tensor(boxes or [], dtype=torch.float32).reshape(-1, 4)
        self.scores = torch.tensor(scores or [], dtype=torch.float32)

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        self.inputs.append(images[0])
        return [{"boxes": self.boxes.clone(), "scores": self.scores.clone()}]
