"""The review page in a real (headless) Chromium: delete a box by clicking, draw one by dragging.

Needs Debian's chromium (/usr/bin/chromium) and the playwright Python package; skipped otherwise.
Saves a screenshot to tmp_path and, if DEEPACE_ARTIFACTS is set, into that folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from deepace.inference import CellResult
from deepace.report import case as case_io

CHROMIUM = Path("/usr/bin/chromium")
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed"),
]

SIZE = (720, 540)
COUNTS = {"cell01.png": 46, "cell02.png": 47, "cell03.png": 45}


def grid_boxes(n: int, width: int, height: int, cols: int = 8) -> list[list[float]]:
    rows = -(-n // cols)
    cw, ch = width / cols, height / max(rows, 1)
    rng = np.random.default_rng(n)
    boxes = []
    for i in range(n):
        r, c = divmod(i, cols)
        cx, cy = (c + 0.5) * cw + rng.uniform(-12, 12), (r + 0.5) * ch + rng.uniform(-8, 8)
        half_h = rng.uniform(14, 30)
        boxes.append([cx - 8, cy - half_h, cx + 8, cy + half_h])
    return boxes


def make_case(root: Path) -> Path:
    case = root / "patient-B"
    case.mkdir()
    for name, n in COUNTS.items():
        img = Image.new("L", SIZE, 232)
        draw = ImageDraw.Draw(img)
        for b in grid_boxes(n, *SIZE):
            draw.rounded_rectangle([b[0] + 3, b[1] + 3, b[2] - 3, b[3] - 3], radius=5, fill=75)
        img.save(case / name)
    return case


class FakeCounter:
    stain = "auto"

    def count_image(self, path: Path) -> CellResult:
        path = Path(path)
        with Image.open(path) as im:
            w, h = im.size
        n = COUNTS[path.name]
        boxes = grid_boxes(n, w, h) + [[4.0, 4.0, 20.0, 40.0]]
        scores = [0.95] * (n - 2) + [0.62, 0.55] + [0.4]
        return CellResult(path, w, h, np.array(boxes, np.float32), np.array(scores, np.float32))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    import uvicorn

    from deepace.app.server import create_app

    case = make_case(tmp_path)
    app = create_app([case], counter_factory=FakeCounter)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", case
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


def corrections(case: Path, name: str) -> tuple[dict, list[dict]]:
    data = json.loads(case_io.corrections_path(case).read_text())
    (image,) = [i for i in data["images"] if i["file_name"] == f"../{name}"]
    return image, [a for a in data["annotations"] if a["image_id"] == image["id"]]


def test_review_in_the_browser(server: tuple[str, Path], tmp_path: Path) -> None:
    url, case = server
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            outside: list[str] = []
            page.on("request", lambda r: None if r.url.startswith(url) else outside.append(r.url))

            page.goto(url)
            page.wait_for_selector("body[data-cell-ready]", timeout=20_000)
            assert page.inner_text("#cell-name") == "cell01.png"
            assert page.inner_text("#count") == "46"
            assert page.locator("#cells li").count() == 3
            # every automatic count shows the model's chance that it is exact
            assert page.locator("#cells li .tag.chance").count() == 3
            # 46, 47 and 45 once each, all automatic: the case is read by its median count, 46
            assert "Median count 46" in page.inner_text("#case-stats")
            model_sha = hashlib.sha256(case_io.model_json_path(case).read_bytes()).hexdigest()

            def screen(x: float, y: float) -> tuple[float, float]:
                sx, sy = page.evaluate(f"toScreen({x}, {y})")
                box = page.locator("#canvas").bounding_box()
                assert box is not None
                return box["x"] + sx, box["y"] + sy

            def wait_saved() -> None:
                page.wait_for_selector("body[data-save-state='saved']", timeout=10_000)

            # click a box: it is deleted, the count drops at once
            b = grid_boxes(46, *SIZE)[10]
            page.mouse.click(*screen((b[0] + b[2]) / 2, (b[1] + b[3]) / 2))
            assert page.inner_text("#count") == "45"
            wait_saved()
            image, anns = corrections(case, "cell01.png")
            assert len(anns) == 45 and image["meta"]["model_count"] == 46

            # drag on an empty spot: a new box, count back to 46
            x0, y0 = screen(600, 500)
            x1, y1 = screen(625, 532)
            page.mouse.move(x0, y0)
            page.mouse.down()
            page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=4)
            page.mouse.move(x1, y1, steps=4)
            page.mouse.up()
            assert page.inner_text("#count") == "46"
            wait_saved()
            image, anns = corrections(case, "cell01.png")
            manual = [a for a in anns if a["source"] == "manual"]
            assert len(anns) == 46 and len(manual) == 1
            x, y, w, h = manual[0]["bbox"]
            assert abs(x - 600) < 2 and abs(y - 500) < 2 and abs(w - 25) < 2 and abs(h - 32) < 2

            # zoom with the wheel, then mark the cell reviewed
            s0 = page.evaluate("state.view.s")
            page.mouse.move(*screen(360, 270))
            page.mouse.wheel(0, -300)
            assert page.evaluate("state.view.s") > s0
            page.click("#fit")
            page.click("#reviewed")
            wait_saved()
            image, _ = corrections(case, "cell01.png")
            assert image["meta"]["reviewed"] is True and image["expected_count"] == 46
            assert page.locator("#cells li.current .tick").count() == 1
            assert page.locator("#cells li.current .tag.chance").count() == 0  # the reviewer's count stands

            # the list and the case stay in step; model.json untouched; the report follows the corrections
            assert page.inner_text("#cells li.current .cnt") == "46"
            assert hashlib.sha256(case_io.model_json_path(case).read_bytes()).hexdigest() == model_sha
            deadline = time.monotonic() + 10
            report = case / "deepace-report" / "report.json"
            while not (report.exists() and json.loads(report.read_text())["n_reviewed"] == 1):
                assert time.monotonic() < deadline, "report not rebuilt"
                time.sleep(0.1)

            page.mouse.move(*screen(*grid_boxes(46, *SIZE)[20][:2]))  # hover: shows the delete highlight
            shot = tmp_path / "review.png"
            page.screenshot(path=str(shot))
            if os.environ.get("DEEPACE_ARTIFACTS"):
                dest = Path(os.environ["DEEPACE_ARTIFACTS"])
                dest.mkdir(parents=True, exist_ok=True)
                shutil.copy(shot, dest / "review.png")
            assert errors == [] and outside == []
        finally:
            browser.close()
