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
