"""Reading metaphase images of any common lab format into one grey, brightfield-looking uint8 array.

Formats are recognised by their content (magic bytes), never by the file extension. TIFF goes through
tifffile, with Pillow as fallback (tifffile needs the optional `imagecodecs` package for LZW and JPEG
compressed TIFFs, which Pillow reads itself); PNG, JPEG and BMP go through Pillow.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

STAINS = ("auto", "brightfield", "fluorescence")

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),  # BigTIFF
    (b"MM\x00+", "tiff"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"BM", "bmp"),
)


class ImageReadError(Exception):
    """An image file that cannot be read; str() is one line: 'PATH: reason'."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        self.reason = " ".join(str(reason).split())  # keep it on one line
        super().__init__(f"{self.path}: {self.reason}")


def image_kind(path: str | os.PathLike[str]) -> str | None:
    """'tiff', 'png', 'jpeg' or 'bmp' from the file's first bytes; None if not an image we read."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return None
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            if kind == "bmp" and len(head) < 14:
                return None
            return kind
    return None


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """True for a readable regular file whose content starts like a TIFF, PNG, JPEG or BMP."""
    p = Path(path)
    return p.is_file() and image_kind(p) is not None


# A file named like an image but not readable as one (truncated, corrupt) is listed by find_images, so
# that counting reports it as a failure instead of silently leaving a cell out of a case.
IMAGE_SUFFIXES = frozenset({".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp"})


def find_images(paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str]) -> list[Path]:
    """Image files among `paths`, folders searched recursively (by content), sorted and de-duplicated.

    Files named explicitly, and files in folders with an image extension, are kept even if they are no
    image (or missing), so that the caller's reader reports them by name instead of silently skipping
    them. Hidden files and folders are skipped.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found: set[Path] = set()
    for entry in paths:
        p = Path(entry)
        if p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                for name in files:
                    f = Path(root) / name
                    named_like_image = f.suffix.lower() in IMAGE_SUFFIXES
                    if not name.startswith(".") and (named_like_image or is_image_file(f)):
                        found.add(f)
        else:
            found.add(p)
    return sorted(found)


def _check_file(p: Path) -> str:
    if not p.exists():
        raise ImageReadError(p, "no such file")
    if p.is_dir():
        raise ImageReadError(p, "is a folder, not an image file")
    try:
        size = p.stat().st_size
    except OSError as e:
        raise ImageReadError(p, f"cannot read: {e.strerror or e}") from e
    if size == 0:
        raise ImageReadError(p, "empty file")
    if not os.access(p, os.R_OK):
        raise ImageReadError(p, "permission denied")
    kind = image_kind(p)
    if kind is None:
        raise ImageReadError(p, "not a supported image (TIFF, PNG, JPEG or BMP expected)")
    return kind


def _pil_to_array(im: Image.Image) -> np.ndarray:
    if im.mode == "P":
        pal = np.asarray(im.getpalette() or [], dtype=np.uint8).reshape(-1, 3)
        grey_palette = len(pal) > 0 and bool(
            np.all(pal[:, 0] == pal[:, 1]) and np.all(pal[:, 1] == pal[:, 2])
        )
        im = im.convert("L" if grey_palette else "RGB")
    elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV", "PA"):
        im = im.convert("RGB")
    elif im.mode == "1":
        im = im.convert("L")
    elif im.mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16)
    return np.asarray(im)


def _read_pil(p: Path) -> np.ndarray:
    with Image.open(p) as im:
        n = getattr(im, "n_frames", 1)
        if n <= 1:
            im.load()
            return _pil_to_array(im)
        pages = []
        for i in range(n):
            im.seek(i)
            pages.append(_pil_to_array(im))
        if all(pg.shape == pages[0].shape for pg in pages):
            return np.stack(pages)
        return pages[0]


def _read_tiff(p: Path) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(p) as tif:
            return np.asarray(tif.asarray())
    except Exception as tiff_error:  # e.g. LZW without imagecodecs: let Pillow try
        try:
            return _read_pil(p)
        except Exception:
            raise tiff_error from None


def read_raw(path: str | os.PathLike[str]) -> np.ndarray:
    """The image's pixels as stored: (H,W), (H,W,C) or for multi-page TIFF (pages,H,W[,C]).

    Raises ImageReadError for missing, empty, unsupported or undecodable files.
    """
    p = Path(path)
    kind = _check_file(p)
    try:
        arr = _read_tiff(p) if kind == "tiff" else _read_pil(p)
    except ImageReadError:
        raise
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise ImageReadError(p, f"cannot decode {kind.upper()}: {e}") from e
    except Exception as e:  # decoders raise many kinds of errors on broken data
        raise ImageReadError(p, f"cannot decode {kind.upper()}: {type(e).__name__}: {e}") from e
    if arr.size == 0 or arr.ndim < 2:
        raise ImageReadError(p, f"no pixels (shape {arr.shape})")
    return arr


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(width, height) from the header where possible, without decoding all pixels."""
    p = Path(path)
    kind = _check_file(p)
    try:
        if kind == "tiff":
            import tifffile

            with tifffile.TiffFile(p) as tif:
                page = tif.pages[0]
                return int(page.imagewidth), int(page.imagelength)
        with Image.open(p) as im:
            return int(im.width), int(im.height)
    except Exception as e:
        raise ImageReadError(p, f"cannot read the image size: {e}") from e


def percentiles(values: np.ndarray, q: list[float]) -> np.ndarray:
    """np.percentile(values, q) (its default, linear interpolation), from a histogram when `values` are
    uint8: the same numbers, without sorting a spread's million pixels for each call."""
    v = np.asarray(values)
    if v.dtype != np.uint8 or v.size == 0:
        return np.percentile(v.astype(np.float64, copy=False), q)
    cumulative = np.cumsum(np.bincount(v.ravel(), minlength=256))
    position = np.asarray(q, dtype=np.float64) / 100.0 * (v.size - 1)
    below = np.floor(position)
    # the k-th smallest value (from 0) is the first grey level whose cumulative count exceeds k
    low = np.searchsorted(cumulative, below, side="right").astype(np.float64)
    high = np.searchsorted(cumulative, np.minimum(below + 1, v.size - 1), side="right").astype(np.float64)
    fraction = position - below
    difference = high - low  # interpolated as numpy does (from the upper end past half), to the last bit
    return np.where(fraction >= 0.5, high - difference * (1 - fraction), low + difference * fraction)


def sampled(gray: np.ndarray, max_pixels: int = 1_000_000) -> np.ndarray:
    """`gray` itself, or a strided sample of about `max_pixels` of it: plenty for a few percentiles. uint8
    images are never sampled: `percentiles` reads them from a histogram in linear time, and the whole image
    gives the same levels in every orientation (a strided sample does not)."""
    if gray.size <= max_pixels or gray.dtype == np.uint8:
        return gray
    step = int(np.ceil(np.sqrt(gray.size / max_pixels)))
    return gray[::step, ::step]


def _stretch(x: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Robust percentile stretch to uint8: `low`..`high` percentiles map to 0..255."""
    finite = x.ravel() if x.dtype == np.uint8 else x[np.isfinite(x)]
    x = x.astype(np.float64, copy=False)
    if finite.size == 0:
        return np.zeros(x.shape, dtype=np.uint8)
    lo, hi = percentiles(finite, [low, high])
    if hi <= lo:
        lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        return np.zeros(x.shape, dtype=np.uint8)
    out = (np.nan_to_num(x, nan=lo) - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _to_single_plane(arr: np.ndarray) -> np.ndarray:
    """One (H,W) plane: luma of RGB(A), first channel of grey+alpha, first page of a stack."""
    a = np.asarray(arr)
    while a.ndim > 3:  # (pages, H, W, C) or deeper stacks: first page
        a = a[0]
    if a.ndim == 3:
        if a.shape[-1] <= 4 and a.shape[0] > 4:  # channels last
            c = a.shape[-1]
            if c >= 3:
                rgb = a[..., :3].astype(np.float64)
                return rgb @ np.array([0.299, 0.587, 0.114])
            return a[..., 0]
        if a.shape[0] == 3 and a.shape[-1] > 4:  # channels first RGB
            return np.tensordot(np.array([0.299, 0.587, 0.114]), a.astype(np.float64), axes=1)
        return a[0]  # pages / channels first: first page
    return a


def to_gray_uint8(arr: np.ndarray) -> np.ndarray:
    """(H,W) uint8 from any array `read_raw` returns.

    RGB becomes luma (ITU-R 601); 8-bit data keeps its grey levels; 16-bit, float and other integer data is
    stretched between the 0.5 and 99.5 percentiles; boolean masks become 0/255. Multi-page stacks give
    their first page.
    """
    src = np.asarray(arr)
    if src.ndim < 2 or src.size == 0:
        raise ValueError(f"expected an image array, got shape {src.shape}")
    plane = _to_single_plane(src)
    if src.dtype == np.bool_:
        return np.where(plane.astype(bool), 255, 0).astype(np.uint8)
    if src.dtype == np.uint8:
        if plane.dtype == np.uint8:  # grey levels as they are (rounding them again cost 40 ms a spread)
            return np.ascontiguousarray(plane)
        return np.clip(np.rint(plane), 0, 255).astype(np.uint8)
    return _stretch(plane)


def detect_stain(gray: np.ndarray) -> str:
    """'fluorescence' (bright objects on a dark background) or 'brightfield' (dark objects on light).

    The background is the majority of pixels, so the median is a background level: where it sits in the
    robust range of grey levels (0.5-99.5 percentiles) tells dark from light background.
    """
    g = np.asarray(gray)
    if g.ndim != 2:
        g = to_gray_uint8(g)
    lo, med, hi = percentiles(sampled(g), [0.5, 50.0, 99.5])
    if hi - lo < 1e-9:
        return "brightfield" if med >= 128 else "fluorescence"
    position = (med - lo) / (hi - lo)
    return "fluorescence" if position < 0.5 else "brightfield"


def load_image(path: str | os.PathLike[str], stain: str = "auto") -> np.ndarray:
    """(H,W) uint8 that looks like a brightfield G-banded spread: dark chromosomes on a light background.

    `stain` is 'auto' (detect), 'brightfield' (grey levels kept) or 'fluorescence' (auto-contrast, then
    inverted so chromosomes become dark).
    """
    return load_image_and_stain(path, stain)[0]


def load_image_and_stain(
    path: str | os.PathLike[str],
    stain: str = "auto",
    levels: tuple[float, float] | None = None,
    denoise_above: float | None = None,
) -> tuple[np.ndarray, str]:
    """`load_image`, also returning the stain it was read as ('brightfield' or 'fluorescence'). `levels`:
    (dark, background) grey levels a brightfield image is mapped onto (deepace/data/levels.py,
    `ModelConfig.brightfield_levels`); None keeps its own. `denoise_above`: the noise level above which the
    grey image is denoised first (deepace/data/noise.py, `ModelConfig.denoise_above`); None never."""
    gray, stain, _ = read_as_model(path, stain, levels, denoise_above)
    return gray, stain


def read_as_model(
    path: str | os.PathLike[str],
    stain: str = "auto",
    levels: tuple[float, float] | None = None,
    denoise_above: float | None = None,
) -> tuple[np.ndarray, str, float | None]:
    """`load_image_and_stain`, also returning the image's noise σ when it was denoised (else None)."""
    if stain not in STAINS:
        raise ValueError(f"stain must be one of {', '.join(STAINS)}, not {stain!r}")
    gray = to_gray_uint8(read_raw(path))
    noise = None
    if denoise_above is not None:
        from deepace.data.noise import denoised_and_noise

        gray, noise = denoised_and_noise(gray, denoise_above)
    if stain == "auto":
        stain = detect_stain(gray)
    if stain == "fluorescence":
        return 255 - _stretch(gray), stain, noise
    if levels is not None:
        from deepace.data.levels import normalised_levels  # it reads this module's percentiles

        gray = normalised_levels(gray, levels)
    return gray, stain, noise


def rescale_gray(gray: np.ndarray, factor: float) -> np.ndarray:
    """Resize an (H, W) uint8 image by `factor` (bilinear); factor 1 returns it unchanged."""
    if factor == 1.0:
        return gray
    h, w = gray.shape
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return np.asarray(Image.fromarray(np.ascontiguousarray(gray)).resize(size, Image.Resampling.BILINEAR))


def paper_preprocess(gray: np.ndarray, threshold: int | None = 200) -> np.ndarray:
    """The paper's §3.2 clean-up: grey levels above `threshold` become white (255); None (the clean-up
    switched off, `model.preprocess_threshold`) leaves them. Returns a new array."""
    out = np.array(gray, copy=True)
    if threshold is not None:
        out[out > threshold] = 255
    return out
