"""benchmarks/threshold_orientations.py: thresholds tuned on one orientation or on all, hand-made scores."""

import importlib.util
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "threshold_orientations.py"
spec = importlib.util.spec_from_file_location("threshold_orientations", SCRIPT)
threshold_orientations = importlib.util.module_from_spec(spec)
spec.loader.exec_module(threshold_orientations)


def _cells(n: int) -> tuple[list[list[np.ndarray]], np.ndarray]:
    """Cells of 4 chromosomes and one false box. As they lie (orientation 0) the 4th chromosome scores 0.9
    or 0.5 and the false box 0.3; in the seven other orientations they score 0.45 and 0.4."""
    cells = []
    for c in range(n):
        as_is = np.array([0.9, 0.9, 0.9, 0.5 if c % 2 else 0.9, 0.3], dtype=np.float32)
        others = [np.array([0.9, 0.9, 0.9, 0.45, 0.4], dtype=np.float32) for _ in range(7)]
        cells.append([as_is, *others])
    return cells, np.full(n, 4)


def test_a_threshold_tuned_on_every_orientation_fits_every_orientation() -> None:
    scores, truth = _cells(10)
    as_is = threshold_orientations.tuned(scores, truth, [0])
    every = threshold_orientations.tuned(scores, truth, range(8))
    assert as_is == 0.5  # exact for any t in (0.3, 0.5]; ties go to the one closest to 0.5
    assert threshold_orientations.exact_share(scores, truth, as_is, [0]) == 100.0
    assert threshold_orientations.exact_share(scores, truth, as_is, range(8)) == 12.5  # wrong when turned
    assert 0.4 < every <= 0.45  # the only thresholds exact in every orientation
    assert threshold_orientations.exact_share(scores, truth, every, range(8)) == 100.0


def test_halvings_score_each_threshold_on_the_cells_it_was_not_tuned_on(tmp_path: Path) -> None:
    scores, truth = _cells(12)
    runs = threshold_orientations.halvings(scores, truth, repeats=5)
    assert all(len(v) == 5 for v in runs.values())
    assert all(v == 100.0 for v in runs["all_on_all"])
    assert all(v == 100.0 for v in runs["as_is_on_as_is"])
    threshold_orientations.save(tmp_path / "s.npz", scores)
    loaded = threshold_orientations.load(tmp_path / "s.npz")
    assert all(
        np.array_equal(a, b)
        for ca, cb in zip(scores, loaded, strict=True)
        for a, b in zip(ca, cb, strict=True)
    )
