"""The case report (HTML/CSV/JSON), model.json / corrections.json, and the `deepace case` command."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from deepace.inference import CellResult
from deepace.report import case as case_io
from deepace.report import page as case_report
from deepace.report.render import draw_detections, reading_order

# ------------------------------------------------------------------ a small case and a fake counter


def grid_boxes(n: int, width: int, height: int, cols: int = 8) -> list[list[float]]:
    """n chromosome-like boxes on a grid, row by row."""
    rows = -(-n // cols)
    cw, ch = width / cols, height / max(rows, 1)
    boxes = []
    for i in range(n):
        r, c = divmod(i, cols)
        cx, cy = (c + 0.5) * cw, (r + 0.5) * ch
        boxes.append([cx - 9, cy - 22, cx + 9, cy + 22])
    return boxes


def make_case(
    root: Path, counts: list[int], size: tuple[int, int] = (400, 320), broken: bool = False
) -> Path:
    """A case folder with one PNG per count (dark bars on a light background) and optionally a broken file."""
    case = root / "case"
    case.mkdir()
    for k, n in enumerate(counts, start=1):
        img = Image.new("L", size, 230)
        draw = ImageDraw.Draw(img)
        for box in grid_boxes(n, *size):
            draw.rounded_rectangle([box[0] + 3, box[1] + 3, box[2] - 3, box[3] - 3], radius=4, fill=70)
        img.save(case / f"cell{k:02d}.png")
    if broken:
        (case / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a PNG")
    return case


class FakeCounter:
    """Counts as many bars as the image was made with: the bars of the grid, the first at a low-confidence
    score (0.6, still counted) and one extra uncounted candidate (0.4). Unreadable files set .error."""

    stain = "auto"

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts
        self.calls: list[Path] = []

    def count_image(self, path: Path) -> CellResult:
        path = Path(path)
        self.calls.append(path)
        try:
            with Image.open(path) as im:
                im.load()
                w, h = im.size
        except Exception as e:
            return CellResult(image=path, error=f"cannot read: {e}")
        n = self.counts.get(path.name, 0)
        boxes = grid_boxes(n, w, h) + [[2.0, 2.0, 14.0, 30.0]]
        scores = [0.6] + [0.95] * (n - 1) + [0.4] if n else [0.4]
        order = np.argsort(-np.array(scores), kind="stable")
        return CellResult(
            image=path,
            width=w,
            height=h,
            boxes=np.array(boxes, dtype=np.float32)[order],
            scores=np.array(scores, dtype=np.float32)[order],
        )


def count_all(case: Path, counter: FakeCounter) -> list[CellResult]:
    return [counter.count_image(p) for p in case_io.case_images(case)]


COUNTS = [46, 46, 47, 45]


@pytest.fixture
def case_and_results(tmp_path: Path) -> tuple[Path, list[CellResult]]:
    case = make_case(tmp_path, COUNTS, broken=True)
    counter = FakeCounter({f"cell{k:02d}.png": n for k, n in enumerate(COUNTS, start=1)})
    results = count_all(case, counter)
    case_io.write_model_json(case, results)
    return case, results


# ------------------------------------------------------------------ drawing


def test_draw_detections_colours_and_size() -> None:
    gray = np.full((500, 700), 220, np.uint8)
    boxes = np.array(
        [[10, 40, 60, 120], [100, 40, 150, 120], [200, 40, 250, 120], [300, 300, 350, 380]], float
    )
    scores = np.array([0.95, 0.6, 0.4, 0.1])
    img = draw_detections(gray, boxes, scores, 0.5, (0.3, 0.7))
    assert img.mode == "RGB" and img.size == (700, 500)
    px = np.asarray(img)
    assert tuple(px[80, 10]) == (0, 114, 255)  # confident: blue
    assert tuple(px[80, 100]) == (255, 140, 0)  # counted, low confidence: orange
    left_edge = px[40:120, 200]
    assert (left_edge == (255, 140, 0)).all(axis=1).any() and (left_edge == 220).all(axis=1).any()  # dashed
    assert (px[300:380, 300] == 220).all()  # under the band: not drawn


def test_reading_order_rows_then_columns() -> None:
    boxes = np.array([[200, 12, 220, 50], [10, 100, 30, 140], [10, 10, 30, 50], [100, 8, 120, 46]], float)
    assert reading_order(boxes).tolist() == [2, 3, 0, 1]
    assert reading_order(np.zeros((0, 4))).tolist() == []


# ------------------------------------------------------------------ the report


def test_histogram_svg_bars_mode_and_expected_marker() -> None:
    import xml.etree.ElementTree as ET

    svg = ET.fromstring(case_report.histogram_svg([45, 46, 46, 46, 47, 47, 49], mode=46))
    bars = {int(b.get("data-count")): b for b in svg.iter("rect") if b.get("class") == "bar"}
    assert sorted(bars) == [45, 46, 47, 49]  # no bar where no cell has that count (48)
    assert {n: int(b.get("data-cells")) for n, b in bars.items()} == {45: 1, 46: 3, 47: 2, 49: 1}
    height = {n: float(b.get("height")) for n, b in bars.items()}
    assert height[46] == pytest.approx(3 * height[45], rel=0.01)
    assert height[47] == pytest.approx(2 * height[49], rel=0.01)
    # the picture's title reads out the same numbers (screen readers, hover)
    assert svg.find("title").text.endswith(
        "45 chromosomes: 1 cell; 46 chromosomes: 3 cells; 47 chromosomes: 2 cells; 49 chromosomes: 1 cell"
    )
    assert bars[46].get("fill") == "#0072ff" and {bars[n].get("fill") for n in (45, 47, 49)} == {"#ff8c00"}
    # bars sit left to right in count order, 48's slot empty between 47 and 49
    x = {n: float(b.get("x")) for n, b in bars.items()}
    slot = x[46] - x[45]
    assert x[47] - x[46] == pytest.approx(slot) and x[49] - x[47] == pytest.approx(2 * slot)
    # the dashed line for the expected count runs through the middle of 46's slot
    (marker,) = [line for line in svg.iter("line") if line.get("class") == "expected"]
    centre_46 = x[46] + float(bars[46].get("width")) / 2
    assert float(marker.get("x1")) == pytest.approx(centre_46, abs=0.1)

    # the expected count is drawn even when no cell has it, and an empty case says so
    far = ET.fromstring(case_report.histogram_svg([40, 41], mode=40))
    labels = [t.text for t in far.iter("text")]
    assert "46" in labels and "40" in labels and "47" in labels  # axis from 39 to 47
    empty = ET.fromstring(case_report.histogram_svg([], mode=None))
    assert not list(empty.iter("rect")) and "no cell counted" in [t.text for t in empty.iter("text")]


def test_report_html_is_self_contained(
    case_and_results: tuple[Path, list[CellResult]], tmp_path: Path
) -> None:
    case, results = case_and_results
    paths = case_report.build_case_report(case, results, tmp_path / "out")
    assert set(paths) == {"html", "csv", "json"} and all(p.is_file() for p in paths.values())
    page = paths["html"].read_text(encoding="utf-8")

    for n in (45, 46, 47):
        assert f">{n}<" in page
    assert "Modal count" in page and "TOO_FEW_CELLS" in page and "JUDGED_ON_REVIEWED_CELLS" in page
    assert "broken.png" in page and "Not counted (1)" in page
    # pictures are inlined: 4 thumbnails, each decodable, and the histogram as SVG
    uris = re.findall(r'src="data:image/(?:png|jpeg);base64,([A-Za-z0-9+/=]+)"', page)
    assert len(uris) == 4 and page.count("<svg") == 1
    for uri in uris:
        Image.open(io.BytesIO(base64.b64decode(uri))).verify()
    # nothing is fetched from anywhere
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page
    # the cells off the mode are highlighted
    assert page.count('class="off"') == 2 and page.count('class="cell off"') == 2


def test_report_csv_and_json(case_and_results: tuple[Path, list[CellResult]]) -> None:
    case, results = case_and_results
    paths = case_report.build_case_report(case, results, None)
    assert paths["html"].parent == case / "deepace-report"

    rows = list(csv.DictReader(paths["csv"].open(encoding="utf-8")))
    assert [r["image"] for r in rows] == [
        "broken.png",
        "cell01.png",
        "cell02.png",
        "cell03.png",
        "cell04.png",
    ]
    assert [r["count"] for r in rows] == ["", "46", "46", "47", "45"]
    assert [r["low_confidence"] for r in rows] == ["0", "2", "2", "2", "2"]
    assert rows[0]["error"].startswith("cannot read") and all(r["error"] == "" for r in rows[1:])
    assert [r["off_mode"] for r in rows] == ["0", "0", "0", "1", "1"]
    # the model's own chance that each count is exact, from the boxes' scores (none for the broken file)
    chances = {Path(r.image).name: r.exact_chance for r in results if not r.error}
    assert rows[0]["exact_chance"] == ""
    assert [float(r["exact_chance"]) for r in rows[1:]] == [round(chances[r["image"]], 3) for r in rows[1:]]
    assert all(0.0 < chances[r["image"]] < 1.0 for r in rows[1:])

    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert data["modal_count"] == 46 and data["n_cells"] == 4
    assert data["histogram"] == {"45": 1, "46": 2, "47": 1}
    assert data["unreadable"][0]["image"] == "broken.png"
    assert {f["code"] for f in data["flags"]} >= {
        "TOO_FEW_CELLS",
        "JUDGED_ON_REVIEWED_CELLS",  # the two cells off the count are automatic: not yet EXTEND_COUNT
        "NOT_REVIEWED",
        "UNREADABLE_FILES",
    }
    cell = data["cells"][1]
    assert (cell["low_counted"], cell["low_uncounted"]) == (1, 1)
    assert cell["exact_chance"] == pytest.approx(chances[cell["name"]])


def test_corrections_take_precedence(case_and_results: tuple[Path, list[CellResult]]) -> None:
    case, results = case_and_results
    model = case_io.read_model_json(case)
    # the reviewer removes one box of cell03 (47 -> 46) and marks cell01 reviewed unchanged
    review = case_io.CellReview.from_model(model["cell03.png"], reviewed=True)
    review.boxes, review.sources, review.scores = review.boxes[1:], review.sources[1:], review.scores[1:]
    reviews = {
        "cell03.png": review,
        "cell01.png": case_io.CellReview.from_model(model["cell01.png"], reviewed=True),
    }
    case_io.write_corrections(case, reviews)

    paths = case_report.build_case_report(case, results)
    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    by_name = {c["name"]: c for c in data["cells"]}
    assert by_name["cell03.png"]["count"] == 46 and by_name["cell03.png"]["model_count"] == 47
    assert by_name["cell03.png"]["corrected"] and by_name["cell03.png"]["reviewed"]
    assert by_name["cell01.png"]["reviewed"] and not by_name["cell01.png"]["corrected"]
    assert not by_name["cell02.png"]["reviewed"]
    assert data["n_reviewed"] == 2 and data["n_corrected"] == 1
    page = paths["html"].read_text(encoding="utf-8")
    assert "corrected" in page and "reviewed" in page and "(model 47)" in page


def test_model_and_corrections_are_coco(case_and_results: tuple[Path, list[CellResult]]) -> None:
    from deepace.data.coco import read_coco

    case, results = case_and_results
    model = case_io.read_model_json(case)
    assert model["cell03.png"].count == 47 and model["broken.png"].error
    np.testing.assert_allclose(model["cell01.png"].boxes, results[1].boxes, atol=0.01)

    records = {r.path.name: r for r in read_coco(case_io.model_json_path(case), check_images=True)}
    assert records["cell03.png"].count == 48  # raw output: every box, down to low scores
    assert records["cell03.png"].path == case / "cell03.png"

    review = case_io.CellReview.from_model(model["cell02.png"], reviewed=True)
    case_io.write_corrections(case, {"cell02.png": review})
    (rec,) = read_coco(case_io.corrections_path(case))
    assert rec.path == case / "cell02.png" and rec.count == 46 and rec.expected_count == 46
    assert rec.meta["reviewed"] is True and rec.meta["model_count"] == 46


def test_model_json_keeps_other_cells(case_and_results: tuple[Path, list[CellResult]]) -> None:
    case, results = case_and_results
    extra = CellResult(image=case / "new.png", width=10, height=10)
    case_io.write_model_json(case, [extra])
    assert set(case_io.read_model_json(case)) == {r.image.name for r in results} | {"new.png"}


# ------------------------------------------------------------------ the command


def test_case_command_with_a_fake_counter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import deepace.inference
    from deepace.cli import case_cmds

    case = make_case(tmp_path, [46, 47], broken=True)
    made: list[dict] = []

    def fake_counter(
        weights=None,
        stain="auto",
        score_threshold=None,
        magnification=1.0,
        runtime="auto",
        views=1,
        num_threads=None,
    ):
        made.append(
            {
                "weights": weights,
                "stain": stain,
                "score_threshold": score_threshold,
                "magnification": magnification,
                "runtime": runtime,
                "views": views,
                "num_threads": num_threads,
            }
        )
        return FakeCounter({"cell01.png": 46, "cell02.png": 47})

    monkeypatch.setattr(deepace.inference, "Counter", fake_counter, raising=False)
    app = typer.Typer()
    case_cmds.register(app)
    app.command("noop")(lambda: None)  # keep `case` a named subcommand
    out = tmp_path / "report"
    res = CliRunner().invoke(
        app,
        [
            "case",
            str(case),
            "--out",
            str(out),
            "--score-threshold",
            "0.6",
            "--stain",
            "brightfield",
            "--magnification",
            "1.5",
            "--runtime",
            "torch",
            "--views",
            "5",
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    assert made == [
        {
            "weights": None,
            "stain": "brightfield",
            "score_threshold": 0.6,
            "magnification": 1.5,
            "runtime": "torch",
            "views": 5,
            "num_threads": None,
        }
    ]
    assert (out / "report.html").is_file() and (out / "report.csv").is_file()
    # the table gives each automatic count the model's chance that it is exact
    data = json.loads((out / "report.json").read_text(encoding="utf-8"))
    table = "".join(c for c in res.output if c not in " \n│")
    assert "P(exact)" in table
    chances = [c["exact_chance"] for c in data["cells"] if not c["error"]]
    assert chances and all(f"{chance:.0%}" in table for chance in chances)
    assert case_io.model_json_path(case).is_file()
    assert "broken.png" in res.output and "Report:" in res.output
    assert "count 46 (median, tied with 47) over 2 cells" in " ".join(res.output.split())

    res = CliRunner().invoke(app, ["case", str(case), "--stain", "purple"])
    assert res.exit_code != 0
    res = CliRunner().invoke(app, ["case", str(case), "--runtime", "tensorrt"])
    assert res.exit_code != 0 and len(made) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    res = CliRunner().invoke(app, ["case", str(empty)])
    assert res.exit_code == 1


def test_count_alerts_are_provisional_until_every_cell_is_reviewed() -> None:
    def cell(name: str, n: int) -> CellResult:
        return CellResult(
            image=Path(name), boxes=np.zeros((n, 4), np.float32), scores=np.full(n, 0.9, np.float32)
        )

    results = {f"c{k}.png": cell(f"c{k}.png", n) for k, n in enumerate([45, 45, 45, 46, 47])}
    unreviewed = case_io.summarize_case("case", results, {})
    alert = next(f for f in unreviewed.flags if f.code == "ABNORMAL_MODE")
    assert "5 of 5 not yet reviewed" in alert.message
    reviews = {name: case_io.CellReview.from_model(r, reviewed=True) for name, r in results.items()}
    reviewed = case_io.summarize_case("case", results, reviews)
    alert = next(f for f in reviewed.flags if f.code == "ABNORMAL_MODE")
    assert "reviewed" not in alert.message  # the same finding, now from checked counts


def test_clones_are_judged_on_reviewed_cells_only() -> None:
    """Two automatic 47s beside a case count of 46 are no alert and no reason to extend the count (on
    automatic counts such cells turn up in nearly every normal case); the same cells reviewed are."""

    def cell(name: str, n: int) -> CellResult:
        return CellResult(
            image=Path(name), boxes=np.zeros((n, 4), np.float32), scores=np.full(n, 0.9, np.float32)
        )

    counts = {"a.png": 46, "b.png": 46, "c.png": 46, "d.png": 47, "e.png": 47, "f.png": 45}
    results = {name: cell(name, n) for name, n in counts.items()}

    def codes_with(reviewed: list[str]) -> list[str]:
        reviews = {n: case_io.CellReview.from_model(results[n], reviewed=True) for n in reviewed}
        return [f.code for f in case_io.summarize_case("case", results, reviews).flags]

    unreviewed = codes_with([])
    assert "POSSIBLE_CLONE_GAIN" not in unreviewed and "EXTEND_COUNT" not in unreviewed
    assert "JUDGED_ON_REVIEWED_CELLS" in unreviewed
    one_off = codes_with(["d.png", "a.png"])  # one reviewed 47 is no clone, but a reason to extend
    assert "POSSIBLE_CLONE_GAIN" not in one_off and "EXTEND_COUNT" in one_off
    reviews = {n: case_io.CellReview.from_model(results[n], reviewed=True) for n in ("d.png", "e.png")}
    summary = case_io.summarize_case("case", results, reviews)
    gain = next(f for f in summary.flags if f.code == "POSSIBLE_CLONE_GAIN")
    assert gain.severity == "alert" and gain.message.startswith(
        "2 of the 2 reviewed cells count 47 (median 46"
    )
    everything = codes_with(list(counts))  # all reviewed: the usual rules on every count
    assert "POSSIBLE_CLONE_GAIN" in everything and "JUDGED_ON_REVIEWED_CELLS" not in everything


def test_a_tied_case_count_says_what_it_is_tied_with(tmp_path: Path) -> None:
    """Automatic counts whose two middle counts are equally frequent: the report gives the one nearest 46 as
    the case's count, and says which count it is tied with, in report.json and on the HTML page."""
    case = make_case(tmp_path, [46, 47, 47, 46])
    counter = FakeCounter({f"cell{k:02d}.png": n for k, n in enumerate([46, 47, 47, 46], start=1)})
    paths = case_report.build_case_report(case, count_all(case, counter), None)
    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert data["case_count"] == 46 and data["count_basis"] == "median" and data["tied_with"] == [47]
    html = paths["html"].read_text(encoding="utf-8")
    assert "<span>Case count</span><b>46 (median, tied with 47)</b>" in html

    counter.counts["cell02.png"] = 46
    paths = case_report.build_case_report(case, count_all(case, counter), tmp_path / "clear")
    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert data["case_count"] == 46 and data["tied_with"] == []
    assert "tied with" not in paths["html"].read_text(encoding="utf-8")


def test_automatic_counts_are_read_by_their_median_reviewed_ones_by_their_mode() -> None:
    """45 is the most frequent of these counts but 46 the middle one: unreviewed (one miscounted cell moves
    a mode), the case reads 46 with no abnormal-count alert; once every cell is reviewed, its modal count
    45 is the finding (ISCN's modal number)."""
    counts = [45, 45, 45, 46, 46, 47, 47]
    results = {
        f"c{k}.png": CellResult(
            image=Path(f"c{k}.png"), boxes=np.zeros((n, 4), np.float32), scores=np.full(n, 0.9, np.float32)
        )
        for k, n in enumerate(counts)
    }
    automatic = case_io.summarize_case("case", results, {})
    assert (automatic.case_count, automatic.basis) == (46, "median")
    assert "ABNORMAL_MODE" not in {f.code for f in automatic.flags}
    assert [c.off_mode for c in automatic.cells] == [n != 46 for n in counts]
    assert automatic.to_dict()["modal_count"] == 45 and automatic.to_dict()["median_count"] == 46

    reviews = {name: case_io.CellReview.from_model(r, reviewed=True) for name, r in results.items()}
    reviewed = case_io.summarize_case("case", results, reviews)
    assert (reviewed.case_count, reviewed.basis) == (45, "mode")
    alert = next(f for f in reviewed.flags if f.code == "ABNORMAL_MODE")
    assert alert.message.startswith("Modal count is 45")


def test_orientation_counts_travel_with_the_cell_and_mark_it_unsteady(
    case_and_results: tuple[Path, list[CellResult]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dataclasses import replace

    case, results = case_and_results
    views = {"cell01.png": (46, 46, 46), "cell03.png": (47, 46, 48)}
    results = [replace(r, view_counts=views.get(r.image.name)) for r in results]
    case_io.write_model_json(case, results)
    model = case_io.read_model_json(case)
    assert model["cell01.png"].view_counts == (46, 46, 46) and model["cell02.png"].view_counts is None
    paths = case_report.build_case_report(case, list(model.values()), tmp_path / "out")
    cells = {c["name"]: c for c in json.loads(paths["json"].read_text())["cells"]}
    assert cells["cell03.png"]["unsteady"] and cells["cell03.png"]["orientation_counts"] == [47, 46, 48]
    assert not cells["cell01.png"]["unsteady"] and not cells["cell02.png"]["unsteady"]
    flags = {f["code"]: f["message"] for f in json.loads(paths["json"].read_text())["flags"]}
    assert flags["UNSTEADY_COUNTS"].startswith("1 cell counted differently")
    page = paths["html"].read_text(encoding="utf-8")
    from deepace.cli.case_cmds import _print_summary

    _print_summary(case, paths)
    assert "unsteady 46–48" in " ".join(capsys.readouterr().out.split())  # the command's table too
    assert page.count(">unsteady 46–48<") >= 1  # the cell's badge (table and picture grid)
    assert page.count(">unsteady ") == page.count(">unsteady 46–48<")  # and no other cell's badge


def test_cells_the_model_is_unsure_of_are_flagged_until_reviewed(tmp_path: Path) -> None:
    boxes = np.array([[10.0 * i, 0.0, 10.0 * i + 8, 20.0] for i in range(50)], dtype=np.float32)
    sure = CellResult(tmp_path / "sure.png", 600, 40, boxes[:46], np.full(46, 0.999, np.float32), 0.5)
    # four boxes at an even chance: the 48 counted need all four, one chance in sixteen
    unsure_scores = np.array([0.999] * 44 + [0.5] * 4, dtype=np.float32)
    unsure = CellResult(tmp_path / "unsure.png", 600, 40, boxes[:48], unsure_scores, 0.5)
    assert sure.exact_chance > 0.9 and unsure.exact_chance < case_io.rules.UNSURE_CHANCE
    results = {"sure.png": sure, "unsure.png": unsure}
    summary = case_io.summarize_case("c", results, {})
    flags = {f.code: f.message for f in summary.flags}
    assert flags["UNSURE_COUNTS"].startswith("1 cell whose count")
    assert [c.unsure for c in summary.cells] == [False, True]
    reviewed = {"unsure.png": case_io.CellReview.from_model(unsure, reviewed=True)}
    assert "UNSURE_COUNTS" not in {f.code for f in case_io.summarize_case("c", results, reviewed).flags}


def test_a_cell_with_no_chromosome_found_is_left_out_of_the_case_counts_until_reviewed(
    tmp_path: Path,
) -> None:
    """A blank frame among a case's cells counts 0 (deepace/blank_boxes.py): read as a cell, it would sit
    off the case count and ask for an extended count; it is flagged and left out instead."""

    def cell(name: str, n: int) -> CellResult:
        return CellResult(
            image=Path(name), boxes=np.zeros((n, 4), np.float32), scores=np.full(n, 0.9, np.float32)
        )

    results = {name: cell(name, n) for name, n in {"a.png": 46, "b.png": 46, "c.png": 46, "z.png": 0}.items()}
    summary = case_io.summarize_case("case", results, {})
    assert summary.counts == [46, 46, 46] and summary.case_count == 46
    assert [c.empty for c in summary.cells] == [False, False, False, True]
    assert not any(c.off_mode for c in summary.cells)
    codes = {f.code: f for f in summary.flags}
    assert (
        codes["NO_CHROMOSOMES_FOUND"].severity == "warning"
        and "z.png" in codes["NO_CHROMOSOMES_FOUND"].message
    )
    assert "CELLS_OFF_MODE" not in codes and "UNREADABLE_FILES" not in codes
    data = summary.to_dict()
    assert data["n_cells"] == 3 and data["empty"] == ["z.png"] and data["min_count"] == 46

    # a reviewer who finds a spread in it and counts 45 brings it into the case
    reviews = {"z.png": case_io.CellReview.from_model(cell("z.png", 45), reviewed=True)}
    summary = case_io.summarize_case("case", results, reviews)
    assert summary.counts == [46, 46, 46, 45] and not summary.cells[-1].empty
    assert "NO_CHROMOSOMES_FOUND" not in {f.code for f in summary.flags}


def test_the_report_marks_a_cell_with_no_chromosome_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from deepace.cli.case_cmds import _print_summary

    case = make_case(tmp_path, [46, 46, 46])
    counter = FakeCounter({"cell01.png": 46, "cell02.png": 46, "cell03.png": 0})
    paths = case_report.build_case_report(case, count_all(case, counter), tmp_path / "out")
    page = paths["html"].read_text(encoding="utf-8")
    assert page.count(">no chromosome found</span>") >= 1 and "NO_CHROMOSOMES_FOUND" in page
    rows = list(csv.DictReader(paths["csv"].open()))
    assert [r["no_chromosome_found"] for r in rows] == ["0", "0", "1"]
    assert json.loads(paths["json"].read_text())["n_cells"] == 2
    _print_summary(case, paths)
    assert "no chromosome found" in " ".join(capsys.readouterr().out.split())


def test_a_review_of_an_image_since_replaced_is_set_aside_and_its_model_output_dropped(
    tmp_path: Path,
) -> None:
    """model.json and corrections.json are keyed by file name: an image replaced under the same name
    must not inherit the old image's boxes, count or review."""
    case = make_case(tmp_path, [46, 46, 46])
    counter = FakeCounter({"cell01.png": 46, "cell02.png": 46, "cell03.png": 46})
    results = count_all(case, counter)
    case_io.write_model_json(case, results)
    model = case_io.read_model_json(case)
    reviews = {"cell01.png": case_io.CellReview.from_model(model["cell01.png"], reviewed=True)}
    reviews["cell01.png"].boxes = reviews["cell01.png"].boxes[:40]  # a reviewer's count of 40
    reviews["cell01.png"].sources, reviews["cell01.png"].scores = ["model"] * 40, [0.9] * 40
    case_io.write_corrections(case, reviews)
    assert (
        case_io.read_corrections(case)["cell01.png"].count == 40
        and case_io.read_corrections_and_set_aside(case)[1] == []
    )

    Image.new("L", (500, 300), 250).save(case / "cell01.png")  # another image under the same name
    (case / "cell03.png").unlink()
    model = case_io.read_model_json(case)
    assert sorted(model) == ["cell02.png"]  # the other two are counted again, not read from old output
    assert case_io.read_corrections(case) == {} and case_io.read_corrections_and_set_aside(case)[1] == [
        "cell01.png"
    ]

    results = count_all(case, counter)
    paths = case_report.build_case_report(case, results, tmp_path / "out")
    data = json.loads(paths["json"].read_text())
    cell = next(c for c in data["cells"] if c["name"] == "cell01.png")
    assert not cell["reviewed"] and cell["count"] == 46  # the new image's own (fake) count
    flag = next(f for f in data["flags"] if f["code"] == "REVIEWS_SET_ASIDE")
    assert flag["severity"] == "warning" and "cell01.png" in flag["message"]

    # saving the corrections again drops the set-aside review; a new review of the new image stands
    new = {"cell01.png": case_io.CellReview.from_model(results[0], reviewed=True)}
    case_io.write_corrections(case, new)
    assert (
        case_io.read_corrections_and_set_aside(case)[1] == []
        and case_io.read_corrections(case)["cell01.png"].reviewed
    )


def test_the_case_command_names_a_broken_review_file_before_counting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import deepace.inference
    from deepace.cli import case_cmds

    case = make_case(tmp_path, [46])
    made: list[object] = []
    monkeypatch.setattr(deepace.inference, "Counter", lambda **kw: made.append(kw), raising=False)
    app = typer.Typer()
    case_cmds.register(app)
    app.command("noop")(lambda: None)
    for path in (case_io.corrections_path(case), case_io.model_json_path(case)):
        path.parent.mkdir(exist_ok=True)
        path.write_text("{broken")
        res = CliRunner().invoke(app, ["case", str(case)])
        assert res.exit_code == 2 and made == [], res.output
        text = " ".join(res.output.split())
        assert path.name in text and "mend it or move it away" in text and "Traceback" not in text
        path.unlink()


def test_copies_of_one_image_under_other_names_are_flagged(tmp_path: Path) -> None:
    import shutil

    case = make_case(tmp_path, [46, 47])
    (case / "sub").mkdir()
    shutil.copy(case / "cell01.png", case / "sub" / "again.png")
    shutil.copy(case / "cell01.png", case / "cell01-copy.png")
    counter = FakeCounter({"cell01.png": 46, "cell02.png": 47, "again.png": 46, "cell01-copy.png": 46})
    summary = case_io.summarize_case(
        "case", {case_io.cell_name(r.image, case): r for r in count_all(case, counter)}, {}
    )
    flag = next(f for f in summary.flags if f.code == "DUPLICATE_IMAGES")
    assert flag.severity == "warning"
    assert flag.message.startswith(
        "2 images are copies of another cell's: cell01-copy.png = cell01.png = sub/again.png."
    )
    (tmp_path / "other").mkdir()
    distinct = make_case(tmp_path / "other", [45, 46])  # two cells of their own
    results = {r.image.name: r for r in count_all(distinct, FakeCounter({}))}
    assert "DUPLICATE_IMAGES" not in {f.code for f in case_io.summarize_case("c", results, {}).flags}


def test_cells_counted_with_different_settings_are_flagged_and_the_setting_is_kept(tmp_path: Path) -> None:
    from dataclasses import replace

    case = make_case(tmp_path, [45, 46, 47])
    results = count_all(case, FakeCounter({"cell01.png": 45, "cell02.png": 46, "cell03.png": 47}))
    results[2] = replace(results[2], magnification=2.0)  # e.g. uploaded to a review app started so
    case_io.write_model_json(case, results)
    model = case_io.read_model_json(case)
    assert [model[n].magnification for n in sorted(model)] == [1.0, 1.0, 2.0]
    flag = next(f for f in case_io.summarize_case("case", model, {}).flags if f.code == "MIXED_SETTINGS")
    assert "--magnification 1 --views 1: 2 cells (cell01.png, cell02.png)" in flag.message
    assert "--magnification 2 --views 1: 1 cell (cell03.png)" in flag.message
    results[2] = replace(results[2], magnification=1.0, view_counts=(47, 47, 46))
    mixed_views = {case_io.cell_name(r.image, case): r for r in results}
    assert "MIXED_SETTINGS" in {f.code for f in case_io.summarize_case("case", mixed_views, {}).flags}
    same = {case_io.cell_name(r.image, case): replace(r, view_counts=None) for r in results}
    assert "MIXED_SETTINGS" not in {f.code for f in case_io.summarize_case("case", same, {}).flags}


def test_cells_counted_with_a_stain_they_do_not_look_like_are_flagged(tmp_path: Path) -> None:
    from dataclasses import replace

    case = make_case(tmp_path, [45, 46])
    results = count_all(case, FakeCounter({"cell01.png": 45, "cell02.png": 46}))
    results[1] = replace(results[1], other_stain_look=True)
    case_io.write_model_json(case, results, stain="brightfield")
    model = case_io.read_model_json(case)
    assert [model[n].other_stain_look for n in sorted(model)] == [False, True]
    flag = next(f for f in case_io.summarize_case("case", model, {}).flags if f.code == "WRONG_STAIN")
    assert flag.severity == "alert" and flag.message.startswith(
        "1 cell counted with a --stain it does not look"
    )
    assert "cell02.png" in flag.message and "cell01.png" not in flag.message
