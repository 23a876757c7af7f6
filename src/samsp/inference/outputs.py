"""Segment image files with no prompt: binary mask PNGs at the original size, overlays, and a CSV of scores.

It takes either engine (`Predictor`, `OnnxPredictor`) and imports no torch itself.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..data.io import read_image
from ..data.pairs import find_images
from ..errors import SamspError
from ..files import atomic_path, write_text_atomic
from ..progress import Progress
from .prediction import BatchPredictor, Prediction

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


def _save_png(picture: Image.Image, path: Path) -> None:
    try:
        with atomic_path(path) as tmp:
            picture.save(tmp, format="PNG")
    except OSError as err:  # full disk, quota, read-only folder: nothing half-written is left behind
        raise SamspError(f"{path}: could not write ({err.strerror or err})") from err


def predict_files(
    predictor: BatchPredictor, inputs: list[str | Path], out_dir: str | Path, overlays: bool = True
) -> list[dict]:
    """Predict every image in `inputs` (files or folders) with either engine; write masks/, overlays/ and
    predictions.csv."""
    paths = find_images(inputs)
    if not paths:
        raise SamspError(f"no images found in {', '.join(map(str, inputs))}")
    clashes = sorted(stem for stem, n in Counter(p.stem for p in paths).items() if n > 1)
    if clashes:
        raise SamspError(
            f"several inputs share the name {', '.join(clashes[:5])}: outputs would overwrite "
            "each other; predict those folders separately"
        )
    out_dir = Path(out_dir)
    rows = []
    batch_size = predictor.batch_size
    for start in Progress(range(0, len(paths), batch_size), desc="predicting", unit="batch"):
        chunk = paths[start : start + batch_size]
        images = [read_image(p) for p in chunk]
        for path, image, pred in zip(chunk, images, predictor.predict_batch(images), strict=True):
            _save_png(mask_image(pred.mask), out_dir / "masks" / f"{path.stem}.png")
            if overlays:
                _save_png(overlay(image, pred), out_dir / "overlays" / f"{path.stem}.png")
            rows.append({"image": str(path), "mask": f"masks/{path.stem}.png", **summary_row(pred)})
    write_rows_csv(out_dir / "predictions.csv", rows)
    return rows


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
