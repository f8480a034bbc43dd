"""deepace/data/noise.py: pixel noise measured, and taken out of images far noisier than the training ones."""

import numpy as np
import pytest
from PIL import Image

from deepace.data.noise import denoised_and_noise, noise_sigma

LIMIT = 4.0


def spread() -> np.ndarray:
    """A clean 200 × 240 spread: a smooth light background with dark banded bars (sharp edges)."""
    yy, xx = np.mgrid[0:200, 0:240]
    image = 235 + 15 * np.sin(xx / 60.0) * np.cos(yy / 80.0)
    for k in range(10):
        y, x = 12 + 17 * k, 15 + (41 * k) % 190
        image[y : y + 12, x : x + 24] = np.where((np.arange(24) // 4) % 2, 80, 130)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def noisy(sigma: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, (200, 240))
    return np.clip(np.rint(spread() + noise), 0, 255).astype(np.uint8)


def test_noise_sigma_measures_added_noise_and_not_the_image() -> None:
    assert noise_sigma(spread()) < 1.5  # bands and edges are structure, not noise
    for sigma in (4.0, 8.0, 16.0):
        assert noise_sigma(noisy(sigma)) == pytest.approx(sigma, rel=0.15)
    assert noise_sigma(np.zeros((2, 50), np.uint8)) == 0.0  # too small to measure


def test_images_as_clean_as_the_training_ones_are_left_exactly_as_they_are() -> None:
    clean = spread()
    out, noise = denoised_and_noise(clean, LIMIT)
    assert out is clean and noise is None
    slightly = noisy(2.0)
    out, noise = denoised_and_noise(slightly, LIMIT)
    assert out is slightly and noise is None
    very = noisy(10.0)
    out, noise = denoised_and_noise(very, None)  # switched off
    assert out is very and noise is None


def test_noise_far_above_the_limit_is_taken_out_and_the_chromosomes_kept() -> None:
    very = noisy(10.0)
    out, noise = denoised_and_noise(very, LIMIT)
    assert noise == noise_sigma(very)
    assert out.dtype == np.uint8 and out.shape == very.shape
    error_before = np.abs(very.astype(float) - spread()).mean()
    error_after = np.abs(out.astype(float) - spread()).mean()
    assert error_after < 0.5 * error_before
    assert noise_sigma(out) < 0.5 * noise_sigma(very)
    # the dark bars are where they were: the pixels under grey 150 are those of the clean spread
    assert ((out < 150) == (spread() < 150)).mean() > 0.99


def test_the_detector_reads_noisy_images_denoised_as_configured(tmp_path) -> None:  # noqa: ANN001
    from deepace.inference import Detector
    from tests.helpers_detection import RecordingModel, tiny_config

    path = tmp_path / "noisy.png"
    Image.fromarray(noisy(10.0)).save(path)
    seen = {}
    for above in (None, LIMIT):
        model = RecordingModel()
        config = tiny_config(denoise_above=above, brightfield_levels=None, preprocess_threshold=None)
        Detector(model, config, score_threshold=0.5).detect(path)
        seen[above] = model.inputs[0][0].numpy() * 255.0
    assert noise_sigma(seen[None]) > 8.0
    assert noise_sigma(seen[LIMIT]) < 4.0


def test_training_reads_images_as_counting_does(tmp_path) -> None:  # noqa: ANN001
    from deepace.data.dataset import prepare_image_and_stain
    from deepace.data.images import load_image_and_stain

    path = tmp_path / "noisy.png"
    Image.fromarray(noisy(10.0)).save(path)
    read, _ = load_image_and_stain(path, denoise_above=LIMIT)
    prepared, _ = prepare_image_and_stain(path, "auto", None, None, LIMIT)
    np.testing.assert_array_equal(read, prepared)
    np.testing.assert_array_equal(read, denoised_and_noise(noisy(10.0), LIMIT)[0])


def test_counting_says_which_images_were_denoised(tmp_path) -> None:  # noqa: ANN001
    from rich.console import Console

    from deepace.cli.count_cmd import note_denoised_images
    from deepace.inference import Counter, save_model
    from deepace.models.detector import build_detector
    from tests.helpers_detection import tiny_config

    Image.fromarray(noisy(10.0)).save(tmp_path / "noisy.png")
    Image.fromarray(spread()).save(tmp_path / "clean.png")
    config = tiny_config()
    assert config.model.denoise_above == LIMIT  # the default
    save_model(tmp_path / "tiny.pt", build_detector(config.model), config, score_threshold=0.3)
    counter = Counter(tmp_path / "tiny.pt")
    noisy_result, clean_result = counter.count_paths([tmp_path / "noisy.png", tmp_path / "clean.png"], False)
    assert noisy_result.denoised_noise == pytest.approx(10.0, rel=0.15)
    assert clean_result.denoised_noise is None
    console = Console(record=True, width=200)
    note_denoised_images([noisy_result, clean_result], console)
    text = console.export_text()
    assert "1 noisy image(s)" in text and "noisy.png" in text and "clean.png" not in text


def test_a_case_keeps_which_images_were_denoised(tmp_path) -> None:  # noqa: ANN001
    from deepace.inference import CellResult
    from deepace.report.case import read_model_json, summarize_case, write_model_json
    from deepace.report.page import _badges

    results = [
        CellResult(tmp_path / "noisy.png", 80, 60, denoised_noise=9.7),
        CellResult(tmp_path / "plain.png", 80, 60),
    ]
    write_model_json(tmp_path, results)
    back = read_model_json(tmp_path)
    assert back["noisy.png"].denoised_noise == 9.7 and back["plain.png"].denoised_noise is None
    summary = summarize_case("case", back, {})
    assert [c.denoised_noise for c in summary.cells] == [9.7, None]
    (flag,) = [f for f in summary.flags if f.code == "NOISY_IMAGES"]
    assert (
        flag.severity == "info" and "1 cell was noisy" in flag.message and "noisy.png (σ 9.7)" in flag.message
    )
    assert "NOISY_IMAGES" not in {
        f.code for f in summarize_case("case", {"plain.png": back["plain.png"]}, {}).flags
    }
    assert "noisy, denoised" in _badges(summary.cells[0]) and "denoised" not in _badges(summary.cells[1])
