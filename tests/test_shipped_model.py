"""The shipped model file: present, self-describing, and counting the bundled examples sensibly.

A smoke test of the file itself (a wrong or corrupted file would count nonsense); accuracy is measured on
the validation splits in BENCHMARKS.md, not here."""

from pathlib import Path

import torch

from deepace.cli.count_cmd import EXAMPLES_DIR
from deepace.inference import DEFAULT_WEIGHTS, Counter


def test_shipped_model_file_is_complete_and_small() -> None:
    assert DEFAULT_WEIGHTS.exists()
    assert DEFAULT_WEIGHTS.stat().st_size < 60e6
    payload = torch.load(DEFAULT_WEIGHTS, map_location="cpu", weights_only=False)
    assert payload["format"] == "deepace-model/1"
    assert set(payload["stain_thresholds"]) == {"brightfield", "fluorescence"}
    assert (DEFAULT_WEIGHTS.parent / "MODEL_CARD.md").exists()


def test_shipped_model_counts_the_examples_near_46() -> None:
    counter = Counter()
    for name in ("taichung_104062.jpg", "A0501XYD.tif"):  # both 46,XX/XY cells from the validation splits
        result = counter.count_image(Path(EXAMPLES_DIR) / name)
        assert result.error is None
        assert 42 <= result.count <= 50, (name, result.count)


def test_shipped_model_counts_nothing_on_blank_images(tmp_path: Path) -> None:
    """Before boxes needed ink (deepace/blank_boxes.py) it counted 131 chromosomes on an all-white image,
    and an all-black one stopped the run."""
    import numpy as np
    from PIL import Image

    counter = Counter()
    for grey in (255, 0):
        path = tmp_path / f"blank{grey}.png"
        Image.fromarray(np.full((600, 800), grey, np.uint8)).save(path)
        result = counter.count_image(path)
        assert result.error is None and result.count == 0, (grey, result.count)


def test_magnification_recovers_a_spread_with_smaller_chromosomes(tmp_path: Path) -> None:
    """The bundled synthetic spread drawn at 640 px instead of 1024 (chromosomes 0.6x as long): counted as
    it is, the model misses many; enlarged 1.6x (`--magnification 1.6`) it counts it as at full size."""
    import numpy as np
    from PIL import Image

    from deepace.data.synth import make_spread

    image, boxes, _ = make_spread(np.random.default_rng(7), 46, 640)
    path = tmp_path / "small.png"
    Image.fromarray(image).save(path)
    counter = Counter(stain="brightfield")
    as_is = counter.count_image(path).count
    counter.magnification = 1.6
    enlarged = counter.count_image(path).count
    assert abs(enlarged - len(boxes)) <= 3, (as_is, enlarged)
    assert abs(enlarged - len(boxes)) < abs(as_is - len(boxes)), (as_is, enlarged)
