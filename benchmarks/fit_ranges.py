"""The "five rescorer fits" table of BENCHMARKS.md from the `rescorer_fits.txt` that
`benchmarks/head_variant.sh` leaves in each variant's folder: per split, the range (lowest–highest) of
each count measure over the per-seed fits, and what a perfect rescorer of the same candidates would count.

    python benchmarks/fit_ranges.py ~/deepace-runs/variants/seed19 ~/deepace-runs/variants/soup2

Ranges instead of single figures because one fit's exact count moves by a few points with its seed alone
(BENCHMARKS.md, session 7).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

SPLIT_HEADER = re.compile(r"^(\S+\.json) \((\d+) cells; a perfect rescorer [^:]*: exact count ([\d.]+)%")
FIT_ROW = re.compile(r"^\| greedy rescorer, hidden \d+, seed \d+ \|")
# Columns of rescorer_variants.py's table after the row name: threshold, AP50, WCR, AER, AP70, exact, ±1, MAE.
MEASURES = {"WCR@0.5": 2, "AER@0.5": 3, "exact": 5, "±1": 6, "MAE": 7}
PERCENT = {"WCR@0.5", "AER@0.5", "exact", "±1"}


def split_name(path: str) -> str:
    """`…/taichung/val.json` → `taichung`."""
    return Path(path).parent.name or Path(path).stem


def parse_fits(text: str) -> dict[str, dict]:
    """Per split: `cells`, `perfect` (exact %, a perfect rescorer) and each measure's values over the fits
    (one per seed, in file order; the mean-of-fits row is left out)."""
    splits: dict[str, dict] = {}
    current: dict | None = None
    for line in text.splitlines():
        header = SPLIT_HEADER.match(line)
        if header:
            current = {"cells": int(header[2]), "perfect": float(header[3])}
            current.update({measure: [] for measure in MEASURES})
            splits[split_name(header[1])] = current
        elif current is not None and FIT_ROW.match(line):
            cells = [c.strip() for c in line.strip().strip("|").split("|")][1:]
            for measure, column in MEASURES.items():
                current[measure].append(float(cells[column]))
    return splits


def value_range(values: list[float], percent: bool) -> str:
    if not values:
        return "–"
    digits = "{:.2f}" if not percent or any(round(v, 1) != v for v in values) else "{:.1f}"
    low, high = (digits.format(v) for v in (min(values), max(values)))
    unit = "%" if percent else ""
    return f"{low}{unit}" if low == high else f"{low}–{high}{unit}"


def table(folders: list[Path]) -> str:
    parsed = {folder.name: parse_fits((folder / "rescorer_fits.txt").read_text()) for folder in folders}
    split_names = list(dict.fromkeys(name for splits in parsed.values() for name in splits))
    columns = [f"{split} {measure}" for split in split_names for measure in MEASURES]
    perfect_column = "perfect rescorer, exact (" + " / ".join(split_names) + ")"
    lines = [
        "| fits (seeds) | " + " | ".join([*columns, perfect_column]) + " |",
        "|---" * (len(columns) + 2) + "|",
    ]
    for name, splits in parsed.items():
        fits = max((len(s["exact"]) for s in splits.values()), default=0)
        cells = [
            value_range(splits[split][measure], measure in PERCENT) if split in splits else "–"
            for split in split_names
            for measure in MEASURES
        ]
        perfect = " / ".join(f"{splits[s]['perfect']:.1f}%" if s in splits else "–" for s in split_names)
        lines.append(f"| {name} ({fits}) | " + " | ".join(cells) + f" | {perfect} |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit(__doc__)
    print(table([Path(a) for a in argv]))


if __name__ == "__main__":
    main(sys.argv[1:])
