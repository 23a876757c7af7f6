"""What samsp writes for a prediction: the mask PNG, the overlay, the CSV row. Imports no torch."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..files import write_text_atomic
from .prediction import Prediction

OVERLAY_COLOR = np.array([0, 255, 0], dtype=np.float32)


def overlay(image: np.ndarray, pred: Prediction) -> Image.Image:
    """The image with the final mask tinted green, its outline, and the self-prompt box in yellow."""
    out = image.astype(np.float32)
    out[pred.mask] = 0.55 * out[pred.mask] + 0.45 * OVERLAY_COLOR
    picture = Image.fromarray(out.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    if pred.box is not None:
        width = max(2, round(max(image.shape[:2]) / 250))
        draw.rectangle([float(v) for v in pred.box], outline=(255, 220, 0), width=width)
    return picture


def mask_image(mask: np.ndarray) -> Image.Image:
    """A binary mask as the 8-bit grayscale picture samsp writes: 255 inside, 0 outside."""
    return Image.fromarray((mask * 255).astype(np.uint8))


def summary_row(pred: Prediction) -> dict:
    """What predictions.csv records of one prediction: score, fallback, foreground fraction, box (original pixels)."""
    box = [round(float(v), 1) for v in pred.box] if pred.box is not None else ["", "", "", ""]
    return {
        "score": round(pred.score, 4),
        "fallback": pred.fallback,
        "foreground": round(float(pred.mask.mean()), 5),
        **{f"box_{k}": v for k, v in zip(("x0", "y0", "x1", "y1"), box, strict=True)},
    }


def rows_csv(rows: list[dict]) -> str:
    """CSV text with one row per dict (the first row's keys as header)."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


def write_rows_csv(path: Path, rows: list[dict]) -> None:
    """A CSV with one row per dict (the first row's keys as header), replaced atomically."""
    write_text_atomic(path, rows_csv(rows))
