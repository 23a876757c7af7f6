"""Synthetic image/mask folders for fast, deterministic tests: a bright ellipse on a textured background."""

from __future__ import annotations

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
