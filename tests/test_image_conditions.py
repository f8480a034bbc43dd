"""benchmarks/image_conditions.py: the imaging conditions keep the boxes where the chromosomes are."""

import importlib.util
from pathlib import Path

import numpy as np

from deepace.data.images import load_image
from deepace.views import turned_boxes

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "image_conditions.py"
spec = importlib.util.spec_from_file_location("image_conditions", SCRIPT)
image_conditions = importlib.util.module_from_spec(spec)
spec.loader.exec_module(image_conditions)


def spread() -> np.ndarray:
    """A light background (grey 240) with one dark, upright chromosome at x 10-14, y 5-35."""
    image = np.full((40, 60), 240, dtype=np.uint8)
    image[5:35, 10:14] = 60
    return image


def test_a_turned_box_still_holds_its_chromosome() -> None:
    image = spread()
    turned = image_conditions.CONDITIONS["turned"][0](image, 0)  # the benchmark's quarter turn
    x1, y1, x2, y2 = turned_boxes(np.array([[10.0, 5.0, 14.0, 35.0]]), image.shape, 1)[0]
    assert (x1, y1, x2, y2) == (5.0, 46.0, 35.0, 50.0)
    inside = turned[int(y1) : int(y2), int(x1) : int(x2)]
    assert (inside == 60).all()
    assert (turned == 60).sum() == inside.size  # and nothing of it is outside


def test_each_condition_is_read_back_at_the_image_size(tmp_path: Path) -> None:
    image = spread()
    for name, (change, suffix, _) in image_conditions.CONDITIONS.items():
        changed = change(image, 0)
        path = image_conditions.save_condition(changed, suffix, tmp_path / name)
        read = load_image(path, "brightfield")
        assert read.shape == changed.shape, name
        if name in ("original", "uint16"):
            # lossless conditions: the grey levels come back (16-bit data is stretched, order kept)
            assert (read[5:35, 10:14] < read[0, 0]).all(), name
        if name == "original":
            assert (read == image).all()


def noisy_spread() -> tuple[np.ndarray, np.ndarray]:
    """A clean 80 × 120 spread with one dark chromosome at x 20-28, y 10-70, and it with `noise8`'s noise."""
    image = np.full((80, 120), 240, dtype=np.uint8)
    image[10:70, 20:28] = 60
    return image, image_conditions.CONDITIONS["noise8"][0](image, 3)


def test_each_denoiser_takes_noise_out_and_keeps_the_chromosome() -> None:
    from deepace.data.noise import noise_sigma

    image, noisy = noisy_spread()
    for name, (denoise, _) in image_conditions.DENOISERS.items():
        clean = image_conditions.CONDITIONS[f"noise8+{name}"][0](image, 3)
        assert (clean == denoise(noisy)).all(), name  # the same noise as `noise8`, then the method
        assert noise_sigma(clean) < 0.75 * noise_sigma(noisy), name
        assert clean[15:65, 21:27].mean() < 90 and clean[:8].mean() > 220, name


def test_the_counters_own_denoising_is_the_benchmarks_one_pixel_for_pixel() -> None:
    from deepace.data.noise import denoised_and_noise

    _, noisy = noisy_spread()
    ours, noise = denoised_and_noise(noisy, 4.0)
    assert noise is not None
    assert (ours == image_conditions.DENOISERS["gauss1.0"][0](noisy)).all()
