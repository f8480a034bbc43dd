"""benchmarks/case_level.py: simulated cases, constitutional and mosaic, on hand-made counts."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "case_level.py"
spec = importlib.util.spec_from_file_location("case_level", SCRIPT)
case_level = importlib.util.module_from_spec(spec)
spec.loader.exec_module(case_level)


def rate(rows: list[dict[str, float]], key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


def test_a_perfect_counter_reads_every_case_as_its_recorded_counts() -> None:
    recorded = np.array([46] * 30 + [45, 47] * 3)
    rows, hidden = case_level.simulate_cases(recorded, recorded.copy(), cells=20, cases=50, seed=1)
    assert rows["model"] == rows["recorded"]
    assert hidden == [0] * 50
    assert all(r["mode"] == 46 for r in rows["recorded"])


def test_a_constitutional_gain_shifts_every_cell() -> None:
    recorded = np.full(40, 46)
    model = recorded.copy()
    model[:4] = 45  # four cells undercounted by one
    rows, hidden = case_level.simulate_cases(recorded, model, cells=20, cases=100, seed=0, shift=1)
    assert all(r["mode"] == 47 and r["abnormal_mode"] == 1 for r in rows["recorded"])
    assert rate(rows["recorded"], "clone_gain") == 0 and rate(rows["recorded"], "off_mode") == 0
    # the undercounted cells sit at 46, one below the mode: shown as off the mode, never hidden at it
    assert all(h == 0 for h in hidden)
    assert rate(rows["model"], "off_mode") > 0


def test_a_mosaic_shifts_only_its_share_of_the_cells() -> None:
    recorded = np.full(40, 46)
    rows, _ = case_level.simulate_cases(
        recorded, recorded.copy(), cells=20, cases=100, shift=1, shifted_cells=3
    )
    # 3 of 20 cells at 47: the case stays 46, the clone rule (two cells with the same gain) fires every time
    assert all(r["mode"] == 46 and r["off_mode"] == 3 for r in rows["recorded"])
    assert rate(rows["recorded"], "clone_gain") == 1 and rate(rows["recorded"], "abnormal_mode") == 0
    loss, _ = case_level.simulate_cases(
        recorded, recorded.copy(), cells=20, cases=10, shift=-1, shifted_cells=2
    )
    assert rate(loss["recorded"], "clone_loss") == 0  # two losses are not yet a clone (three are)


def test_mosaic_arguments_are_checked(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    for args in (
        ["--mosaic", "0.2"],  # no shift
        ["--shift", "1", "--mosaic", "0.5"],  # half the cells: no longer a mosaic of a 46 patient
        ["--shift", "1", "--mosaic", "0.01"],  # not one cell of 20
    ):
        monkeypatch.setattr(sys, "argv", ["case_level.py", "--gt", "x.json", "--pred", "y.json", *args])
        with pytest.raises(SystemExit) as stop:
            case_level.main()
        assert stop.value.code == 2
        assert "--mosaic needs --shift" in capsys.readouterr().err
