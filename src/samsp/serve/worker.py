"""The model's one thread: uploads are decoded, segmented and encoded there, one at a time, in arrival order.

One model serves every client, so requests queue for it instead of failing or running side by side (which
would multiply memory and gain nothing on a CPU the model already keeps busy); the web server's event loop
never waits for the model and keeps answering health checks and the page. Anything with a
`predict(image) -> Prediction` method can be the model: `samsp.Predictor`, or another engine with that interface.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO, Protocol, TypeVar

import numpy as np
from PIL import Image

from ..data.io import UPLOAD_FORMATS, decode_image
from ..inference.outputs import mask_image, overlay, summary_row
from ..inference.prediction import Prediction
from .schemas import PredictionOut

T = TypeVar("T")
BOX_KEYS = ("box_x0", "box_y0", "box_x1", "box_y1")


class Segmenter(Protocol):
    """What the server needs of a model: prompt-free prediction of one HxWx3 uint8 RGB image."""

    def predict(self, image: np.ndarray) -> Prediction: ...


@dataclass(frozen=True)
class Limits:
    """What one request may hold."""

    max_bytes: int = 20 * 2**20  # the whole request body: one image, or all images of a zip request
    max_pixels: int = 40_000_000  # width x height of one image, checked from its header before decoding
    max_files: int = 100  # images in one zip request
    formats: tuple[str, ...] = UPLOAD_FORMATS


class ModelWorker:
    """A single thread that runs every model call, in order; `queued` counts calls waiting or running."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="samsp-model")
        self.queued = 0

    async def run(self, fn: Callable[..., T], *args) -> T:
        """Run `fn(*args)` on the model thread once the calls before it are done; the event loop stays free."""
        self.queued += 1  # only ever changed on the event loop's thread
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        finally:
            self.queued -= 1


def client_name(filename: str | None) -> str:
    """A client's file name for messages and answers: no folders, no control characters, at most 200 characters."""
    name = re.split(r"[/\\]", filename or "")[-1]
    name = re.sub(r"[\x00-\x1f\x7f]", "", name).strip()[:200]
    return name or "upload"


def segment_upload(
    segmenter: Segmenter, stream: BinaryIO, name: str, limits: Limits, overlays: bool, submitted: float
) -> tuple[PredictionOut, Prediction]:
    """Decode an upload (never a path), segment it, and encode the answer; DataError for a bad image.

    `submitted` is the `time.perf_counter()` at which the request joined the queue.
    """
    start = time.perf_counter()
    image = decode_image(stream, name, limits.max_pixels, limits.formats)
    pred = segmenter.predict(image)
    row = summary_row(pred)
    first = dataclasses.replace(pred, mask=pred.pass_masks[0])
    answer = PredictionOut(
        filename=name,
        width=image.shape[1],
        height=image.shape[0],
        box=None if pred.box is None else [row[k] for k in BOX_KEYS],
        score=row["score"],
        foreground=row["foreground"],
        fallback=row["fallback"],
        passes=len(pred.pass_masks),
        milliseconds=0.0,
        queue_milliseconds=round((start - submitted) * 1000, 1),
        mask_png=_base64(mask_image(pred.mask), "PNG"),
        pass0_mask_png=_base64(mask_image(first.mask), "PNG"),
        overlay_jpeg=_base64(overlay(image, pred), "JPEG") if overlays else None,
        pass0_overlay_jpeg=_base64(overlay(image, first), "JPEG") if overlays else None,
    )
    answer.milliseconds = round((time.perf_counter() - start) * 1000, 1)
    return answer, pred


def _base64(picture: Image.Image, fmt: str) -> str:
    buffer = io.BytesIO()
    picture.save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return base64.b64encode(buffer.getvalue()).decode("ascii")
