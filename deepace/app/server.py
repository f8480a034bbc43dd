"""The review app: a small local web server where a cytogeneticist checks and corrects automatic counts.

`create_app(case_dirs, counter_factory)` serves a plain HTML/JS page (deepace/app/static, nothing from
the internet) and a JSON API over the given case folders only. The reviewer's boxes go to
CASE/deepace-review/corrections.json (COCO, written atomically); the model's output model.json beside
it is never edited. After each change the case report is rebuilt from the corrected counts.

API (all JSON unless said otherwise; errors are {"error": "..."} with a 4xx/5xx status)::

    GET    /api/cases                                   the case folders
    GET    /api/cases/{case}/cells                      cells with counts, review state, summary, flags
    POST   /api/cases/{case}/cells                      upload an image (multipart field "file")
    GET    /api/cases/{case}/cells/{cell}/image         the cell as PNG
    GET    /api/cases/{case}/cells/{cell}/annotations   boxes (reviewer's, else the model's)
    PUT    /api/cases/{case}/cells/{cell}/annotations   save the reviewer's boxes
    DELETE /api/cases/{case}/cells/{cell}/annotations   drop the corrections: back to the model's boxes
    POST   /api/cases/{case}/cells/{cell}/reviewed      {"reviewed": true|false}
    POST   /api/cases/{case}/report                     rebuild the case report now
    GET    /api/cases/{case}/report                     the case report (HTML)
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import BackgroundTasks, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from deepace.data.coco import atomic_write_bytes
from deepace.inference import CellResult
from deepace.report import case as case_io
from deepace.report import page as case_report

log = logging.getLogger("deepace.app")

STATIC_DIR = Path(__file__).parent / "static"
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_BOXES = 1000
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "testserver")
UPLOAD_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif", "BMP": ".bmp"}

CounterFactory = Callable[[], Any]  # returns an object with count_image(path) -> CellResult


class ApiError(HTTPException):
    """An HTTP error whose detail the exception handler sends as {"error": detail}."""


# ------------------------------------------------------------------------------------------ request bodies


class BoxIn(BaseModel):
    bbox: list[float] = Field(min_length=4, max_length=4, description="x1, y1, x2, y2 in image pixels")
    score: float | None = Field(None, ge=0.0, le=1.0, description="the model's score of a model box")
    source: Literal["model", "manual"] = "manual"


class AnnotationsIn(BaseModel):
    boxes: list[BoxIn] = Field(max_length=MAX_BOXES)
    reviewed: bool | None = None


class ReviewedIn(BaseModel):
    reviewed: bool = True


# ------------------------------------------------------------------------------------------ one case


def cell_id(name: str) -> str:
    """A stable, URL-safe id for a cell: a short hash of its path inside the case folder."""
    return hashlib.sha1(name.encode("utf-8")).hexdigest()[:12]


class _Coalescer:
    """Runs a job in the calling thread unless one is running; a request during a run causes one rerun."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dirty = False

    def request(self, job: Callable[[], None]) -> None:
        self._dirty = True
        while self._dirty:
            if not self._lock.acquire(blocking=False):
                return  # the running job will see _dirty and run again
            try:
                while self._dirty:
                    self._dirty = False
                    job()
            finally:
                self._lock.release()


class CaseFolder:
    """One case folder given to the app; every path it hands out lies inside it."""

    def __init__(self, case_id: str, path: Path) -> None:
        self.id = case_id
        self.dir = path.resolve()
        self.lock = threading.RLock()
        self.report = _Coalescer()
        self.report_error: str | None = None

    def inside(self, p: Path) -> bool:
        try:
            p.resolve().relative_to(self.dir)
        except (ValueError, OSError):
            return False
        return True

    def images(self) -> dict[str, tuple[str, Path]]:
        """cell id -> (name, path), for the images that really lie inside the folder (no symlink escape)."""
        out: dict[str, tuple[str, Path]] = {}
        for p in case_io.case_images(self.dir):
            if self.inside(p):
                name = case_io.cell_name(p, self.dir)
                out[cell_id(name)] = (name, p)
        return out

    def cell(self, cid: str) -> tuple[str, Path]:
        if not re.fullmatch(r"[0-9a-f]{12}", cid):
            raise ApiError(404, "no such cell")
        found = self.images().get(cid)
        if found is None or not self.inside(found[1]):
            raise ApiError(404, "no such cell")
        return found


# ------------------------------------------------------------------------------------------ the app


class ReviewApp:
    """State behind the routes: the case folders, the lazily built counter and an image cache."""

    def __init__(self, case_dirs: Sequence[Path], counter_factory: CounterFactory | None) -> None:
        self.cases: dict[str, CaseFolder] = {}
        for d in case_dirs:
            d = Path(d)
            if not d.is_dir():
                raise ValueError(f"{d}: not a folder")
            base = re.sub(r"[^A-Za-z0-9._-]+", "_", d.resolve().name) or "case"
            cid, k = base, 2
            while cid in self.cases:
                cid, k = f"{base}-{k}", k + 1
            self.cases[cid] = CaseFolder(cid, d)
        self.counter_factory = counter_factory
        self._counter: Any = None
        self._counter_lock = threading.Lock()
        self._png_cache: OrderedDict[tuple[str, int, str], bytes] = OrderedDict()
        self._cache_lock = threading.Lock()

    # ---- lookups

    def case(self, case_id: str) -> CaseFolder:
        found = self.cases.get(case_id)
        if found is None:
            raise ApiError(404, "no such case")
        return found

    def counter(self) -> Any:
        with self._counter_lock:
            if self._counter is None:
                assert self.counter_factory is not None
                self._counter = self.counter_factory()
            return self._counter

    # ---- model output

    def model(self, case: CaseFolder, count_missing: bool = True) -> tuple[dict[str, CellResult], str | None]:
        """The model's output for the case, counting images that have none when a counter is available.
        Returns (results by name, why counting failed or None)."""
        with case.lock:
            try:
                model = case_io.read_model_json(case.dir)
            except ValueError as e:
                raise ApiError(500, f"model.json is broken: {e}") from e
            missing = [p for name, p in case.images().values() if name not in model]
            if not missing or not count_missing or self.counter_factory is None:
                return model, None
            try:
                counter = self.counter()
                with self._counter_lock:
                    results = [counter.count_image(p) for p in missing]
            except Exception as e:  # a broken model must not take the review down
                log.exception("counting failed")
                return model, f"the model could not count ({type(e).__name__}: {e})"
            case_io.write_model_json(case.dir, results, stain=getattr(counter, "stain", "auto"))
            return case_io.read_model_json(case.dir), None

    def stain(self, case: CaseFolder) -> str:
        return case_io.model_stain(case.dir)

    # ---- summaries

    def summary(self, case: CaseFolder) -> dict[str, Any]:
        model, counter_error = self.model(case)
        with case.lock:
            images = case.images()
            reviews, set_aside = self.reviews_and_set_aside(case)
        results = {name: model.get(name) for name, _ in images.values()}
        advice = case_io.model_magnification_advice(case.dir)
        summary = case_io.summarize_case(
            case.id, results, reviews, magnification_advice=advice, set_aside=set_aside
        ).to_dict()
        ids = {name: cid for cid, (name, _) in images.items()}
        for cell in summary["cells"]:
            cell["id"] = ids[cell["name"]]
            cell["counted"] = cell["name"] in model or cell["name"] in reviews
        summary["counter_error"] = counter_error
        summary["report_error"] = case.report_error
        report = case_io.default_report_dir(case.dir) / "report.html"
        summary["report_available"] = report.is_file()
        return summary

    def annotations(self, case: CaseFolder, cid: str) -> dict[str, Any]:
        name, path = case.cell(cid)
        model, _ = self.model(case)
        with case.lock:
            review = self.reviews(case).get(name)
        result = model.get(name)
        width, height = (result.width, result.height) if result is not None else (0, 0)
        if not width or not height:
            try:
                from deepace.data.images import image_size

                width, height = image_size(path)
            except Exception:
                width = height = 0
        thr = result.score_threshold if result is not None else 0.5
        band = result.low_confidence_band if result is not None else (0.3, 0.7)
        if review is None and result is not None:
            review_boxes = case_io.CellReview.from_model(result)
        else:
            review_boxes = review or case_io.CellReview()
        boxes = [
            {"bbox": [round(float(v), 2) for v in b], "score": s, "source": src}
            for b, s, src in zip(review_boxes.boxes, review_boxes.scores, review_boxes.sources, strict=True)
        ]
        candidates = []
        if result is not None and not result.error:
            taken = {tuple(round(float(v), 1) for v in b) for b in review_boxes.boxes}
            for b, s in zip(np.asarray(result.boxes), np.asarray(result.scores), strict=True):
                key = tuple(round(float(v), 1) for v in b)
                if band[0] <= s < thr and key not in taken:
                    candidates.append({"bbox": [round(float(v), 2) for v in b], "score": round(float(s), 4)})
        return {
            "id": cid,
            "name": name,
            "width": int(width),
            "height": int(height),
            "score_threshold": float(thr),
            "low_confidence_band": [float(band[0]), float(band[1])],
            "boxes": boxes,
            "candidates": candidates,
            "count": len(boxes),
            "model_count": None if result is None or result.error else result.count,
            "reviewed": bool(review is not None and review.reviewed),
            "corrected": bool(review is not None and review.differs_from(result)),
            "has_corrections": review is not None,
            "error": None if result is None else result.error,
        }

    # ---- changes

    def reviews_and_set_aside(self, case: CaseFolder) -> tuple[dict[str, case_io.CellReview], list[str]]:
        """The case's corrections and the reviews set aside (call under case.lock); a broken
        corrections.json is named, not a bare 500."""
        try:
            return case_io.read_corrections_and_set_aside(case.dir)
        except ValueError as e:
            raise ApiError(500, f"corrections.json is broken: {e}") from e

    def reviews(self, case: CaseFolder) -> dict[str, case_io.CellReview]:
        return self.reviews_and_set_aside(case)[0]

    def save(self, case: CaseFolder, cid: str, review: case_io.CellReview | None) -> None:
        """Store one cell's review (None: drop it), keeping the others."""
        name, _ = case.cell(cid)
        model, _ = self.model(case, count_missing=False)
        with case.lock:
            reviews = self.reviews(case)
            if review is None:
                reviews.pop(name, None)
            else:
                reviews[name] = review
            case_io.write_corrections(case.dir, reviews, model)

    def current_review(self, case: CaseFolder, cid: str) -> case_io.CellReview:
        name, _ = case.cell(cid)
        with case.lock:
            review = self.reviews(case).get(name)
        if review is not None:
            return review
        result = self.model(case)[0].get(name)
        return case_io.CellReview.from_model(result) if result is not None else case_io.CellReview()

    def rebuild_report(self, case: CaseFolder) -> dict[str, Path]:
        model, _ = self.model(case, count_missing=False)
        with case.lock:
            results = []
            for name, path in case.images().values():
                r = model.get(name)
                results.append(r if r is not None else CellResult(image=path, error="not counted yet"))
        paths = case_report.build_case_report(case.dir, results)
        case.report_error = None
        return paths

    def rebuild_report_later(self, case: CaseFolder) -> None:
        def job() -> None:
            try:
                self.rebuild_report(case)
            except Exception as e:
                log.exception("report rebuild failed")
                case.report_error = f"{type(e).__name__}: {e}"

        case.report.request(job)

    # ---- pictures

    def png(self, case: CaseFolder, path: Path) -> bytes:
        stain = self.stain(case)
        key = (str(path), path.stat().st_mtime_ns, stain)
        with self._cache_lock:
            if key in self._png_cache:
                self._png_cache.move_to_end(key)
                return self._png_cache[key]
        gray = case_io.load_gray(path, stain)
        buf = io.BytesIO()
        Image.fromarray(gray).save(buf, format="PNG", compress_level=1)
        data = buf.getvalue()
        with self._cache_lock:
            self._png_cache[key] = data
            while len(self._png_cache) > 16:
                self._png_cache.popitem(last=False)
        return data


def _clean_boxes(boxes: Sequence[BoxIn], width: int, height: int) -> case_io.CellReview:
    kept, sources, scores = [], [], []
    for i, b in enumerate(boxes):
        if not all(math.isfinite(v) for v in b.bbox):
            raise ApiError(400, f"box {i + 1}: coordinates must be finite numbers")
        x1, y1, x2, y2 = b.bbox
        x1, x2 = sorted((x1, x2))
        y1, y2 = sorted((y1, y2))
        if width and height:
            x1, x2 = max(0.0, x1), min(float(width), x2)
            y1, y2 = max(0.0, y1), min(float(height), y2)
        if x2 - x1 < 1 or y2 - y1 < 1:
            raise ApiError(400, f"box {i + 1} is empty or outside the image")
        kept.append([x1, y1, x2, y2])
        sources.append(b.source)
        scores.append(b.score if b.source == "model" else None)
    return case_io.CellReview(np.array(kept, dtype=np.float32).reshape(-1, 4), sources, scores)


def _safe_filename(name: str | None, ext: str) -> str:
    stem = Path(name or "upload").stem
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_-")[:80] or "upload"
    return stem + ext


def _check_image(data: bytes) -> str:
    """The file's format (PNG, JPEG, TIFF, BMP) judged by its content; ApiError if it is no such image."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format
            im.verify()
    except Image.DecompressionBombError as e:
        raise ApiError(413, "the image has too many pixels") from e
    except Exception as e:
        raise ApiError(415, "the file is not an image (PNG, JPEG, TIFF or BMP expected)") from e
    if fmt not in UPLOAD_FORMATS:
        raise ApiError(415, f"{fmt} images are not accepted (PNG, JPEG, TIFF or BMP expected)")
    return fmt


def _write_upload(folder: Path, filename: str, data: bytes) -> Path:
    stem, ext = os.path.splitext(filename)
    dest, k = folder / filename, 1
    while dest.exists():
        dest, k = folder / f"{stem}-{k}{ext}", k + 1
    atomic_write_bytes(dest, data)
    return dest


# ------------------------------------------------------------------------------------------ factory


def create_app(
    case_dirs: Sequence[Path],
    counter_factory: CounterFactory | None = None,
    allowed_hosts: Sequence[str] = LOOPBACK_HOSTS,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
) -> FastAPI:
    """The review app over `case_dirs`. `counter_factory()` builds the counter used for cells that have
    no model output yet (None: such cells are left for manual counting). `allowed_hosts` are the Host
    header names accepted ("*" for any; the default accepts loopback names only)."""
    state = ReviewApp(case_dirs, counter_factory)
    app = FastAPI(title="DeepACE review", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.review = state
    any_host = "*" in allowed_hosts

    # ---- errors: always JSON, never a stack trace

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # the client's own input is not echoed back: it may hold NaN or 1e400 (Python's json reads both),
        # which no JSON response can carry
        errors = jsonable_encoder(
            [{k: v for k, v in e.items() if k != "input"} for e in exc.errors()],
            custom_encoder={Exception: str},
        )
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", []))
        msg = f"invalid request: {where}: {first.get('msg', '')}" if first else "invalid request"
        return JSONResponse({"error": msg, "detail": errors}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"error": f"internal error ({type(exc).__name__})"}, status_code=500)

    # ---- only this machine's pages may talk to the app

    @app.middleware("http")
    async def same_origin(request: Request, call_next: Callable) -> Response:
        host = (request.headers.get("host") or "").lower()
        hostname = host.rsplit(":", 1)[0].strip("[]") if not host.startswith("[") else host[1:].split("]")[0]
        if not any_host and hostname not in allowed_hosts:
            return JSONResponse({"error": "host not allowed"}, status_code=400)
        origin = request.headers.get("origin")
        if request.method not in ("GET", "HEAD", "OPTIONS") and origin and origin.split("://", 1)[-1] != host:
            return JSONResponse({"error": "cross-origin request refused"}, status_code=403)
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    # ---- page

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    # ---- cases and cells

    @app.get("/api/cases")
    def list_cases() -> list[dict[str, Any]]:
        out = []
        for case in state.cases.values():
            with case.lock:
                n_images = len(case.images())
                reviews = state.reviews(case)
            out.append(
                {
                    "id": case.id,
                    "name": case.dir.name,
                    "path": str(case.dir),
                    "n_images": n_images,
                    "n_reviewed": sum(r.reviewed for r in reviews.values()),
                    "counted": case_io.model_json_path(case.dir).is_file(),
                }
            )
        return out

    @app.get("/api/cases/{case_id}/cells")
    def list_cells(case_id: str) -> dict[str, Any]:
        return state.summary(state.case(case_id))

    @app.get("/api/cases/{case_id}/cells/{cid}/image")
    def cell_image(case_id: str, cid: str) -> Response:
        case = state.case(case_id)
        name, path = case.cell(cid)
        try:
            data = state.png(case, path)
        except Exception as e:
            raise ApiError(422, f"{name}: the image cannot be read ({e})") from e
        return Response(data, media_type="image/png")

    @app.get("/api/cases/{case_id}/cells/{cid}/annotations")
    def get_annotations(case_id: str, cid: str) -> dict[str, Any]:
        return state.annotations(state.case(case_id), cid)

    def readable(cell: dict[str, Any]) -> dict[str, Any]:
        """The cell (`ReviewApp.annotations`), or 409 when its image cannot be read: boxes on it would
        make a reviewed count of a picture nobody saw."""
        if not cell["width"] or not cell["height"]:
            raise ApiError(409, f"{cell['name']}: the image cannot be read, so it cannot be reviewed")
        return cell

    def changed(case: CaseFolder, cid: str, background: BackgroundTasks) -> dict[str, Any]:
        background.add_task(state.rebuild_report_later, case)
        return {"cell": state.annotations(case, cid), "case": state.summary(case)}

    @app.put("/api/cases/{case_id}/cells/{cid}/annotations")
    def put_annotations(
        case_id: str, cid: str, body: AnnotationsIn, background: BackgroundTasks
    ) -> dict[str, Any]:
        case = state.case(case_id)
        current = readable(state.annotations(case, cid))
        review = _clean_boxes(body.boxes, current["width"], current["height"])
        review.reviewed = current["reviewed"] if body.reviewed is None else body.reviewed
        review.updated = case_io.now()
        state.save(case, cid, review)
        return changed(case, cid, background)

    @app.delete("/api/cases/{case_id}/cells/{cid}/annotations")
    def reset_annotations(case_id: str, cid: str, background: BackgroundTasks) -> dict[str, Any]:
        case = state.case(case_id)
        state.save(case, cid, None)
        return changed(case, cid, background)

    @app.post("/api/cases/{case_id}/cells/{cid}/reviewed")
    def set_reviewed(case_id: str, cid: str, body: ReviewedIn, background: BackgroundTasks) -> dict[str, Any]:
        case = state.case(case_id)
        readable(state.annotations(case, cid))
        review = state.current_review(case, cid)
        review.reviewed = body.reviewed
        review.updated = case_io.now()
        state.save(case, cid, review)
        return changed(case, cid, background)

    @app.post("/api/cases/{case_id}/cells", status_code=201)
    async def upload(case_id: str, request: Request, background: BackgroundTasks) -> dict[str, Any]:
        case = state.case(case_id)
        length = request.headers.get("content-length")
        if length is None or not length.isdigit():
            raise ApiError(411, "the upload needs a Content-Length")
        limit_mb = max_upload_bytes / 1024 / 1024
        if int(length) > max_upload_bytes + 64 * 1024:
            raise ApiError(413, f"the file is larger than {limit_mb:g} MB")
        form = await request.form(max_files=1, max_fields=4)
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise ApiError(400, "send the image as the multipart field 'file'")
        data = await file.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise ApiError(413, f"the file is larger than {limit_mb:g} MB")
        fmt = _check_image(data)
        dest = await run_in_threadpool(
            _write_upload, case.dir, _safe_filename(file.filename, UPLOAD_FORMATS[fmt]), data
        )
        name = case_io.cell_name(dest, case.dir)
        summary = await run_in_threadpool(state.summary, case)
        cell = next((c for c in summary["cells"] if c["name"] == name), None)
        background.add_task(state.rebuild_report_later, case)
        return {"cell": cell, "case": summary}

    # ---- report

    @app.post("/api/cases/{case_id}/report")
    def make_report(case_id: str) -> dict[str, Any]:
        case = state.case(case_id)
        paths = state.rebuild_report(case)
        return {"paths": {k: str(v) for k, v in paths.items()}, "url": f"/api/cases/{case.id}/report"}

    @app.get("/api/cases/{case_id}/report")
    def get_report(case_id: str) -> FileResponse:
        case = state.case(case_id)
        path = case_io.default_report_dir(case.dir) / "report.html"
        if not path.is_file() or not case.inside(path):
            raise ApiError(404, "no report yet: build it first")
        return FileResponse(path, media_type="text/html")

    return app
