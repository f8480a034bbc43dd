"""benchmarks/fit_ranges.py: the five-fits table read back from rescorer_variants.py's output."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "fit_ranges.py"
spec = importlib.util.spec_from_file_location("fit_ranges", SCRIPT)
fit_ranges = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fit_ranges)

FITS = """greedy, hidden 64, seed 0: {'samples': 10.0}


/data/taichung/val.json (200 cells; a perfect rescorer of these candidates: exact count 64.5%; \
chromosomes with no candidate at IoU >= 0.5: 0.73%)
| post-processing | threshold | AP50 | WCR@0.5 | AER@0.5 | AP70 | exact | ±1 | MAE |
|---|---|---|---|---|---|---|---|---|
| NMS 0.5 + Soft-NMS (paper) | 0.125 | 96.90 | 17.5 | 7.59 | 93.56 | 37.0 | 66.5 | 1.31 |
| greedy rescorer, hidden 64, seed 0 | 0.300 | 97.77 | 23.5 | 6.89 | 94.58 | 40.0 | 70.5 | 1.16 |
| greedy rescorer, hidden 64, seed 1 | 0.275 | 97.77 | 22.5 | 7.00 | 94.63 | 39.5 | 70.0 | 1.19 |
| greedy rescorer, hidden 64, mean of 5 fits | 0.300 | 97.75 | 12.0 | 9.85 | 94.60 | 10.0 | 71.5 | 1.17 |


/data/mfish/val.json (37 cells; a perfect rescorer of these candidates: exact count 51.4%; \
chromosomes with no candidate at IoU >= 0.5: 2.27%)
| greedy rescorer, hidden 64, seed 0 | 0.525 | 95.49 | 21.6 | 10.44 | 85.86 | 43.2 | 64.9 | 2.35 |
"""


def test_parse_fits_reads_each_seed_row_per_split_and_skips_the_paper_and_mean_rows():
    splits = fit_ranges.parse_fits(FITS)
    assert list(splits) == ["taichung", "mfish"]
    assert splits["taichung"]["cells"] == 200 and splits["taichung"]["perfect"] == 64.5
    assert splits["taichung"]["exact"] == [40.0, 39.5]
    assert splits["taichung"]["AER@0.5"] == [6.89, 7.00]
    assert splits["mfish"]["MAE"] == [2.35]


def test_table_gives_lowest_to_highest_over_the_fits(tmp_path):
    run = tmp_path / "seed19"
    run.mkdir()
    (run / "rescorer_fits.txt").write_text(FITS)
    row = fit_ranges.table([run]).splitlines()[2]
    assert row.startswith("| seed19 (2) | 22.5–23.5% | 6.89–7.00% | 39.5–40.0% | 70.0–70.5% | 1.16–1.19 |")
    assert "| 43.2% |" in row  # one fit: a single figure, not a range
    assert row.endswith("| 64.5% / 51.4% |")
