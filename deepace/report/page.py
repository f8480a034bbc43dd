"""The case report: report.html (self-contained, opens offline: the cells drawn with their boxes, the
histogram of counts, the flags), report.csv and report.json, written from a case folder's state
(deepace/report/case.py: the model's output and the reviewer's corrections)."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from deepace.data.coco import atomic_write_text
from deepace.inference import CellResult
from deepace.report import rules
from deepace.report.case import (
    COUNT_BASIS_NOTE,
    CaseSummary,
    CellReview,
    CellSummary,
    case_count_text,
    cell_name,
    default_report_dir,
    load_gray,
    model_magnification_advice,
    model_stain,
    now,
    read_corrections_and_set_aside,
    summarize_case,
)
from deepace.report.render import draw_detections

THUMB_SIDE = 720


# ------------------------------------------------------------------------------------------ pictures


def _data_uri(img: Image.Image, fmt: str = "JPEG") -> str:
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.convert("RGB").save(buf, format="JPEG", quality=85, optimize=True)
        mime = "image/jpeg"
    else:
        img.save(buf, format="PNG", optimize=True)
        mime = "image/png"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def annotated_thumbnail(
    gray: np.ndarray,
    result: CellResult | None,
    review: CellReview | None,
    max_side: int = THUMB_SIDE,
) -> Image.Image:
    """The cell with its boxes, drawn at thumbnail size (so lines and numbers stay crisp)."""
    h, w = gray.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    small = np.asarray(Image.fromarray(gray).resize((max(1, round(w * scale)), max(1, round(h * scale)))))
    if review is not None:
        boxes = review.boxes * scale
        scores = np.ones(len(boxes), dtype=np.float32)
        return draw_detections(small, boxes, scores, 0.5, (0.0, 0.0), sources=review.sources)
    if result is None:
        return draw_detections(small, np.zeros((0, 4)), np.zeros(0), 0.5, (0.3, 0.7))
    return draw_detections(
        small,
        np.asarray(result.boxes) * scale,
        result.scores,
        result.score_threshold,
        result.low_confidence_band,
    )


def histogram_svg(counts: Sequence[int], mode: int | None, expected: int = rules.NORMAL_COUNT) -> str:
    """A bar chart of the counts as inline SVG markup: mode blue, other counts orange, `expected` dashed.

    Written by hand rather than with matplotlib: a process's first matplotlib histogram, import included,
    took about 1.1 s of a 20-cell case (BENCHMARKS.md, "Speed", session 22); this takes under a ms."""
    width, height = 600, 260
    left, right, top, bottom = 44, 12, 22, 42
    plot_w, plot_h = width - left - right, height - top - bottom
    hist = rules.count_histogram(counts)
    parts = [
        f'<svg class="histogram" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}"'
        ' font-family="sans-serif" font-size="11">',
        "<title>Histogram of chromosome counts"
        + "".join(f"; {n} chromosomes: {cells} cell{'s' if cells > 1 else ''}" for n, cells in hist.items())
        + "</title>",
    ]
    axis_y = top + plot_h
    if not hist:
        message = "no cell counted"
        parts.append(f'<text x="{width / 2:g}" y="{height / 2:g}" text-anchor="middle">{message}</text>')
    else:
        lo, hi = min(min(hist), expected) - 1, max(max(hist), expected) + 1
        xs = list(range(lo, hi + 1))
        top_value = max(hist.values())
        y_max = top_value * 1.2 + 0.5
        slot = plot_w / len(xs)

        def y_of(value: float) -> float:
            return axis_y - plot_h * value / y_max

        step = max(1, -(-top_value // 5))  # at most about five integer ticks
        for tick in range(0, top_value + 1, step):
            y = y_of(tick)
            parts.append(
                f'<line x1="{left}" x2="{left - 4}" y1="{y:.1f}" y2="{y:.1f}" stroke="black"/>'
                f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick}</text>'
            )
        for i, x in enumerate(xs):
            centre = left + slot * (i + 0.5)
            value = hist.get(x, 0)
            if value:
                colour = "#0072ff" if x == mode else "#ff8c00"
                parts.append(
                    f'<rect class="bar" data-count="{x}" data-cells="{value}" x="{centre - slot * 0.4:.1f}"'
                    f' y="{y_of(value):.1f}" width="{slot * 0.8:.1f}" height="{axis_y - y_of(value):.1f}"'
                    f' fill="{colour}" stroke="black" stroke-width="0.5"/>'
                )
            parts.append(f'<text x="{centre:.1f}" y="{axis_y + 14}" text-anchor="middle">{x}</text>')
        marker = left + slot * (expected - lo + 0.5)
        parts.append(
            f'<line class="expected" x1="{marker:.1f}" x2="{marker:.1f}" y1="{top}" y2="{axis_y}"'
            ' stroke="black" stroke-dasharray="5,3"/>'
            f'<text x="{marker + 3:.1f}" y="{top + 10}">{expected}</text>'
        )
    parts.append(
        f'<line x1="{left}" x2="{left}" y1="{top}" y2="{axis_y}" stroke="black"/>'
        f'<line x1="{left}" x2="{width - right}" y1="{axis_y}" y2="{axis_y}" stroke="black"/>'
        f'<text x="{left + plot_w / 2:g}" y="{height - 6}" text-anchor="middle">chromosomes per cell</text>'
        f'<text transform="translate(12 {top + plot_h / 2:g}) rotate(-90)" text-anchor="middle">cells</text>'
        "</svg>"
    )
    return "".join(parts)


# ------------------------------------------------------------------------------------------ html

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1b1f24;
background:#f6f7f9}
main{max-width:1200px;margin:0 auto;padding:20px}
h1{margin:0 0 4px;font-size:1.6rem} h2{font-size:1.2rem;margin:28px 0 10px}
.muted{color:#5b6470;font-size:.9rem}
.banner{padding:10px 14px;border-radius:6px;margin:14px 0;font-weight:600}
.banner.auto{background:#fff4e5;border:1px solid #ff8c00}
.banner.done{background:#e8f6ec;border:1px solid #2e8b57}
.summary{display:flex;gap:24px;flex-wrap:wrap;align-items:flex-start}
.stats{display:grid;grid-template-columns:auto auto;gap:4px 16px;font-size:1rem}
.stats b{font-size:1.3rem}
.chart svg{max-width:100%;height:auto;background:#fff}
.flags{list-style:none;padding:0;margin:0}
.flags li{padding:8px 12px;margin:6px 0;border-radius:6px;border-left:6px solid}
.flags li.flag-alert{background:#fdecec;border-color:#c62828}
.flags li.flag-warning{background:#fff4e5;border-color:#ff8c00}
.flags li.flag-info{background:#eaf2ff;border-color:#0072ff}
.flags code{font-size:.8rem;color:#5b6470;margin-right:6px}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{padding:5px 8px;border-bottom:1px solid #e1e4e8;text-align:left;font-size:.92rem}
th{background:#eef0f3;position:sticky;top:0}
tr.off td{background:#fdecec} tr.off td.count{font-weight:700;color:#c62828}
tr.err td{background:#f1f1f1;color:#6a6a6a}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:1px 7px;border-radius:10px;font-size:.78rem;margin-right:4px}
.b-rev{background:#2e8b57;color:#fff} .b-cor{background:#dc00dc;color:#fff}
.b-auto{background:#e1e4e8;color:#333} .b-off{background:#c62828;color:#fff}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:14px}
.cell{background:#fff;border:2px solid #d0d4da;border-radius:8px;padding:8px;margin:0}
.cell.off{border-color:#c62828;box-shadow:0 0 0 2px #f4b4b4}
.cell img{width:100%;height:auto;display:block;border-radius:4px}
.cell h3{margin:0 0 6px;font-size:.95rem;display:flex;justify-content:space-between;gap:8px}
.cell .count{font-size:1.25rem;font-weight:700}
.legend span{display:inline-block;margin-right:16px}
.sw{display:inline-block;width:18px;height:12px;border:3px solid;vertical-align:middle;margin-right:4px}
@media print{.gallery{grid-template-columns:repeat(2,1fr)} th{position:static}}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _badges(c: CellSummary) -> str:
    out = []
    if c.error:
        return '<span class="badge b-auto">not counted</span>'
    if c.reviewed:
        out.append('<span class="badge b-rev">reviewed</span>')
    if c.corrected:
        out.append('<span class="badge b-cor">corrected</span>')
    if not c.reviewed and not c.corrected:
        out.append('<span class="badge b-auto">automatic</span>')
    if c.empty:
        out.append(
            '<span class="badge b-off" title="left out of the case\'s counts until reviewed">'
            "no chromosome found</span>"
        )
    if c.off_mode:
        out.append('<span class="badge b-off">off mode</span>')
    if c.darkened:
        out.append('<span class="badge b-auto" title="faint fluorescence image">counted darkened</span>')
    if c.denoised_noise is not None:
        out.append(
            f'<span class="badge b-auto" title="pixel noise σ {c.denoised_noise:.1f} grey levels, far above '
            f"the training images'; smoothed before counting\">noisy, denoised</span>"
        )
    if c.unsteady and not c.reviewed:
        views = c.orientation_counts or []
        out.append(
            f'<span class="badge b-auto" title="counts in {len(views)} orientations: '
            f'{", ".join(map(str, views))}">unsteady {min(views)}–{max(views)}</span>'
        )
    return "".join(out)


def _low_text(c: CellSummary) -> str:
    if not c.low_confidence:
        return "0"
    return f"{c.low_confidence} ({c.low_counted} counted, {c.low_uncounted} not counted)"


def _chance_text(c: CellSummary) -> str:
    return "—" if c.exact_chance is None else f"{c.exact_chance:.0%}"


def _render_html(
    summary: CaseSummary, case_dir: Path, thumbs: dict[str, str], histogram: str, band: str
) -> str:
    s = summary.to_dict()
    counted = [c for c in summary.cells if c.count is not None and not c.empty]
    all_reviewed = bool(counted) and all(c.reviewed for c in counted)
    banner = (
        '<div class="banner done">All counted cells were reviewed.</div>'
        if all_reviewed
        else f'<div class="banner auto">Automatic count: {s["n_cells"] - s["n_reviewed"]} of {s["n_cells"]} '
        "cells not reviewed. Check every cell before sign-out.</div>"
    )
    flags = "".join(
        f'<li class="flag-{_esc(f.severity)}"><code>{_esc(f.code)}</code>{_esc(f.message)}</li>'
        for f in summary.flags
    )
    rows = []
    for i, c in enumerate(summary.cells, start=1):
        cls = "err" if c.error else ("off" if c.off_mode else "")
        rows.append(
            f'<tr class="{cls}"><td class="num">{i}</td><td><a href="#cell-{i}">{_esc(c.name)}</a></td>'
            f'<td class="num count">{"—" if c.count is None else c.count}</td>'
            f'<td class="num">{"—" if c.model_count is None else c.model_count}</td>'
            f'<td>{_esc(_low_text(c))}</td><td class="num">{_chance_text(c)}</td>'
            f"<td>{_badges(c)}</td><td>{_esc(c.error or '')}</td></tr>"
        )
    cards = []
    for i, c in enumerate(summary.cells, start=1):
        if c.error:
            continue
        img = f'<img alt="{_esc(c.name)}" src="{thumbs[c.name]}">' if c.name in thumbs else ""
        model = "" if c.model_count in (None, c.count) else f" (model {c.model_count})"
        cards.append(
            f'<figure class="cell{" off" if c.off_mode else ""}" id="cell-{i}">'
            f"<h3><span>{i}. {_esc(c.name)}</span>"
            f'<span class="count">{c.count}{_esc(model)}</span></h3>{img}'
            f'<figcaption class="muted">{_badges(c)} low-confidence: {_esc(_low_text(c))}; '
            f"model's chance of an exact count: {_chance_text(c)}</figcaption>"
            "</figure>"
        )
    unreadable = "".join(f"<li><b>{_esc(c.name)}</b>: {_esc(c.error)}</li>" for c in summary.unreadable)
    unreadable_html = (
        f"<h2>Not counted ({len(summary.unreadable)})</h2><ul>{unreadable}</ul>" if unreadable else ""
    )
    mode = case_count_text(summary.case_count, s["tied_with"], summary.basis)
    rng = "—" if s["min_count"] is None else f"{s['min_count']}–{s['max_count']}"
    off = sum(c.off_mode for c in summary.cells)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>DeepACE case report: {_esc(summary.name)}</title>
<style>{_CSS}</style></head>
<body><main>
<h1>Chromosome count: {_esc(summary.name)}</h1>
<div class="muted">{_esc(case_dir.resolve())} · generated {_esc(now())} by DeepACE ·
expected normal count {summary.expected}</div>
{banner}
<section class="summary">
<div class="stats">
<span>Cells counted</span><b>{s["n_cells"]}</b>
<span>Case count</span><b>{mode}</b>
<span>Modal count</span><b>{"—" if s["modal_count"] is None else s["modal_count"]}</b>
<span>Range</span><b>{rng}</b>
<span>Cells off the case count</span><b>{off}</b>
<span>Reviewed</span><b>{s["n_reviewed"]} / {s["n_cells"]}</b>
<span>Corrected</span><b>{s["n_corrected"]}</b>
<span>Not counted</span><b>{len(summary.unreadable)}</b>
</div>
<div class="chart">{histogram}</div>
</section>
<p class="muted">{_esc(COUNT_BASIS_NOTE)}</p>
<h2>Flags</h2>
<ul class="flags">{flags or '<li class="flag-info">No flags.</li>'}</ul>
<h2>Cells</h2>
<table><thead><tr><th>#</th><th>Image</th><th>Count</th><th>Model count</th><th>Low-confidence detections</th>
<th title="The model's own chance that its count is exact, from its boxes' scores">Model's P(exact)</th>
<th>Status</th><th>Error</th></tr></thead><tbody>{"".join(rows)}</tbody></table>
{unreadable_html}
<h2>Annotated cells</h2>
<p class="legend muted"><span><i class="sw" style="border-color:#0072ff"></i>counted</span>
<span><i class="sw" style="border-color:#ff8c00"></i>counted, low confidence</span>
<span><i class="sw" style="border-color:#ff8c00;border-style:dashed"></i>not counted, low confidence</span>
<span><i class="sw" style="border-color:#dc00dc"></i>drawn by reviewer</span>
Numbers run 1..count in reading order. Low-confidence band: {_esc(band)}.</p>
<div class="gallery">{"".join(cards)}</div>
</main></body></html>
"""


# ------------------------------------------------------------------------------------------ the report


def build_case_report(
    case_dir: Path,
    results: Sequence[CellResult],
    out_dir: Path | None = None,
    expected: int = rules.NORMAL_COUNT,
    stain: str | None = None,
) -> dict[str, Path]:
    """Write report.html (self-contained, opens offline), report.csv and report.json for a case.

    Corrections in CASE/deepace-review/corrections.json take precedence over the model's counts.
    Returns {"html": ..., "csv": ..., "json": ...}.
    """
    case_dir = Path(case_dir)
    out_dir = default_report_dir(case_dir) if out_dir is None else Path(out_dir)
    stain = model_stain(case_dir) if stain is None else stain
    by_name: dict[str, CellResult | None] = {cell_name(r.image, case_dir): r for r in results}
    reviews, set_aside = read_corrections_and_set_aside(case_dir)
    reviews = {k: v for k, v in reviews.items() if k in by_name}
    summary = summarize_case(
        case_dir.name,
        by_name,
        reviews,
        expected,
        model_magnification_advice(case_dir),
        set_aside,
    )

    thumbs: dict[str, str] = {}
    for cell in summary.cells:
        if cell.error:
            continue
        result = by_name[cell.name]
        path = result.image if result is not None else case_dir / cell.name
        try:
            gray = load_gray(path, stain)
        except Exception as e:  # an image that vanished or broke since it was counted
            cell.error = f"cannot read the image for the report: {e}"
            continue
        thumbs[cell.name] = _data_uri(annotated_thumbnail(gray, result, reviews.get(cell.name)))

    bands = {tuple(r.low_confidence_band) for r in results}
    band = ", ".join(f"{lo:g}–{hi:g}" for lo, hi in sorted(bands)) or "—"
    page = _render_html(
        summary, case_dir, thumbs, histogram_svg(summary.counts, summary.case_count, expected), band
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"html": out_dir / "report.html", "csv": out_dir / "report.csv", "json": out_dir / "report.json"}
    atomic_write_text(paths["html"], page)

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(
        ["image", "count", "model_count", "low_confidence", "exact_chance", "reviewed", "corrected"]
        + ["off_mode", "error", "no_chromosome_found"]
    )
    for c in summary.cells:
        writer.writerow(
            [
                c.name,
                "" if c.count is None else c.count,
                "" if c.model_count is None else c.model_count,
                c.low_confidence,
                "" if c.exact_chance is None else round(c.exact_chance, 3),
                int(c.reviewed),
                int(c.corrected),
                int(c.off_mode),
                c.error or "",
                int(c.empty),
            ]
        )
    atomic_write_text(paths["csv"], buf.getvalue())

    data = summary.to_dict()
    data.update(case_dir=str(case_dir), generated=now(), stain=stain)
    atomic_write_text(paths["json"], json.dumps(data, indent=1) + "\n")
    return paths
