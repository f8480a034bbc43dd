"""Markdown tables from run folders' final validation (metrics.jsonl): Table 2 and Table 3 layouts.

Usage:

    python benchmarks/tables.py ~/deepace-runs/ablations/*
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

IOUS = ("0.5", "0.55", "0.6", "0.65", "0.7", "0.75", "0.8", "0.85")


def last_metrics(run: Path) -> dict | None:
    path = run / "metrics.jsonl"
    if not path.exists():
        return None
    return json.loads(path.read_text().splitlines()[-1])


def fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def main(runs: list[Path]) -> None:
    rows = [(run.name, m) for run in runs if (m := last_metrics(run))]
    print("| run | iterations | AP50 | WCR@0.5 % | AER@0.5 % | exact count % | ±1 % | MAE | threshold |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, m in rows:
        at = m["by_iou"]["0.5"]
        c = m["count"]
        counts = f"{fmt(c['exact'], 1)} | {fmt(c['within1'], 1)} | {fmt(c['mae'])}"
        print(
            f"| {name} | {m['iteration']} | {fmt(at['AP'])} | {fmt(at['WCR'], 1)} | {fmt(at['AER'])} | "
            f"{counts} | {m['score_threshold']:.3f} |"
        )
    print()
    print("| IoU | " + " | ".join(f"{n} WCR / AER" for n, _ in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for iou in IOUS:
        cells = [f"{fmt(m['by_iou'][iou]['WCR'], 1)} / {fmt(m['by_iou'][iou]['AER'])}" for _, m in rows]
        print(f"| {iou} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main([Path(p) for p in sys.argv[1:]])
