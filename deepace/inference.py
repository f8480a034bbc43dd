"""Counting with a trained detector: the one entry point used by `count`, `case` and the review app."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class CellResult:
    """What the model found in one image. Boxes are (x1, y1, x2, y2) in original-image pixels,
    sorted by falling score; they go down to a low score so that AP can be computed."""

    image: Path
    width: int = 0
    height: int = 0
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), dtype=np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=np.float32))
    score_threshold: float = 0.5
    low_confidence_band: tuple[float, float] = (0.3, 0.7)
    error: str | None = None
    # k when the image was enlarged k times by repeating pixels, which the model miscounts
    # (deepace.magnification.pixel_repetition); 1 otherwise
    pixel_repetition: int = 1
    # set when a faint fluorescence image was counted again darkened: its first pass's chromosome grey level
    # (Detector.detect, deepace/faint.py)
    faint_ink_level: float | None = None
    # set when the image was counted in several orientations (Counter's views, deepace/views.py): each
    # orientation's count; the boxes are the median one's
    view_counts: tuple[int, ...] | None = None
    # set when the image was noisier than the training images and denoised before counting: its noise σ in
    # grey levels (deepace/data/noise.py, `ModelConfig.denoise_above`)
    denoised_noise: float | None = None
    # set when the stain was given (not auto) and the image, read as that stain, still shows a dark
    # background: it looks like the other stain, and its count is likely nonsense
    other_stain_look: bool = False
    # the --magnification it was counted at (Counter's; 1: as it is)
    magnification: float = 1.0

    @property
    def count(self) -> int:
        """Chromosomes counted: detections scoring at least the threshold."""
        return int((self.scores >= self.score_threshold).sum())

    @property
    def low_confidence(self) -> int:
        """Detections whose score lies in the band around the threshold: the ones a reviewer should check."""
        lo, hi = self.low_confidence_band
        return int(((self.scores >= lo) & (self.scores < hi)).sum())

    @property
    def exact_chance(self) -> float:
        """The model's own chance that `count` is exact, from its boxes' scores (metrics/count_chance.py)."""
        from deepace.metrics.count_chance import exact_chance

        return exact_chance(self.scores, self.count)


@dataclass
class Detection:
    """`Detector.detect`'s result: the pre-processed image the boxes were found in, the stain it was read
    as, boxes (N, 4) in its pixels and their scores by falling score. `ink_level`: set when the image was
    faint and detected again darkened (deepace/faint.py), the first pass's grey level of its chromosomes.
    `view_counts`: set when the image was counted in several orientations (deepace/views.py), each one's
    count; this detection is the median one's."""

    gray: np.ndarray
    stain: str
    boxes: np.ndarray
    scores: np.ndarray
    ink_level: float | None = None
    view_counts: tuple[int, ...] | None = None


DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "deepace.pt"

# Images the model would read at more megapixels than this (after the stain's and the user's resizing)
# are refused: on the CPU its memory grows by about a quarter of a GB a megapixel (a blank 25 MP image
# peaked at 7.1 GB and took 21 s, a 64 MP one 15.7 GB; BENCHMARKS.md, "Session 42: very large images"),
# so one whole-slide scan in a folder could take a batch down for lack of memory. A spread is 1-5 MP.
MAX_MODEL_MEGAPIXELS = 25.0


class ImageTooLargeError(ValueError):
    """An image the model would read at more than MAX_MODEL_MEGAPIXELS."""


def save_model(
    path: Path,
    model,
    config,
    score_threshold: float,
    meta: dict | None = None,  # noqa: ANN001
    half: bool = False,
    stain_thresholds: dict[str, float] | None = None,
) -> None:
    """Write a self-describing model file: config, weights, counting threshold(s) and provenance.

    stain_thresholds: optional per-stain counting thresholds ('brightfield', 'fluorescence'), calibrated
    on validation images of each kind; `score_threshold` is used for a stain not listed."""
    import torch

    state = {
        k: (v.half() if half and v.is_floating_point() else v).cpu() for k, v in model.state_dict().items()
    }
    payload = {
        "format": "deepace-model/1",
        "config": config.to_dict(),
        "state_dict": state,
        "score_threshold": float(score_threshold),
        "stain_thresholds": {k: float(v) for k, v in (stain_thresholds or {}).items()},
        "meta": meta or {},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


class ModelFileError(ValueError):
    """A model file that is missing or cannot be read as one; str() names the file and why."""


def read_model_file(path: Path) -> dict:
    """A model file (`save_model`) or a training checkpoint (`last.pt`), as the model file's payload:
    config, state_dict and, when present, thresholds and provenance."""
    import torch

    if not path.exists():
        raise ModelFileError(f"{path}: model file not found")
    if path.is_dir():
        raise ModelFileError(f"{path}: a folder, not a model file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - torch.load raises anything from EOFError to UnpicklingError
        raise ModelFileError(f"{path}: not a readable model file ({type(e).__name__}: {e})") from e
    if isinstance(payload, dict) and "model" in payload and "config" in payload:  # a training checkpoint
        payload = {
            "config": payload["config"],
            "state_dict": payload["model"],
            "meta": {"iteration": payload.get("iteration")},
        }
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise ModelFileError(f"{path}: not a DeepACE model file or training checkpoint")
    return payload


def float_weights(payload: dict) -> dict:
    """The payload's weights in float32 (model files may store them as float16)."""
    return {k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}


def network_from_payload(payload: dict, overrides: Sequence[str] = ()):  # noqa: ANN201 (torch lazily)
    """The network a model file's payload (`read_model_file`) holds, in float32, and its config.
    `overrides` (`model.KEY=VALUE`, deepace.config.with_overrides) may change the training losses
    (model.repulsion_all_stages=true) or what deepace.models.detector.adapt_state_dict carries the
    weights over to (e.g. model.fc6_rank=256)."""
    from deepace.config import Config, with_overrides
    from deepace.models.detector import adapt_state_dict, build_detector

    source = Config.from_dict(payload["config"])
    config = with_overrides(source, list(overrides))
    model = build_detector(config.model, load_backbone_weights=False)
    model.load_state_dict(adapt_state_dict(float_weights(payload), source.model, model))
    return model, config


def ready_to_run(model, device, runtime: str = "auto"):  # noqa: ANN001, ANN201 (torch is imported lazily)
    """`model` prepared for inference on `device` (a torch.device): moved to a GPU as it is, or on the CPU
    optimised as `deepace count` runs it (deepace.models.fuse); in place."""
    from deepace.models.fuse import optimise_for_inference

    return model.to(device) if device.type != "cpu" else optimise_for_inference(model, runtime)


class Detector:
    """A trained DeepACE model in evaluation mode, with its counting threshold."""

    def __init__(
        self,
        model,
        config,
        score_threshold: float = 0.5,
        num_threads: int | None = None,  # noqa: ANN001
        stain_thresholds: dict[str, float] | None = None,
    ) -> None:
        import torch

        if num_threads:
            torch.set_num_threads(num_threads)
        self.model = model.eval()
        self.config = config
        self.score_threshold = score_threshold
        self.stain_thresholds = dict(stain_thresholds or {})

    def threshold_for(self, stain: str) -> float:
        return self.stain_thresholds.get(stain, self.score_threshold)

    @classmethod
    def load(
        cls,
        path: Path | None = None,
        num_threads: int | None = None,
        optimise: bool = False,
        runtime: str = "auto",
        device: str = "cpu",
    ) -> Detector:
        """`optimise`: fold batch norms, go channels-last, pool RoIs by sparse matrix products and, unless
        `runtime` is 'torch', run the backbone in ONNX Runtime, for speed (models that are only run, never
        saved or trained: it removes parameters from the state dict). `device`: 'cpu', 'cuda', 'cuda:N'
        or 'auto' (deepace.devices); on a GPU the model runs as it is (`optimise` is for the CPU)."""
        import torch

        from deepace.devices import resolve_device

        payload = read_model_file(Path(path) if path is not None else DEFAULT_WEIGHTS)
        model, config = network_from_payload(payload)
        on = resolve_device(device)
        if optimise or on.type != "cpu":
            if num_threads:
                torch.set_num_threads(num_threads)  # before: ONNX Runtime takes its thread count
            model = ready_to_run(model, on, runtime)
        return cls(
            model,
            config,
            float(payload.get("score_threshold", config.score_threshold)),
            num_threads,
            payload.get("stain_thresholds"),
        )

    def optimised_copy(self, runtime: str = "auto", device: str = "cpu") -> Detector:
        """A copy of this detector optimised as `deepace count` runs it (deepace.models.fuse), for passes
        over many images whose results feed a model that will be saved; this one keeps every parameter.
        With a GPU `device` (deepace.devices), a copy on that device instead."""
        import copy

        from deepace.devices import resolve_device

        model = ready_to_run(copy.deepcopy(self.model).eval(), resolve_device(device), runtime)
        return Detector(model, self.config, self.score_threshold, stain_thresholds=self.stain_thresholds)

    def prepare(self, path: Path, stain: str = "auto") -> np.ndarray:
        return self.prepare_with_stain(path, stain)[0]

    def prepare_with_stain(self, path: Path, stain: str = "auto") -> tuple[np.ndarray, str]:
        from deepace.data.dataset import prepare_image_and_stain

        model = self.config.model
        return prepare_image_and_stain(
            path, stain, model.preprocess_threshold, model.brightfield_levels, model.denoise_above
        )

    def detect(
        self, path: Path, stain: str = "auto", magnification: float = 1.0, views: int = 1
    ) -> Detection:
        """Read, pre-process and detect one image (`read` then `detect_read`)."""
        return self.detect_read(*self.read(path, stain), magnification, views)

    def read(self, path: Path, stain: str = "auto") -> tuple[np.ndarray, str]:
        """The image as the model reads it before the paper's pre-processing (brightfield-looking uint8)
        and the stain it was read as."""
        return self.read_noting_noise(path, stain)[:2]

    def read_noting_noise(self, path: Path, stain: str = "auto") -> tuple[np.ndarray, str, float | None]:
        """`read`, and the image's noise σ if it was denoised (deepace/data/noise.py), else None."""
        from deepace.data.images import read_as_model

        model = self.config.model
        return read_as_model(path, stain, model.brightfield_levels, model.denoise_above)

    def counted_gray(self, path: Path, stain: str = "auto") -> tuple[np.ndarray, str]:
        """The pre-processed image `detect` finds its boxes in, and the stain it was read as: for a faint
        fluorescence image the darkened one, which takes a first detection pass to tell; for any other
        image no detection is run."""
        from deepace.data.images import paper_preprocess

        raw, stain = self.read(path, stain)
        if stain == "fluorescence" and self.config.model.faint_fluorescence_level is not None:
            return self.detect_read(raw, stain).gray, stain
        return paper_preprocess(raw, self.config.model.preprocess_threshold), stain

    def detect_read(
        self,
        raw: np.ndarray,
        stain: str,
        magnification: float = 1.0,
        views: int = 1,
        threshold: float | None = None,
    ) -> Detection:
        """Pre-process and detect an image from `read`; a faint fluorescence image is detected again with
        its chromosomes darkened (deepace/faint.py, `ModelConfig.faint_fluorescence_level`). With `views`
        > 1 the image is detected in that many orientations and the one whose count at `threshold` (default
        the model's for the stain) is the median is kept (deepace/views.py)."""
        from deepace.data.images import paper_preprocess
        from deepace.faint import darkened, ink_level

        if views > 1:
            from dataclasses import replace

            from deepace.views import median_view

            at = self.threshold_for(stain) if threshold is None else threshold

            def detect(image: np.ndarray) -> Detection:
                return self.detect_read(image, stain, magnification)

            found, counts = median_view(detect, raw, views, at)
            return replace(found, view_counts=counts)
        model_config = self.config.model
        gray = paper_preprocess(raw, model_config.preprocess_threshold)
        boxes, scores = self.predict_gray(gray, stain, magnification)
        level, target = model_config.faint_fluorescence_level, model_config.faint_fluorescence_target
        ink = None
        if stain == "fluorescence" and level is not None:
            first = ink_level(raw, boxes, scores, self.threshold_for(stain))
            if first is not None and max(level, target) < first < 255:  # 255: blank boxes, nothing to darken
                ink = first
                gray = paper_preprocess(darkened(raw, ink, target), model_config.preprocess_threshold)
                boxes, scores = self.predict_gray(gray, stain, magnification)
        return Detection(gray, stain, *self.without_blank_boxes(gray, boxes, scores), ink_level=ink)

    def without_blank_boxes(
        self, gray: np.ndarray, boxes: np.ndarray, scores: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Boxes and scores less those with too little ink to hold a chromosome (`ModelConfig.min_box_ink`,
        deepace/blank_boxes.py); `gray` pre-processed as the model saw it."""
        from deepace.blank_boxes import INK_GREY, without_blank_boxes

        model_config = self.config.model
        if model_config.min_box_ink is None:
            return boxes, scores
        ink_grey = model_config.preprocess_threshold or INK_GREY
        return without_blank_boxes(gray, boxes, scores, model_config.min_box_ink, ink_grey)

    def predict_gray(
        self, gray: np.ndarray, stain: str = "brightfield", magnification: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Boxes (N, 4) in the image's pixels and scores (N,), by falling score. `stain` is the stain the
        image was read as (it picks the model's resize factor for that stain); `magnification` resizes the
        image further (`Counter`)."""
        import torch

        from deepace.data.images import rescale_gray
        from deepace.devices import model_device
        from deepace.models.transform import gray_to_tensor

        factor = self.config.model.stain_scale(stain) * magnification
        read_at = factor * self.config.model.input_scale  # the model's own transform resizes once more
        megapixels = gray.shape[0] * gray.shape[1] * read_at**2 / 1e6
        if megapixels > MAX_MODEL_MEGAPIXELS:
            raise ImageTooLargeError(
                f"the model would read it at {megapixels:.0f} megapixels ({gray.shape[1]}x{gray.shape[0]} "
                f"pixels at scale {read_at:g}), over the {MAX_MODEL_MEGAPIXELS:g} it takes (memory grows by "
                f"about 0.25 GB a megapixel; a spread is 1-5): crop the cell out of it"
            )
        seen = rescale_gray(gray, factor)
        with torch.inference_mode():
            out = self.model([gray_to_tensor(seen).to(model_device(self.model))])[0]
        scores = out["scores"].cpu().numpy().astype(np.float32)
        order = np.argsort(-scores, kind="stable")
        boxes = out["boxes"].cpu().numpy().astype(np.float32)[order]
        if seen.shape != gray.shape:
            boxes /= np.array([seen.shape[1] / gray.shape[1], seen.shape[0] / gray.shape[0]] * 2, np.float32)
        return boxes, scores[order]


class Counter:
    """Counts chromosomes image by image; an unreadable image, or one whose counting fails, gives a result
    with `.error` set and the others are counted."""

    def __init__(
        self,
        weights: Path | None = None,
        stain: str = "auto",
        score_threshold: float | None = None,
        low_confidence_margin: float = 0.1,
        num_threads: int | None = None,
        optimise: bool = True,
        magnification: float = 1.0,
        runtime: str = "auto",
        views: int = 1,
    ) -> None:
        """`magnification`: resize every image by this factor before the model's own scaling, for spreads
        imaged at another magnification than the training images (2: chromosomes half the training size;
        BENCHMARKS.md, "Other magnifications"). `runtime`: the backbone's, with `optimise` (auto: ONNX
        Runtime when it works, else torch; onnx; torch). `views`: orientations each image is counted in,
        the median one kept (deepace/views.py; 1, 3, 5 or 7, each one more costs one more detection)."""
        from deepace.views import check_views

        self.views = check_views(views)
        self.detector = Detector.load(weights, num_threads, optimise=optimise, runtime=runtime)
        self.magnification = magnification
        self.stain = stain
        self.user_threshold = score_threshold
        self.low_confidence_margin = low_confidence_margin
        self.score_threshold = self.threshold_for("brightfield" if stain == "auto" else stain)
        self.low_band = self.band_for(self.score_threshold)

    def threshold_for(self, stain: str) -> float:
        """The user's threshold if given, else the model's calibrated one for this stain."""
        return self.user_threshold if self.user_threshold is not None else self.detector.threshold_for(stain)

    def band_for(self, threshold: float) -> tuple[float, float]:
        m = self.low_confidence_margin
        return max(0.0, threshold - m), min(1.0, threshold + m)

    def count_image(self, path: Path) -> CellResult:
        from deepace.data.images import ImageReadError, detect_stain

        path = Path(path)
        try:
            # raw looks brightfield (dark chromosomes on light) when the image was read as its own stain
            raw, stain, noise = self.detector.read_noting_noise(path, self.stain)
        except (ImageReadError, OSError, ValueError) as exc:
            return CellResult(
                image=path,
                score_threshold=self.score_threshold,
                low_confidence_band=self.low_band,
                error=str(exc),
            )
        from deepace.magnification import pixel_repetition

        threshold = self.threshold_for(stain)
        try:
            found = self.detector.detect_read(raw, stain, self.magnification, self.views, threshold)
        except Exception as exc:  # noqa: BLE001 - one image's failure is reported with it, not lost with a batch
            return CellResult(
                image=path,
                score_threshold=threshold,
                low_confidence_band=self.band_for(threshold),
                error=f"{path}: counting failed: {type(exc).__name__}: {exc}",
            )
        return CellResult(
            image=path,
            width=found.gray.shape[1],
            height=found.gray.shape[0],
            boxes=found.boxes,
            scores=found.scores,
            score_threshold=threshold,
            low_confidence_band=self.band_for(threshold),
            pixel_repetition=pixel_repetition(found.gray),  # pointwise pre-processing keeps the blocks
            faint_ink_level=found.ink_level,
            view_counts=found.view_counts,
            magnification=self.magnification,
            denoised_noise=noise,
            other_stain_look=self.stain != "auto" and detect_stain(raw) == "fluorescence",
        )

    def count_paths(self, paths: list[Path], progress: bool = True) -> list[CellResult]:
        from tqdm import tqdm

        return [
            self.count_image(p)
            for p in tqdm(list(paths), desc="counting", unit="cell", disable=not progress or len(paths) < 2)
        ]
