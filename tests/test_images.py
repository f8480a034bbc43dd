from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from deepace.data.images import (
    ImageReadError,
    detect_stain,
    find_images,
    image_size,
    is_image_file,
    load_image,
    paper_preprocess,
    percentiles,
    read_raw,
    to_gray_uint8,
)
from tests.conftest import spread


def _gray(h: int = 20, w: int = 30) -> np.ndarray:
    return (np.arange(h * w).reshape(h, w) % 251).astype(np.uint8)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "TIFF"])
def test_read_8bit_grey_each_format(tmp_path: Path, fmt: str) -> None:
    img = _gray()
    path = tmp_path / "x.img"  # extension says nothing: the content decides
    Image.fromarray(img).save(path, format=fmt)
    arr = read_raw(path)
    assert arr.shape == img.shape and arr.dtype == np.uint8
    if fmt != "JPEG":
        assert np.array_equal(arr, img)
    else:
        assert np.abs(arr.astype(int) - img).mean() < 8


def test_read_png_saved_as_tif_by_content(tmp_path: Path) -> None:
    img = _gray()
    path = tmp_path / "really_png.tif"
    Image.fromarray(img).save(path, format="PNG")
    assert np.array_equal(read_raw(path), img)
    assert image_size(path) == (30, 20)


def test_read_rgb_tiff_and_png_to_luma(tmp_path: Path) -> None:
    rgb = np.zeros((10, 12, 3), np.uint8)
    rgb[..., 0] = 200  # pure red: luma 0.299 * 200 = 59.8
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    for name in ("rgb.tif", "rgb.png"):
        raw = read_raw(tmp_path / name)
        assert raw.shape == (10, 12, 3)
        gray = to_gray_uint8(raw)
        assert gray.shape == (10, 12) and gray.dtype == np.uint8
        assert np.all(gray == 60)


def test_read_16bit_tiff_is_stretched(tmp_path: Path) -> None:
    img = np.linspace(1000, 5000, 100 * 50).reshape(100, 50).astype(np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", img)
    raw = read_raw(tmp_path / "a.tif")
    assert raw.dtype == np.uint16 and np.array_equal(raw, img)
    gray = to_gray_uint8(raw)
    assert gray.dtype == np.uint8
    assert gray.min() == 0 and gray.max() == 255
    assert 120 <= gray[50, 25] <= 135  # the middle of the ramp stays in the middle
    assert np.all(np.diff(gray.ravel().astype(int)) >= 0)  # monotonic


def test_read_16bit_png(tmp_path: Path) -> None:
    img = np.linspace(0, 60000, 40 * 40).reshape(40, 40).astype(np.uint16)
    Image.fromarray(img).save(tmp_path / "a.png")
    raw = read_raw(tmp_path / "a.png")
    assert raw.dtype == np.uint16 and np.array_equal(raw, img)


def test_multipage_tiff_gives_first_page(tmp_path: Path) -> None:
    pages = np.stack([np.full((16, 16), 10, np.uint8), np.full((16, 16), 200, np.uint8)])
    tifffile.imwrite(tmp_path / "stack.tif", pages)
    assert read_raw(tmp_path / "stack.tif").shape == (2, 16, 16)
    gray = to_gray_uint8(read_raw(tmp_path / "stack.tif"))
    assert gray.shape == (16, 16) and np.all(gray == 10)


def test_palette_image_uses_palette(tmp_path: Path) -> None:
    im = Image.new("P", (8, 8), 3)
    im.putpalette([v for i in range(256) for v in (255 - i, 255 - i, 255 - i)])  # inverted grey palette
    im.save(tmp_path / "p.png")
    assert np.all(read_raw(tmp_path / "p.png") == 252)


def test_lzw_tiff_readable(tmp_path: Path) -> None:
    img = _gray()
    Image.fromarray(img).save(tmp_path / "lzw.tif", compression="tiff_lzw")
    assert np.array_equal(to_gray_uint8(read_raw(tmp_path / "lzw.tif")), img)


@pytest.mark.parametrize(
    "content, reason",
    [(None, "no such file"), (b"", "empty file"), (b"hello, not an image", "not a supported image")],
)
def test_read_errors_name_file_and_reason(tmp_path: Path, content: bytes | None, reason: str) -> None:
    path = tmp_path / "bad.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageReadError) as info:
        read_raw(path)
    assert info.value.path == path
    assert reason in info.value.reason
    text = str(info.value)
    assert text.startswith(f"{path}: ") and "\n" not in text


def test_truncated_jpeg_is_image_read_error(tmp_path: Path) -> None:
    Image.fromarray(_gray(200, 200)).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[:300])
    with pytest.raises(ImageReadError, match="cut.jpg: cannot decode JPEG"):
        read_raw(tmp_path / "cut.jpg")


def test_folder_is_not_an_image(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="folder"):
        read_raw(tmp_path)


def test_to_gray_uint8_keeps_8bit_levels_and_handles_bool() -> None:
    img = _gray()
    assert np.array_equal(to_gray_uint8(img), img)
    mask = np.zeros((5, 6), bool)
    mask[1, 2] = True
    out = to_gray_uint8(mask)
    assert out[1, 2] == 255 and out.sum() == 255


def test_to_gray_uint8_returns_8bit_grey_unchanged_and_contiguous() -> None:
    img = _gray()
    stack = np.stack([img, img[::-1]])
    assert np.array_equal(to_gray_uint8(stack), img)  # first page
    channel = np.dstack([img, 255 - img])  # grey + alpha: a strided first channel
    out = to_gray_uint8(channel)
    assert np.array_equal(out, img) and out.flags.c_contiguous and out.dtype == np.uint8


@pytest.mark.parametrize("size", [1, 2, 7, 1000, 65_537])
def test_percentiles_of_uint8_equal_numpys_to_the_bit(size: int) -> None:
    rng = np.random.default_rng(size)
    q = [0.0, 0.5, 12.3, 50.0, 77.7, 99.5, 100.0]
    for high in (1, 2, 9, 256):
        values = rng.integers(0, high, size=size).astype(np.uint8)
        assert np.array_equal(percentiles(values, q), np.percentile(values.astype(np.float64), q))
    floats = rng.normal(size=size)
    assert np.array_equal(percentiles(floats, q), np.percentile(floats, q))


def test_detect_stain_synthetic() -> None:
    bright = spread()
    assert detect_stain(bright) == "brightfield"
    assert detect_stain(255 - bright) == "fluorescence"
    dim = (spread(fluorescence=True) // 3).astype(np.uint8)  # dim fluorescence: all grey levels < 90
    assert detect_stain(dim) == "fluorescence"


def test_load_image_inverts_fluorescence(tmp_path: Path) -> None:
    fluo = (spread(fluorescence=True) // 2).astype(np.uint8)  # bright bars on dark, low contrast
    tifffile.imwrite(tmp_path / "dapi.tif", fluo)
    out = load_image(tmp_path / "dapi.tif")
    assert out.dtype == np.uint8 and out.shape == fluo.shape
    assert detect_stain(out) == "brightfield"
    assert np.median(out) > 200  # background light after auto-contrast + inversion
    assert out[12, 11] < 60  # a chromosome bar is dark
    forced = load_image(tmp_path / "dapi.tif", stain="brightfield")
    assert np.array_equal(forced, fluo)


def test_load_image_keeps_brightfield(tmp_path: Path) -> None:
    img = spread()
    Image.fromarray(img).save(tmp_path / "g.png")
    assert np.array_equal(load_image(tmp_path / "g.png"), img)
    inverted = load_image(tmp_path / "g.png", stain="fluorescence")
    assert inverted[12, 11] > 200


def test_load_image_bad_stain(tmp_path: Path) -> None:
    Image.fromarray(spread()).save(tmp_path / "g.png")
    with pytest.raises(ValueError, match="stain"):
        load_image(tmp_path / "g.png", stain="dapi")


def test_paper_preprocess() -> None:
    img = np.array([[0, 199, 200, 201, 255]], np.uint8)
    out = paper_preprocess(img)
    assert out.tolist() == [[0, 199, 200, 255, 255]]
    assert img.tolist() == [[0, 199, 200, 201, 255]]  # input untouched
    assert paper_preprocess(img, threshold=100).tolist() == [[0, 255, 255, 255, 255]]


def test_find_images_by_content(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    Image.fromarray(_gray()).save(tmp_path / "a" / "b" / "z.dat", format="PNG")
    Image.fromarray(_gray()).save(tmp_path / "a" / "y.jpg")
    tifffile.imwrite(tmp_path / "x.TIF", _gray())
    (tmp_path / "fake.png").write_text("not an image")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image either, and not named like one")
    found = find_images([tmp_path])
    # images by content (z.dat) and files named like images, readable or not, so a reader reports the
    # broken ones (fake.png, empty.jpg) instead of a case silently missing a cell
    assert found == sorted(
        [
            tmp_path / "a" / "b" / "z.dat",
            tmp_path / "a" / "y.jpg",
            tmp_path / "x.TIF",
            tmp_path / "fake.png",
            tmp_path / "empty.jpg",
        ]
    )
    assert is_image_file(tmp_path / "x.TIF") and not is_image_file(tmp_path / "fake.png")
    assert not is_image_file(tmp_path / "a") and not is_image_file(tmp_path / "missing.png")
    # a file named explicitly is kept so that its reader reports it; duplicates collapse
    assert find_images([tmp_path / "fake.png", tmp_path / "x.TIF", tmp_path / "x.TIF"]) == [
        tmp_path / "fake.png",
        tmp_path / "x.TIF",
    ]


def test_real_mfish_dapi_is_fluorescence(shared_data: Path) -> None:
    files = sorted((shared_data / "mfish").glob("*/*D.tif"))
    if not files:
        pytest.skip("no M-FISH images")
    for f in random.Random(0).sample(files, min(12, len(files))):
        gray = to_gray_uint8(read_raw(f))
        assert detect_stain(gray) == "fluorescence", f
        assert np.median(load_image(f)) > 200, f


def test_real_taichung_is_brightfield(shared_data: Path) -> None:
    files = sorted((shared_data / "taichung" / "images").glob("*.jpg"))
    if not files:
        pytest.skip("no Taichung images")
    for f in random.Random(0).sample(files, min(12, len(files))):
        gray = to_gray_uint8(read_raw(f))
        assert detect_stain(gray) == "brightfield", f
        assert np.array_equal(load_image(f), gray), f
