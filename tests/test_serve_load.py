"""Load on `samsp serve` (its own process, tiny backbone, loopback): 32 concurrent clients send 200 requests in all.

Every answer must be right; requests/s, p50/p95 latency and the server's peak memory are printed (run with -s),
and only a generous memory bound is asserted, never a time.
"""

from __future__ import annotations

import asyncio
import base64
import io
import time
from pathlib import Path

import httpx
import numpy as np
from helpers import SIZES, ellipse_pair
from PIL import Image
from servers import serve_process

from samsp import Predictor, SamSP

CLIENTS, REQUESTS = 32, 200
MEMORY_BOUND = 3 * 2**30  # the tiny model's server needs a few hundred MiB; this only catches a leak per request


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def memory(pid: int, field: str = "VmHWM") -> int | None:
    """A process's peak (VmHWM) or current (VmRSS) resident memory in bytes (Linux), or None without /proc."""
    status = Path(f"/proc/{pid}/status")
    if not status.is_file():
        return None
    for line in status.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return None


async def load(url: str, uploads: list[bytes]) -> tuple[list[tuple[int, dict]], list[float], list[float], float]:
    """Send request i (image i % len(uploads)) from client i % CLIENTS; probe health meanwhile."""
    answers: list = [None] * REQUESTS
    latencies: list[float] = []
    health: list[float] = []
    finished = asyncio.Event()

    async def client(k: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=600) as session:
            for i in range(k, REQUESTS, CLIENTS):
                files = {"file": (f"{i}.png", uploads[i % len(uploads)], "image/png")}
                start = time.perf_counter()
                response = await session.post("/api/predict", files=files)
                latencies.append(time.perf_counter() - start)
                answers[i] = (response.status_code, response.json())

    async def probe() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as session:
            while not finished.is_set():
                start = time.perf_counter()
                assert (await session.get("/api/health")).status_code == 200
                health.append(time.perf_counter() - start)
                await asyncio.sleep(0.25)

    start = time.perf_counter()
    prober = asyncio.create_task(probe())
    await asyncio.gather(*(client(k) for k in range(CLIENTS)))
    elapsed = time.perf_counter() - start
    finished.set()
    await prober
    return answers, latencies, health, elapsed


def test_32_clients_200_requests_all_answered_right(tiny_model_dir):
    rng = np.random.default_rng(0)
    images = [ellipse_pair(h, w, rng)[0] for h, w in SIZES]
    predictor = Predictor(SamSP.from_pretrained(tiny_model_dir))
    expected = [predictor.predict(image).mask for image in images]
    uploads = [png(image) for image in images]
    with serve_process("--model", str(tiny_model_dir)) as (url, process):
        idle = memory(process.pid, "VmRSS")
        answers, latencies, health, elapsed = asyncio.run(load(url, uploads))
        peak = memory(process.pid)
    masks: dict[int, np.ndarray] = {}
    for i, (status, answer) in enumerate(answers):
        assert status == 200, answer
        k = i % len(images)
        mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["mask_png"])))) == 255
        assert mask.shape == expected[k].shape
        assert np.array_equal(mask, masks.setdefault(k, mask))  # every answer for an image is the same
        assert (mask == expected[k]).mean() > 0.999  # and the Predictor's (another process: float order may differ)
    p50, p95 = np.percentile(latencies, [50, 95]) * 1000
    rss = f"{peak / 2**20:.0f} MiB (idle before the load: {idle / 2**20:.0f} MiB)" if peak and idle else "not measured"
    print(
        f"\nload: {REQUESTS} requests from {CLIENTS} clients in {elapsed:.1f} s = {REQUESTS / elapsed:.1f} requests/s; "
        f"latency p50 {p50:.0f} ms, p95 {p95:.0f} ms; health answered {len(health)} times during the load "
        f"(median {np.median(health) * 1000:.0f} ms, slowest {max(health) * 1000:.0f} ms); server peak RSS {rss}"
    )
    assert peak is None or peak < MEMORY_BOUND
