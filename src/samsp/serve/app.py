"""The FastAPI application: the page, the prediction API, its limits, and a one-line answer to every bad request.

Nothing a client sends is ever used as a path: uploads are decoded from memory (or the upload's spool file),
and the page's files are read from the package once, at start-up, and looked up by name.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import re
import time
import zipfile
from importlib import resources
from typing import Annotated

from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..errors import DataError, ImageTooLarge
from ..inference.outputs import rows_csv, summary_row
from ..inference.prediction import Prediction
from ..modeling.card import ModelCard, card_rows
from .schemas import ErrorOut, HealthOut, InfoOut, LimitsOut, PredictionOut
from .worker import Limits, ModelWorker, Segmenter, client_name, segment_upload

STATIC = {"app.js": "text/javascript", "style.css": "text/css"}
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",  # masks of patients' images must not linger in caches
}
IMAGE_TYPES = re.compile(r"(image/[\w.+-]+|application/octet-stream)?(;.*)?", re.IGNORECASE)
ERRORS = {code: {"model": ErrorOut} for code in (400, 413, 415, 422)}


def create_app(
    segmenter: Segmenter,
    card: ModelCard,
    limits: Limits | None = None,
    engine: dict | None = None,
    allowed_hosts: list[str] | None = None,
) -> FastAPI:
    """The application serving `segmenter` (anything with `predict(image) -> Prediction`) and its card.

    `limits`: what a request may hold (default `Limits()`). `engine` describes how predictions run (precision,
    flips...) for /api/info. `allowed_hosts` (e.g. the loopback names) refuses requests addressed to any other
    host name, which stops DNS-rebinding pages.
    """
    limits = limits or Limits()
    app = FastAPI(
        title="samsp",
        version=__version__,
        summary="Segment images with no prompt (SAM-SP).",
        docs_url=None,  # the interactive docs load scripts from a CDN; /openapi.json is the reference
        redoc_url=None,
    )
    app.add_middleware(BodyLimit, max_bytes=limits.max_bytes)
    if allowed_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)
    app.middleware("http")(security_headers)
    app.add_exception_handler(RequestValidationError, one_line_validation_error)
    add_page_routes(app)
    add_api_routes(app, segmenter, limits, model_info(card, limits, engine or {}))
    return app


def model_info(card: ModelCard, limits: Limits, engine: dict) -> InfoOut:
    """What /api/info answers: the card, how predictions run, the limits."""
    return InfoOut(
        **dataclasses.asdict(card),
        card=[list(row) for row in card_rows(card)],
        engine=engine,
        limits=LimitsOut(
            max_upload_bytes=limits.max_bytes,
            max_pixels=limits.max_pixels,
            max_files=limits.max_files,
            formats=list(limits.formats),
        ),
    )


async def security_headers(request: Request, call_next):
    """Every answer carries the security headers."""
    response = await call_next(request)
    response.headers.update(HEADERS)
    return response


async def one_line_validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
    """A request FastAPI cannot validate: 415 for a body that is not multipart, else 422 naming the field."""
    kind = request.headers.get("content-type", "")
    if request.method == "POST" and not kind.lower().startswith("multipart/form-data"):
        detail = f"send the image as multipart/form-data (got {kind or 'no content type'})"
        return JSONResponse({"detail": detail}, status_code=415)
    first = err.errors()[0]
    field = ".".join(str(part) for part in first.get("loc", ()) if part not in ("body", "query"))
    if first.get("type") == "missing":
        detail = f"missing form field '{field}': send the image as multipart/form-data field '{field}'"
    else:
        detail = f"{field}: {first.get('msg', 'invalid')}"
    return JSONResponse({"detail": detail}, status_code=422)


def add_page_routes(app: FastAPI) -> None:
    """The page and its static files, read once from the package."""
    folder = resources.files(__package__).joinpath("static")
    page = {name: folder.joinpath(name).read_bytes() for name in (*STATIC, "index.html")}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page["index.html"])

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        if name not in STATIC:
            raise HTTPException(404, f"no page file called {name[:100]!r}")
        return Response(page[name], media_type=STATIC[name])


def add_api_routes(app: FastAPI, segmenter: Segmenter, limits: Limits, info: InfoOut) -> None:
    """/api/health, /api/info, /api/predict and /api/predict/zip; predictions queue for one model thread."""
    worker = ModelWorker()

    @app.get("/api/health", response_model=HealthOut, summary="Is the server up, and how many requests wait")
    async def health() -> HealthOut:
        return HealthOut(status="ok", queued=worker.queued)

    @app.get("/api/info", response_model=InfoOut, summary="The model's card and the server's limits")
    async def model_info() -> InfoOut:
        return info

    async def predict_one(upload: UploadFile, overlays: bool) -> tuple[PredictionOut, Prediction]:
        name = client_name(upload.filename)
        kind = upload.content_type or ""
        if not IMAGE_TYPES.fullmatch(kind):
            raise HTTPException(415, f"{name}: content type {kind[:80]} is not an image; upload an image file")
        try:
            return await worker.run(segment_upload, segmenter, upload.file, name, limits, overlays, time.perf_counter())
        except ImageTooLarge as err:
            raise HTTPException(413, _one_line(err)) from err
        except DataError as err:
            raise HTTPException(400, _one_line(err)) from err

    @app.post(
        "/api/predict", response_model=PredictionOut, responses=ERRORS, summary="Segment one image with no prompt"
    )
    async def predict(
        file: Annotated[UploadFile, File(description="the image (PNG, JPEG, TIFF, BMP, GIF, WebP, PPM)")],
        overlays: Annotated[bool, Query(description="also return the overlay pictures the page shows")] = False,
    ) -> PredictionOut:
        answer, _ = await predict_one(file, overlays)
        return answer

    @app.post(
        "/api/predict/zip",
        response_class=Response,
        responses={200: {"content": {"application/zip": {}}, "description": "masks/*.png and predictions.csv"}}
        | ERRORS,
        summary="Segment several images; a zip of their mask PNGs and a CSV of scores and boxes",
        description="The images are segmented in order; one that cannot be used refuses the request, naming it.",
    )
    async def predict_zip(
        files: Annotated[list[UploadFile], File(description="the images, each as a field called files")],
    ) -> Response:
        if len(files) > limits.max_files:
            raise HTTPException(413, f"{len(files)} images in one request; send at most {limits.max_files}")
        archive, rows, used = io.BytesIO(), [], set()
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:  # PNGs are compressed already
            for upload in files:
                answer, pred = await predict_one(upload, overlays=False)
                stem = _unique_stem(answer.filename, used)
                zf.writestr(f"masks/{stem}.png", base64.b64decode(answer.mask_png))
                rows.append({"image": answer.filename, "mask": f"masks/{stem}.png", **summary_row(pred)})
            zf.writestr("predictions.csv", rows_csv(rows))
        headers = {"Content-Disposition": 'attachment; filename="masks.zip"'}
        return Response(archive.getvalue(), media_type="application/zip", headers=headers)


class BodyLimit:
    """Refuse a request body over `max_bytes` with 413: at once from Content-Length, else while it streams in."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = f"upload over the {self.max_bytes / 2**20:g} MiB limit; send a smaller or compressed image"
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            return await JSONResponse({"detail": too_large}, status_code=413, headers=HEADERS)(scope, receive, send)
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise HTTPException(413, too_large)  # FastAPI answers it like any HTTPException
            return message

        await self.app(scope, counted, send)


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


def _unique_stem(filename: str, used: set[str]) -> str:
    """A safe file stem for the zip from a client's file name, made unique among `used`."""
    stem = re.sub(r"[^\w.-]", "_", filename.rsplit(".", 1)[0]).strip("._") or "image"
    candidate, n = stem, 1
    while candidate in used:
        n += 1
        candidate = f"{stem}_{n}"
    used.add(candidate)
    return candidate
