"""Synthetic metaphase spreads with exact boxes, for tests and demos.

A spread is a brightfield G-banded look: dark, banded, bent two-armed chromosomes (a centromere
constriction, a faint groove between the sister chromatids) of the relative sizes of the human karyotype,
on a light, unevenly lit, noisy background, with some chromosomes touching and some crossing, interphase
nuclei (round textured blobs, not annotated) and debris specks. Each box is the exact extent of the
pixels its chromosome darkens; nuclei and debris are kept clear of the boxes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from deepace.data.masks import CLASS_NAMES, RELATIVE_LENGTH
from deepace.data.records import ImageRecord

# Centromere position (short arm / total length) of each chromosome, approximately (ISCN).
CENTROMERE_INDEX: dict[int, float] = {
    1: 0.48, 2: 0.39, 3: 0.47, 4: 0.29, 5: 0.29, 6: 0.39, 7: 0.39, 8: 0.34, 9: 0.35, 10: 0.32,
    11: 0.40, 12: 0.30, 13: 0.17, 14: 0.18, 15: 0.18, 16: 0.43, 17: 0.33, 18: 0.30, 19: 0.46,
    20: 0.45, 21: 0.27, 22: 0.29, 23: 0.40, 24: 0.30,
}  # fmt: skip

_NAME_TO_CLASS = {name: value for value, name in CLASS_NAMES.items()}


@dataclass
class _Chromosome:
    cls: int
    alpha: np.ndarray  # coverage 0..1 over the crop (the rendered pixels are alpha > 0)
    darkness: np.ndarray  # optical density over the crop where alpha > 0
    y: int
    x: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.alpha.shape  # type: ignore[return-value]

    def box(self) -> np.ndarray:
        ys, xs = np.nonzero(self.alpha > 0)
        return np.array([self.x + xs.min(), self.y + ys.min(), self.x + xs.max() + 1, self.y + ys.max() + 1])


# ------------------------------------------------------------------------------------------- karyotype


def normal_karyotype(rng: np.random.Generator) -> list[int]:
    """The 46 chromosomes of a normal cell (classes 1..22, 23 = X, 24 = Y), male or female at random."""
    return [c for c in range(1, 23) for _ in range(2)] + [23, 24 if rng.random() < 0.5 else 23]


def cell_classes(rng: np.random.Generator, count: int) -> list[int]:
    """Classes of a cell of `count` chromosomes: a normal karyotype with chromosomes removed at random
    (count < 46) or extra copies added (count > 46)."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    classes = normal_karyotype(rng)
    if count <= len(classes):
        keep = rng.choice(len(classes), size=count, replace=False)
        return sorted(classes[i] for i in keep)
    extra = rng.integers(1, 23, size=count - len(classes))
    return sorted(classes + extra.tolist())


def karyotype_string(labels: list[str]) -> str:
    """An ISCN karyotype of the drawn classes against a normal diploid cell: `45,XY,-13`, `47,XX,+21`."""
    counts = {name: labels.count(name) for name in CLASS_NAMES.values()}
    sex = "X" * counts["X"] + "Y" * counts["Y"]
    changes = []
    for c in range(1, 23):
        diff = counts[str(c)] - 2
        changes += [f"-{c}"] * max(-diff, 0) + [f"+{c}"] * max(diff, 0)
    return ",".join([str(len(labels)), sex or "-"] + changes)


# ------------------------------------------------------------------------------------------- rendering


def _centerline(rng: np.random.Generator, length: float, step: float = 0.5) -> np.ndarray:
    """Points (y, x) every `step` pixels along a randomly bent curve of `length` pixels, centred on 0."""
    n = max(int(length / step), 2)
    s = np.linspace(-0.5, 0.5, n)
    bend = rng.normal(0.0, 1.4)  # total turn in radians
    wiggle = rng.normal(0.0, 0.35)
    heading = rng.uniform(0, 2 * np.pi) + bend * s + wiggle * np.sin(2 * np.pi * s + rng.uniform(0, 6.3))
    pts = np.cumsum(np.stack([np.sin(heading), np.cos(heading)], axis=1) * step, axis=0)
    return pts - pts.mean(axis=0)


def _band_profile(cls: int, n: int, seed: int) -> np.ndarray:
    """Optical density along a chromosome of class `cls`: G-bands that homologs share."""
    band_rng = np.random.default_rng(seed * 1000 + cls)
    t = np.linspace(0.0, 1.0, n)
    density = np.full(n, 0.55)
    bands = 3 + int(10 * RELATIVE_LENGTH[cls] / RELATIVE_LENGTH[1])
    for center in np.sort(band_rng.uniform(0.04, 0.96, bands)):
        width = band_rng.uniform(0.015, 0.05)
        density += band_rng.uniform(0.35, 0.8) * np.exp(-0.5 * ((t - center) / width) ** 2)
    return np.clip(density, 0.4, 1.3)


def _render_chromosome(
    rng: np.random.Generator, cls: int, length: float, half_width: float, band_seed: int
) -> _Chromosome:
    pts = _centerline(rng, length)
    n = len(pts)
    t = np.linspace(0.0, 1.0, n)
    centromere = CENTROMERE_INDEX[cls] if rng.random() < 0.5 else 1.0 - CENTROMERE_INDEX[cls]
    widths = half_width * (1.0 - 0.4 * np.exp(-0.5 * ((t - centromere) / 0.035) ** 2))
    widths *= 1.0 + rng.normal(0.0, 0.04)
    pad = half_width + 2.0
    lo = np.floor(pts.min(axis=0) - pad).astype(int)
    hi = np.ceil(pts.max(axis=0) + pad).astype(int)
    yy, xx = np.mgrid[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1]
    pix = np.stack([yy.ravel(), xx.ravel()], axis=1).astype(np.float32)
    d2 = ((pix[:, None, :] - pts[None, :, :].astype(np.float32)) ** 2).sum(-1)
    nearest = d2.argmin(axis=1)
    dist = np.sqrt(d2[np.arange(len(pix)), nearest]).reshape(yy.shape)
    nearest = nearest.reshape(yy.shape)
    w = widths[nearest]
    alpha = np.clip((w + 0.75 - dist) / 1.5, 0.0, 1.0)
    alpha[alpha < 0.25] = 0.0  # every rendered pixel visibly darker: the box is its exact extent
    groove = 1.0 - 0.25 * np.exp(-0.5 * (dist / (0.22 * w)) ** 2)  # between the sister chromatids
    darkness = _band_profile(cls, n, band_seed)[nearest] * groove
    return _Chromosome(cls=cls, alpha=alpha, darkness=darkness, y=int(lo[0]), x=int(lo[1]))


# ------------------------------------------------------------------------------------------- placement


class _Canvas:
    """Where chromosomes already lie (`taken`) and keep-out space around them (`near`)."""

    def __init__(self, shape: tuple[int, int], margin: int) -> None:
        self.shape = shape
        self.taken = np.zeros(shape, dtype=bool)
        self.near = np.zeros(shape, dtype=bool)
        self.margin = margin

    def window(self, chrom: _Chromosome) -> tuple[slice, slice] | None:
        h, w = chrom.shape
        if chrom.y < 1 or chrom.x < 1 or chrom.y + h > self.shape[0] - 1 or chrom.x + w > self.shape[1] - 1:
            return None
        return slice(chrom.y, chrom.y + h), slice(chrom.x, chrom.x + w)

    def fits(self, chrom: _Chromosome, mode: str) -> bool:
        """'free': clear of all others by the margin; 'touch': not overlapping but touching one;
        'cross': overlapping exactly one other, by a part of its area; 'any': inside the image."""
        win = self.window(chrom)
        if win is None:
            return False
        mask = chrom.alpha > 0
        if mode == "free":
            return not (self.near[win] & mask).any()
        if mode == "touch":
            ring = ndi.binary_dilation(mask, iterations=1) & ~mask
            return not (self.taken[win] & mask).any() and (self.taken[win] & ring).any()
        if mode == "cross":
            shared = (self.taken[win] & mask).sum()
            return 0 < shared < 0.35 * mask.sum()
        return True

    def add(self, chrom: _Chromosome) -> None:
        win = self.window(chrom)
        assert win is not None
        mask = chrom.alpha > 0
        self.taken[win] |= mask
        grown = _grow_window(win, self.shape, self.margin)
        local = np.zeros((grown[0].stop - grown[0].start, grown[1].stop - grown[1].start), dtype=bool)
        oy, ox = win[0].start - grown[0].start, win[1].start - grown[1].start
        local[oy : oy + mask.shape[0], ox : ox + mask.shape[1]] = mask
        self.near[grown] |= ndi.binary_dilation(local, iterations=self.margin)


def _grow_window(win: tuple[slice, slice], shape: tuple[int, int], margin: int) -> tuple[slice, slice]:
    return (
        slice(max(win[0].start - margin, 0), min(win[0].stop + margin, shape[0])),
        slice(max(win[1].start - margin, 0), min(win[1].stop + margin, shape[1])),
    )


def _place(
    rng: np.random.Generator,
    chrom: _Chromosome,
    canvas: _Canvas,
    placed: list[_Chromosome],
    mode: str,
    center: np.ndarray,
    radius: float,
    tries: int = 60,
) -> bool:
    h, w = chrom.shape
    for _ in range(tries):
        if mode in ("touch", "cross") and placed:
            other = placed[int(rng.integers(len(placed)))]
            ys, xs = np.nonzero(other.alpha > 0)
            k = int(rng.integers(len(ys)))
            cy, cx = other.y + ys[k], other.x + xs[k]
            spread = 0.5 * max(h, w) if mode == "touch" else 0.25 * max(h, w)
            cy, cx = cy + rng.normal(0, spread), cx + rng.normal(0, spread)
        else:
            r = radius * np.sqrt(rng.random())
            a = rng.uniform(0, 2 * np.pi)
            cy, cx = center[0] + r * np.sin(a), center[1] + r * np.cos(a)
        chrom.y, chrom.x = int(round(cy - h / 2)), int(round(cx - w / 2))
        if canvas.fits(chrom, mode):
            return True
    return False


def _place_all(
    rng: np.random.Generator,
    chromosomes: list[_Chromosome],
    shape: tuple[int, int],
    touching: float,
    crossing: float,
) -> list[_Chromosome]:
    """Lay the chromosomes out in a round spread; a fraction touch or cross one already placed. Every
    chromosome is placed (overlapping when the image is too crowded), fully inside the image."""
    canvas = _Canvas(shape, margin=3)
    footprint = sum(float((c.alpha > 0).sum()) for c in chromosomes)
    center = np.array(shape, dtype=float) / 2 + rng.normal(0, 0.03 * min(shape), 2)
    radius = min(np.sqrt(footprint / (0.22 * np.pi)), 0.45 * min(shape))
    placed: list[_Chromosome] = []
    for chrom in sorted(chromosomes, key=lambda c: -c.alpha.size):
        roll = rng.random()
        mode = "cross" if roll < crossing else "touch" if roll < crossing + touching else "free"
        ok = _place(rng, chrom, canvas, placed, mode, center, radius)
        ok = ok or _place(rng, chrom, canvas, placed, "free", center, 0.5 * min(shape), tries=200)
        ok = ok or _place(rng, chrom, canvas, placed, "any", center, 0.5 * min(shape), tries=500)
        if not ok:
            raise ValueError(f"cannot fit a chromosome of {chrom.shape} pixels into a {shape} image")
        canvas.add(chrom)
        placed.append(chrom)
    return placed


# ------------------------------------------------------------------------------------- clutter, lighting


def _nuclei(rng: np.random.Generator, shape: tuple[int, int], keep_out: np.ndarray, n: int) -> np.ndarray:
    """Optical density of `n` interphase nuclei (textured round blobs) clear of `keep_out`."""
    density = np.zeros(shape, dtype=np.float32)
    small = min(shape)
    for _ in range(n):
        r = rng.uniform(0.06, 0.11) * small
        for _ in range(30):
            cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
            y0, y1 = int(max(cy - r - 2, 0)), int(min(cy + r + 3, shape[0]))
            x0, x1 = int(max(cx - r - 2, 0)), int(min(cx + r + 3, shape[1]))
            if y1 - y0 < 4 or x1 - x0 < 4:
                continue
            yy, xx = np.mgrid[y0:y1, x0:x1]
            ecc = rng.uniform(0.8, 1.2)
            d = np.sqrt(((yy - cy) * ecc) ** 2 + ((xx - cx) / ecc) ** 2)
            blob = np.clip(r + 1.0 - d, 0.0, 1.0)
            if (keep_out[y0:y1, x0:x1] & (blob > 0)).any():
                continue
            texture = ndi.gaussian_filter(rng.normal(0, 1, blob.shape), 2.0)
            texture = 1.0 + 0.25 * texture / (texture.std() + 1e-6)
            density[y0:y1, x0:x1] += (blob * rng.uniform(0.5, 0.8) * texture).astype(np.float32)
            break
    return density


def _debris(rng: np.random.Generator, shape: tuple[int, int], keep_out: np.ndarray, n: int) -> np.ndarray:
    """Optical density of `n` small specks clear of `keep_out`."""
    density = np.zeros(shape, dtype=np.float32)
    for _ in range(n):
        r = rng.uniform(0.6, 2.2)
        cy, cx = rng.uniform(3, shape[0] - 3), rng.uniform(3, shape[1] - 3)
        y0, y1 = int(max(cy - r - 2, 0)), int(min(cy + r + 3, shape[0]))
        x0, x1 = int(max(cx - r - 2, 0)), int(min(cx + r + 3, shape[1]))
        yy, xx = np.mgrid[y0:y1, x0:x1]
        speck = np.clip(r + 0.5 - np.hypot(yy - cy, xx - cx), 0.0, 1.0)
        if (keep_out[y0:y1, x0:x1] & (speck > 0)).any():
            continue
        density[y0:y1, x0:x1] += (speck * rng.uniform(0.3, 1.0)).astype(np.float32)
    return density


def _illumination(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Uneven light background: a tilt plus a vignette, around 200-235 grey levels."""
    yy = np.linspace(-1.0, 1.0, shape[0], dtype=np.float32)[:, None]
    xx = np.linspace(-1.0, 1.0, shape[1], dtype=np.float32)[None, :]
    cy, cx = rng.uniform(-0.5, 0.5, 2)
    tilt = rng.uniform(-8, 8) * yy + rng.uniform(-8, 8) * xx
    vignette = rng.uniform(5, 18) * ((yy - cy) ** 2 + (xx - cx) ** 2) / 2
    return (rng.uniform(215, 230) + tilt - vignette).astype(np.float32)


# ------------------------------------------------------------------------------------------------- api


def make_spread(
    rng: np.random.Generator,
    count: int = 46,
    size: tuple[int, int] | int = (512, 512),
    *,
    chromosome_length: float | None = None,
    touching: float = 0.12,
    crossing: float = 0.05,
    nuclei: int | None = None,
    debris: int | None = None,
    noise: float = 4.0,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A synthetic brightfield metaphase spread: (uint8 image H x W, boxes (count, 4) float32 x1, y1, x2,
    y2 in pixel edges, class names "1".."22", "X", "Y").

    `size` is (height, width) or one side. `chromosome_length` is the length of chromosome 1 in pixels
    (default 11% of the shorter side; the others scale by their relative length). A fraction `touching`
    of the chromosomes is laid against another, a fraction `crossing` across another. `nuclei` (default
    0-2) interphase nuclei and `debris` (default 5-25) specks are drawn and not annotated.
    """
    shape = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))  # type: ignore[index]
    length1 = chromosome_length or 0.11 * min(shape)
    half_width = max(0.075 * length1, 1.5)
    band_seed = int(rng.integers(1 << 30))
    chromosomes = [
        _render_chromosome(rng, c, length1 * RELATIVE_LENGTH[c] / RELATIVE_LENGTH[1], half_width, band_seed)
        for c in cell_classes(rng, count)
    ]
    placed = _place_all(rng, chromosomes, shape, touching, crossing)

    canvas = _Canvas(shape, margin=3)
    transmit_log = np.zeros(shape, dtype=np.float32)
    for chrom in placed:
        canvas.add(chrom)
        win = canvas.window(chrom)
        transmit_log[win] += (chrom.alpha * chrom.darkness).astype(np.float32)
    n_nuclei = int(rng.integers(0, 3)) if nuclei is None else nuclei
    n_debris = int(rng.integers(5, 26)) if debris is None else debris
    transmit_log += _nuclei(rng, shape, canvas.near, n_nuclei)
    transmit_log += _debris(rng, shape, canvas.near, n_debris)

    image = _illumination(rng, shape) * np.exp(-transmit_log)
    image += rng.normal(0.0, noise, shape).astype(np.float32)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    boxes = np.stack([c.box() for c in placed]).astype(np.float32) if placed else np.zeros((0, 4), np.float32)
    labels = [CLASS_NAMES[c.cls] for c in placed]
    order = np.lexsort((boxes[:, 0], boxes[:, 1])) if len(boxes) else np.zeros(0, int)
    return image, boxes[order], [labels[i] for i in order]


def make_record(
    rng: np.random.Generator,
    path: str | Path,
    count: int = 46,
    size: tuple[int, int] | int = (512, 512),
    **kw,
) -> ImageRecord:
    """A spread written to `path` (PNG) and its ImageRecord (expected_count = count, karyotype)."""
    from PIL import Image

    image, boxes, labels = make_spread(rng, count=count, size=size, **kw)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return ImageRecord(
        path=path,
        boxes=boxes,
        labels=labels,
        width=image.shape[1],
        height=image.shape[0],
        expected_count=count,
        karyotype=karyotype_string(labels) if count >= 23 else None,
    )


def write_synthetic_dataset(
    out_dir: str | Path,
    n: int,
    count: int = 46,
    seed: int = 0,
    size: tuple[int, int] | int = (512, 512),
    **kw,
) -> Path:
    """`n` spreads as out_dir/images/synth_0000.png ... and out_dir/annotations.json (COCO, with
    expected_count and karyotype). Returns the json's path."""
    from deepace.data.coco import write_coco

    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    records = [
        make_record(rng, out_dir / "images" / f"synth_{i:04d}.png", count=count, size=size, **kw)
        for i in range(n)
    ]
    json_path = out_dir / "annotations.json"
    write_coco(records, json_path, image_root=out_dir)
    return json_path
