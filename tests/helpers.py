"""Synthetic image/mask folders for fast, deterministic tests: a bright ellipse on a textured background."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

SIZES = [(96, 128), (128, 96), (110, 110), (90, 140), (120, 100), (100, 130), (128, 128), (80, 120)]


def ellipse_pair(h: int, w: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:h, :w]
    cy, cx = rng.uniform(0.35, 0.65) * h, rng.uniform(0.35, 0.65) * w
    ry, rx = rng.uniform(0.15, 0.3) * h, rng.uniform(0.15, 0.3) * w
    mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    image = rng.normal(70, 20, (h, w, 3))
    image[mask] += np.array([120, 60, 30])
    return image.clip(0, 255).astype(np.uint8), mask


def make_dataset(root: Path, n: int = 8, seed: int = 0) -> Path:
    """root/images/case_i.png and root/masks/case_i.png (0/255), sizes varying, seeded."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        h, w = SIZES[i % len(SIZES)]
        image, mask = ellipse_pair(h, w, rng)
        Image.fromarray(image).save(root / "images" / f"case_{i:02d}.png")
        Image.fromarray((mask * 255).astype(np.uint8)).save(root / "masks" / f"case_{i:02d}.png")
    return root


def child_env(**extra: str) -> dict:
    """The environment for a samsp child process in a test: one thread, unbuffered output."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}


def kill_when_busy(child: subprocess.Popen, busy: Callable[[], bool], delay: float, timeout: float = 120) -> bool:
    """Wait until `busy()` says the child is at work, `delay` seconds more, then SIGKILL it. False when the child
    ended first (or never got busy), so there was nothing to kill."""
    deadline = time.monotonic() + timeout
    while child.poll() is None and time.monotonic() < deadline and not busy():
        time.sleep(0.02)
    if child.poll() is not None or not busy():
        return False
    time.sleep(delay)
    if child.poll() is not None:
        return False
    child.send_signal(signal.SIGKILL)
    child.wait()
    return True
