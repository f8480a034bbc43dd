"""deepace/data/levels.py: a brightfield spread's grey levels brought to the training images'."""

import numpy as np

from deepace.data.levels import grey_levels, normalised_levels

TARGET = (88.0, 253.0)


def spread(seed: int = 0) -> np.ndarray:
    """A light background (grey ~245) with dark banded chromosomes on about 6% of it."""
    rng = np.random.default_rng(seed)
    image = rng.normal(245, 2, (200, 240))
    for k in range(12):
        y, x = 10 + 15 * k, 20 + (37 * k) % 190
        image[y : y + 12, x : x + 20] = rng.uniform(70, 160, (12, 20))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def test_the_levels_are_the_dark_bands_and_the_background() -> None:
    dark, background = grey_levels(spread())
    assert 70 <= dark <= 90  # the darkest sixth of the chromosomes
    assert 243 <= background <= 247


def test_the_levels_land_on_the_target() -> None:
    dark, background = grey_levels(normalised_levels(spread(), TARGET))
    assert abs(dark - TARGET[0]) <= 1
    assert abs(background - TARGET[1]) <= 1


def test_a_dimmer_or_paler_copy_comes_out_as_the_original_does() -> None:
    original = spread()
    expected = normalised_levels(original, TARGET).astype(int)
    dimmer = np.rint(original * 0.8).astype(np.uint8)
    paler = np.rint(255 - (255 - original.astype(float)) * 0.7).astype(np.uint8)
    for changed in (dimmer, paler):
        assert np.abs(normalised_levels(changed, TARGET).astype(int) - expected).max() <= 3
        assert np.abs(changed.astype(int) - expected).max() > 30  # and it was far off before


def test_grey_order_is_kept() -> None:
    image = spread()
    out = normalised_levels(image, TARGET).astype(int)
    order = np.argsort(image.ravel(), kind="stable")
    assert (np.diff(out.ravel()[order]) >= 0).all()


def test_a_large_image_has_the_same_levels_in_every_orientation() -> None:
    # over a million pixels: a strided sample would see other pixels once the image is turned
    large = np.tile(spread(1), (6, 5))[:1201, :1199]
    assert large.size > 1_000_000
    levels = {grey_levels(np.rot90(large, k)) for k in range(4)} | {grey_levels(large[::-1])}
    assert len(levels) == 1


def test_a_blank_image_is_left_as_it_is() -> None:
    blank = np.full((50, 50), 240, dtype=np.uint8)
    blank[0, 0] = 235
    assert normalised_levels(blank, TARGET) is blank


def test_brightfield_files_are_read_at_the_levels_fluorescence_ones_as_before(tmp_path) -> None:  # noqa: ANN001
    from PIL import Image

    from deepace.data.dataset import prepare_image_and_stain
    from deepace.data.images import load_image_and_stain

    dim = np.rint(spread() * 0.8).astype(np.uint8)
    Image.fromarray(dim).save(tmp_path / "dim.png")
    Image.fromarray(255 - spread()).save(tmp_path / "dapi.png")
    gray, stain = load_image_and_stain(tmp_path / "dim.png", levels=TARGET)
    assert stain == "brightfield"
    assert abs(grey_levels(gray)[1] - TARGET[1]) <= 1
    assert (load_image_and_stain(tmp_path / "dim.png")[0] == dim).all()
    dapi, stain = load_image_and_stain(tmp_path / "dapi.png", levels=TARGET)
    assert stain == "fluorescence"
    assert (dapi == load_image_and_stain(tmp_path / "dapi.png")[0]).all()
    # training reads the same: the normalised background is now above the paper's 200 and turns white
    prepared, _ = prepare_image_and_stain(tmp_path / "dim.png", "auto", 200, TARGET)
    assert grey_levels(dim)[1] < 200 and grey_levels(prepared)[1] == 255


def test_the_detector_reads_brightfield_images_at_its_configured_levels(tmp_path) -> None:  # noqa: ANN001
    from PIL import Image

    from deepace.inference import Detector
    from tests.helpers_detection import RecordingModel, tiny_config

    path = tmp_path / "dim.png"
    Image.fromarray(np.rint(spread() * 0.8).astype(np.uint8)).save(path)
    backgrounds = {}
    for levels in (None, TARGET):
        model = RecordingModel()
        Detector(model, tiny_config(brightfield_levels=levels), score_threshold=0.5).detect(path)
        backgrounds[levels] = float(model.inputs[0].median())
    assert backgrounds[TARGET] == 1.0  # the background reaches the paper's white
    assert backgrounds[None] < 0.8
