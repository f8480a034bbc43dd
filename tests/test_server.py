"""The review app's JSON API, through FastAPI's TestClient, with a fake counter."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from deepace.app.server import create_app
from deepace.inference import CellResult
from deepace.report import case as case_io

COUNTS = {"cell01.png": 46, "cell02.png": 47, "sub/cell03.png": 46}


def grid_boxes(n: int, width: int, height: int, cols: int = 8) -> list[list[float]]:
    rows = -(-n // cols)
    cw, ch = width / cols, height / max(rows, 1)
    return [
        [(c + 0.5) * cw - 9, (r + 0.5) * ch - 22, (c + 0.5) * cw + 9, (r + 0.5) * ch + 22]
        for r, c in (divmod(i, cols) for i in range(n))
    ]


class FakeCounter:
    """Returns the grid the image was drawn with; the first box scores 0.6, plus a 0.4 candidate."""

    stain = "auto"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def count_image(self, path: Path) -> CellResult:
        path = Path(path)
        self.calls.append(path.name)
        with Image.open(path) as im:
            w, h = im.size
        n = next((v for k, v in COUNTS.items() if k.endswith(path.name)), 40)
        boxes = grid_boxes(n, w, h) + [[2.0, 2.0, 14.0, 30.0]]
        scores = [0.6] + [0.95] * (n - 1) + [0.4]
        order = np.argsort(-np.array(scores), kind="stable")
        return CellResult(path, w, h, np.array(boxes, np.float32)[order], np.array(scores, np.float32)[order])


def png_bytes(size: tuple[int, int] = (400, 320), n: int = 40) -> bytes:
    img = Image.new("L", size, 230)
    draw = ImageDraw.Draw(img)
    for b in grid_boxes(n, *size):
        draw.rectangle(b, fill=70)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def case(tmp_path: Path) -> Path:
    case = tmp_path / "patient-A"
    for name, n in COUNTS.items():
        (case / name).parent.mkdir(parents=True, exist_ok=True)
        (case / name).write_bytes(png_bytes(n=n))
    (case / "notes.txt").write_text("not an image")
    (tmp_path / "secret.png").write_bytes(png_bytes())  # outside the case: must never be served
    return case


@pytest.fixture
def counter() -> FakeCounter:
    return FakeCounter()


@pytest.fixture
def client(case: Path, counter: FakeCounter) -> TestClient:
    app = create_app([case], counter_factory=lambda: counter, max_upload_bytes=2_000_000)
    return TestClient(app, raise_server_exceptions=False)


def cells(client: TestClient) -> dict[str, dict]:
    res = client.get("/api/cases/patient-A/cells")
    assert res.status_code == 200, res.text
    return {c["name"]: c for c in res.json()["cells"]}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------ listing and counting on demand


def test_cases_and_cells_counted_on_demand(client: TestClient, case: Path, counter: FakeCounter) -> None:
    assert client.get("/api/cases").json()[0]["id"] == "patient-A"
    assert not case_io.model_json_path(case).exists()
    listed = cells(client)
    assert set(listed) == set(COUNTS)  # notes.txt is no image
    assert listed["cell02.png"]["count"] == 47 and listed["cell02.png"]["off_mode"]
    assert not listed["cell01.png"]["reviewed"]
    assert case_io.model_json_path(case).is_file() and sorted(counter.calls) == [
        "cell01.png",
        "cell02.png",
        "cell03.png",
    ]
    cells(client)
    assert len(counter.calls) == 3  # counted once, then read from model.json

    summary = client.get("/api/cases/patient-A/cells").json()
    assert summary["modal_count"] == 46
    # each counted cell carries the model's chance that its count is exact, for the list's tag
    assert all(0.0 < c["exact_chance"] < 1.0 for c in summary["cells"])
    assert {f["code"] for f in summary["flags"]} >= {"TOO_FEW_CELLS", "NOT_REVIEWED"}


def test_without_counter_cells_wait_for_manual_count(case: Path) -> None:
    client = TestClient(create_app([case]), raise_server_exceptions=False)
    listed = cells(client)
    assert all(c["count"] is None and not c["counted"] for c in listed.values())
    ann = client.get(f"/api/cases/patient-A/cells/{listed['cell01.png']['id']}/annotations").json()
    assert ann["boxes"] == [] and ann["width"] == 400 and ann["model_count"] is None


def test_cell_image_and_annotations(client: TestClient) -> None:
    cell = cells(client)["cell01.png"]
    res = client.get(f"/api/cases/patient-A/cells/{cell['id']}/image")
    assert res.status_code == 200 and res.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(res.content)).size == (400, 320)

    ann = client.get(f"/api/cases/patient-A/cells/{cell['id']}/annotations").json()
    assert ann["count"] == 46 and len(ann["boxes"]) == 46 and ann["model_count"] == 46
    assert len(ann["candidates"]) == 1 and ann["candidates"][0]["score"] == pytest.approx(0.4)
    assert ann["score_threshold"] == 0.5 and ann["low_confidence_band"] == [0.3, 0.7]
    assert {b["source"] for b in ann["boxes"]} == {"model"}


# ------------------------------------------------------------------ corrections


def test_put_corrections_saves_coco_and_keeps_model_json(client: TestClient, case: Path) -> None:
    cell = cells(client)["cell02.png"]
    url = f"/api/cases/patient-A/cells/{cell['id']}/annotations"
    model_json = case_io.model_json_path(case)
    before = sha(model_json)
    boxes = client.get(url).json()["boxes"]

    # delete two boxes, draw one: 47 -> 46
    new = boxes[2:] + [{"bbox": [300, 200, 320, 250], "source": "manual"}]
    res = client.put(url, json={"boxes": new})
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["cell"]["count"] == 46 and body["cell"]["corrected"] and not body["cell"]["reviewed"]
    assert {c["name"]: c["count"] for c in body["case"]["cells"]}["cell02.png"] == 46
    assert body["case"]["modal_count"] == 46

    assert sha(model_json) == before  # the model's output is never edited
    data = json.loads(case_io.corrections_path(case).read_text())
    (image,) = data["images"]
    assert image["file_name"] == "../cell02.png" and image["meta"]["model_count"] == 47
    anns = [a for a in data["annotations"] if a["image_id"] == image["id"]]
    assert len(anns) == 46 and sum(a["source"] == "manual" for a in anns) == 1
    assert [300, 200, 20, 50] in [a["bbox"] for a in anns]
    # atomic writes leave no temporary file behind
    assert sorted(p.name for p in model_json.parent.iterdir()) == ["corrections.json", "model.json"]

    # counts update everywhere, and the report is rebuilt from the corrected count
    assert cells(client)["cell02.png"]["count"] == 46
    report = json.loads((case / "deepace-report" / "report.json").read_text())
    assert {c["name"]: c["count"] for c in report["cells"]}["cell02.png"] == 46
    assert report["n_corrected"] == 1


def test_reviewed_and_reset(client: TestClient, case: Path) -> None:
    cell = cells(client)["cell01.png"]
    base = f"/api/cases/patient-A/cells/{cell['id']}"
    res = client.post(f"{base}/reviewed", json={"reviewed": True})
    assert res.status_code == 200 and res.json()["cell"]["reviewed"] and not res.json()["cell"]["corrected"]
    assert cells(client)["cell01.png"]["reviewed"]
    data = json.loads(case_io.corrections_path(case).read_text())
    assert data["images"][0]["expected_count"] == 46 and data["images"][0]["meta"]["reviewed"]

    # accept the uncounted candidate: the count goes up, the box keeps its model score
    ann = client.get(f"{base}/annotations").json()
    boxes = ann["boxes"] + [{**ann["candidates"][0], "source": "model"}]
    res = client.put(f"{base}/annotations", json={"boxes": boxes})
    assert res.json()["cell"]["count"] == 47 and res.json()["cell"]["reviewed"]  # review state kept
    assert res.json()["cell"]["candidates"] == []

    res = client.delete(f"{base}/annotations")
    assert res.status_code == 200
    assert res.json()["cell"]["count"] == 46 and not res.json()["cell"]["reviewed"]
    assert json.loads(case_io.corrections_path(case).read_text())["images"] == []


def test_bad_boxes_are_refused(client: TestClient) -> None:
    cell = cells(client)["cell01.png"]
    url = f"/api/cases/patient-A/cells/{cell['id']}/annotations"
    for boxes in ([{"bbox": [10, 10, 10, 40]}], [{"bbox": [900, 900, 950, 950]}], [{"bbox": [1, 2, 3]}]):
        res = client.put(url, json={"boxes": boxes})
        assert res.status_code in (400, 422) and "error" in res.json()
    res = client.put(url, content=b"{not json", headers={"content-type": "application/json"})
    assert res.status_code == 422 and "error" in res.json()
    # non-finite numbers in a malformed request: refused as malformed, not a 500 from echoing them back
    for body in (b'{"boxes": [{"x1": NaN}]}', b'{"boxes": [{"x1": 1e400}]}', b'{"boxes": NaN}'):
        res = client.put(url, content=body, headers={"content-type": "application/json"})
        assert res.status_code == 422 and res.json()["error"].startswith("invalid request: body.boxes")
    for score in (7, -0.1):  # a model box's score is a probability
        res = client.put(url, json={"boxes": [{"bbox": [1, 1, 20, 40], "source": "model", "score": score}]})
        assert res.status_code == 422 and "score" in res.json()["error"]
    # and in a well-formed one: refused by the box check
    res = client.put(
        url, content=b'{"boxes": [{"bbox": [NaN, 1, 20, 40]}]}', headers={"content-type": "application/json"}
    )
    assert res.status_code == 400 and "finite" in res.json()["error"]
    # boxes a little over the border are clipped, not refused
    res = client.put(url, json={"boxes": [{"bbox": [-5, -5, 20, 40]}]})
    assert res.status_code == 200 and res.json()["cell"]["boxes"][0]["bbox"] == [0, 0, 20, 40]


def test_report_endpoints(client: TestClient, case: Path) -> None:
    assert client.get("/api/cases/patient-A/report").status_code == 404
    cells(client)
    res = client.post("/api/cases/patient-A/report")
    assert res.status_code == 200 and Path(res.json()["paths"]["html"]).is_file()
    page = client.get("/api/cases/patient-A/report")
    assert page.status_code == 200 and "Modal count" in page.text


# ------------------------------------------------------------------ safety


def test_path_traversal_is_refused(client: TestClient, case: Path) -> None:
    cells(client)
    for url in (
        "/api/cases/..%2F..%2Fetc/cells",
        "/api/cases/%2e%2e/cells",
        "/api/cases/patient-A/cells/..%2Fsecret.png/image",
        "/api/cases/patient-A/cells/%2e%2e%2f%2e%2e%2fsecret.png/image",
        "/api/cases/patient-A/cells/notes.txt/image",
        "/api/cases/patient-A/cells/cell01.png/image",
        "/static/..%2F..%2Fserver.py",
        "/static/%2e%2e/server.py",
    ):
        res = client.get(url)
        assert res.status_code in (400, 404), url
        assert b"PNG" not in res.content[:8] and b"def create_app" not in res.content


def test_symlink_out_of_the_case_is_not_served(client: TestClient, case: Path, tmp_path: Path) -> None:
    (case / "link.png").symlink_to(tmp_path / "secret.png")
    assert "link.png" not in cells(client)


def test_errors_are_json_not_stack_traces(client: TestClient, case: Path) -> None:
    res = client.get("/api/nothing-here")
    assert res.status_code == 404 and res.json() == {"error": "Not Found"}
    res = client.get("/api/cases/nope/cells")
    assert res.status_code == 404 and res.json() == {"error": "no such case"}
    case_io.model_json_path(case).parent.mkdir()
    case_io.model_json_path(case).write_text("{broken")
    res = client.get("/api/cases/patient-A/cells")
    assert res.status_code == 500 and "error" in res.json() and "Traceback" not in res.text


def test_foreign_hosts_and_origins_are_refused(client: TestClient) -> None:
    assert client.get("/api/cases", headers={"host": "evil.example"}).status_code == 400
    cell = cells(client)["cell01.png"]
    res = client.post(
        f"/api/cases/patient-A/cells/{cell['id']}/reviewed",
        json={"reviewed": True},
        headers={"origin": "http://evil.example"},
    )
    assert res.status_code == 403


# ------------------------------------------------------------------ upload


def test_upload_an_image(client: TestClient, case: Path, counter: FakeCounter) -> None:
    cells(client)
    res = client.post(
        "/api/cases/patient-A/cells", files={"file": ("../../new cell.png", png_bytes(), "image/png")}
    )
    assert res.status_code == 201, res.text
    cell = res.json()["cell"]
    assert cell["name"] == "new_cell.png" and cell["count"] == 40  # name cleaned, counted on arrival
    assert (case / "new_cell.png").is_file() and counter.calls[-1] == "new_cell.png"
    assert not list(case.glob(".upload-*"))
    # same name again: not overwritten
    res = client.post(
        "/api/cases/patient-A/cells", files={"file": ("new cell.png", png_bytes(), "image/png")}
    )
    assert res.json()["cell"]["name"] == "new_cell-1.png"


def test_upload_refuses_non_images_and_big_files(client: TestClient, case: Path) -> None:
    res = client.post(
        "/api/cases/patient-A/cells", files={"file": ("x.png", b"<html>not an image</html>", "image/png")}
    )
    assert res.status_code == 415 and "not an image" in res.json()["error"]
    big = b"\x89PNG\r\n\x1a\n" + bytes(2_100_000)
    res = client.post("/api/cases/patient-A/cells", files={"file": ("big.png", big, "image/png")})
    assert res.status_code == 413 and "larger than" in res.json()["error"]
    res = client.post("/api/cases/patient-A/cells", data={"other": "x"})
    assert res.status_code == 400
    assert sorted(p.name for p in case.iterdir() if p.is_file()) == ["cell01.png", "cell02.png", "notes.txt"]


def test_an_image_replaced_under_its_name_is_counted_again_and_its_review_set_aside(
    client: TestClient, case: Path, counter: FakeCounter
) -> None:
    cell = cells(client)["cell01.png"]
    url = f"/api/cases/patient-A/cells/{cell['id']}"
    boxes = client.get(f"{url}/annotations").json()["boxes"][:30]
    assert client.put(f"{url}/annotations", json={"boxes": boxes, "reviewed": True}).status_code == 200
    assert cells(client)["cell01.png"]["count"] == 30 and cells(client)["cell01.png"]["reviewed"]
    calls = len(counter.calls)

    (case / "cell01.png").write_bytes(png_bytes(size=(500, 300), n=44))  # another image, the same name
    listed = client.get("/api/cases/patient-A/cells").json()
    after = {c["name"]: c for c in listed["cells"]}["cell01.png"]
    assert counter.calls[calls:] == ["cell01.png"]  # counted again, the others read from model.json
    assert not after["reviewed"] and after["count"] == 46  # the fake counter's 46 for this name
    assert "REVIEWS_SET_ASIDE" in {f["code"] for f in listed["flags"]}
    ann = client.get(f"{url}/annotations").json()
    assert (ann["width"], ann["height"]) == (500, 300) and not ann["reviewed"]


def test_an_unreadable_image_cannot_be_reviewed_and_a_broken_corrections_file_is_named(
    client: TestClient, case: Path
) -> None:
    (case / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a PNG")
    bad = cells(client)["bad.png"]
    assert bad["count"] is None
    url = f"/api/cases/patient-A/cells/{bad['id']}"
    res = client.put(f"{url}/annotations", json={"boxes": [{"bbox": [1, 1, 20, 40]}], "reviewed": True})
    assert res.status_code == 409 and "cannot be read" in res.json()["error"]
    res = client.post(f"{url}/reviewed", json={"reviewed": True})
    assert res.status_code == 409
    assert cells(client)["bad.png"]["count"] is None and not case_io.corrections_path(case).exists()

    case_io.corrections_path(case).parent.mkdir(exist_ok=True)
    case_io.corrections_path(case).write_text("{broken")
    for res in (client.get("/api/cases"), client.get("/api/cases/patient-A/cells")):
        assert res.status_code == 500 and res.json()["error"].startswith("corrections.json is broken")


def test_an_upload_rebuilds_the_report(client: TestClient, case: Path) -> None:
    cells(client)
    assert client.post("/api/cases/patient-A/report").status_code == 200
    report = case_io.default_report_dir(case) / "report.json"
    assert json.loads(report.read_text())["n_cells"] == 3
    files = {"file": ("new.png", png_bytes(n=46), "image/png")}
    assert client.post("/api/cases/patient-A/cells", files=files).status_code == 201
    assert json.loads(report.read_text())["n_cells"] == 4  # rebuilt after the response (TestClient waits)
