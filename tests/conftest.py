"""Shared test fixtures: where the real data sets live (skip when absent) and small synthetic images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """../shared/data of the checkout; the test is skipped where the real data sets are not there."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


def spread(h: int = 60, w: int = 80, fluorescence: bool = False, seed: int = 0) -> np.ndarray:
    """A tiny synthetic metaphase-like uint8 image: a few bars on a plain background."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w), 225, np.uint8) + rng.integers(0, 10, (h, w), dtype=np.uint8)
    for y, x in ((10, 10), (30, 40), (15, 60), (40, 12)):
        img[y : y + 12, x : x + 4] = 60 + rng.integers(0, 20)
    return 255 - img if fluorescence else img


@pytest.fixture
def make_spread():
    return spread


@pytest.fixture(autouse=True, scope="session")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory):
    """Backbones exported for ONNX Runtime in the tests go to a folder of this run, not the user's cache."""
    import os

    before = os.environ.get("DEEPACE_CACHE")
    os.environ["DEEPACE_CACHE"] = str(tmp_path_factory.mktemp("deepace-cache"))
    yield Path(os.environ["DEEPACE_CACHE"])
    if before is None:
        os.environ.pop("DEEPACE_CACHE", None)
    else:
        os.environ["DEEPACE_CACHE"] = before
