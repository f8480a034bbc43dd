"""benchmarks/view_chance.py: the readings of a cell's orientations, on hand-made scores."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "view_chance.py"
spec = importlib.util.spec_from_file_location("view_chance", SCRIPT)
view_chance = importlib.util.module_from_spec(spec)
spec.loader.exec_module(view_chance)


def test_each_reading_of_five_orientations() -> None:
    sure = [1.0] * 46
    cell = {
        "threshold": 0.5,
        "scores": [
            sure + [0.6],  # 47, unsure of the last box
            sure,  # 46, sure
            sure + [0.55, 0.52],  # 48
            sure,  # 46
            sure + [0.9],  # 47
        ],
    }
    readings = view_chance.readings(cell)
    assert readings["one view (the image as it is)"] == 47
    assert readings["median of 5 (shipped --views 5)"] == 47  # counts 47, 46, 48, 46, 47
    assert readings["the surest orientation's count"] == 46
    assert readings["most likely count of the mean distribution"] == 46  # 46 has 0.4 + 1 + 0.216 + 1 + 0.1
    assert readings["most likely count of one view's distribution"] == 47
    count, chance = view_chance.median_view_chance(cell)
    assert count == 47 and abs(chance - 0.6) < 1e-9  # the first 47 in the list is the kept one
