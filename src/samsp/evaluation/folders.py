"""Score any folder of predicted masks (ours or another tool's) against ground-truth masks, paired by stem."""

from __future__ import annotations

import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from samsp.data.io import load_pil, read_mask
from samsp.data.pairs import find_images
from samsp.errors import DataError, SamspError
from samsp.evaluation.metrics import image_metrics
from samsp.evaluation.report import write_report


def read_prediction(path: str | Path) -> np.ndarray:
    """Read a saved prediction as an (H, W) float map in [0, 1].

    8-bit maps are divided by 255 (0/255 binary or 0..255 probability); maps whose maximum is <= 1 (0/1 binary
    or float probabilities) are taken as they are; 16-bit maps above 255 are divided by 65535. Colour is
    converted to grayscale.
    """
    img = load_pil(path)
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(img).astype(np.float64)
        top = float(arr.max()) if arr.size else 0.0
        scale = 1.0 if top <= 1 else 255.0 if top <= 255 else 65535.0
    else:
        arr = np.asarray(img.convert("L")).astype(np.float64)
        scale = 1.0 if arr.max() <= 1 else 255.0
    return np.clip(arr / scale, 0.0, 1.0)


def _resize_to(prob: np.ndarray, height: int, width: int) -> np.ndarray:
    # Binary maps keep hard edges (nearest); probability maps are interpolated (bilinear).
    binary = np.unique(prob).size <= 2
    resample = Image.Resampling.NEAREST if binary else Image.Resampling.BILINEAR
    resized = Image.fromarray(prob.astype(np.float32), mode="F").resize((width, height), resample)
    return np.clip(np.asarray(resized, dtype=np.float64), 0.0, 1.0)


def _score(item: tuple[str, Path, Path]) -> tuple[dict | None, str | None, tuple[Path, str] | None]:
    # Returns (row, resize note, problem) instead of raising: DataError does not survive a process pool.
    image_id, pred_path, gt_path = item
    try:
        gt = read_mask(gt_path)
        prob = read_prediction(pred_path)
    except DataError as e:
        return None, None, (e.path, e.problem)
    note = None
    if prob.shape != gt.shape:
        note = f"{pred_path.name}: {prob.shape[1]}x{prob.shape[0]} -> {gt.shape[1]}x{gt.shape[0]}"
        prob = _resize_to(prob, *gt.shape)
    return {"id": image_id, **image_metrics(prob, gt)}, note, None


def evaluate_mask_folders(
    pred_dir: str | Path,
    gt_dir: str | Path,
    out_dir: str | Path,
    mask_suffix: str = "",
    pred_suffix: str = "",
    title: str | None = None,
    workers: int = 0,
) -> dict:
    """Evaluate ``pred_dir/<id><pred_suffix>.*`` against ``gt_dir/<id><mask_suffix>.*`` and write a report.

    Every ground-truth mask needs a prediction (missing ones are listed in one SamspError); predictions with
    no ground truth are ignored with a warning. A prediction of a different size is resized to the ground
    truth (nearest for binary maps, bilinear for probability maps) with a warning. Returns the summary of
    ``report.write_report``; ``workers > 0`` scores images in that many processes.
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    gts = {}
    for path in find_images([gt_dir]):
        if path.stem.endswith(mask_suffix):
            gts[path.stem.removesuffix(mask_suffix) if mask_suffix else path.stem] = path
    if not gts:
        raise DataError(gt_dir, f"no ground-truth masks named <id>{mask_suffix}.<ext>")
    preds: dict[str, list[Path]] = {}
    for path in find_images([pred_dir]):
        if path.stem.endswith(pred_suffix):
            preds.setdefault(path.stem.removesuffix(pred_suffix) if pred_suffix else path.stem, []).append(path)
    clashes = [f"{i} ({', '.join(p.name for p in ps)})" for i, ps in preds.items() if len(ps) > 1 and i in gts]
    if clashes:
        raise DataError(pred_dir, f"several predictions share an id, keep one of each: {', '.join(clashes[:20])}")
    missing = sorted(set(gts) - set(preds))
    if missing:
        more = f" ... and {len(missing) - 20} more" if len(missing) > 20 else ""
        raise SamspError(
            f"{pred_dir}: {len(missing)} of {len(gts)} ground-truth masks have no prediction "
            f"<id>{pred_suffix}.<ext>: {', '.join(missing[:20])}{more}"
        )
    extra = sorted(set(preds) - set(gts))
    if extra:
        warnings.warn(
            f"{pred_dir}: ignoring {len(extra)} prediction(s) with no ground truth: {', '.join(extra[:10])}",
            stacklevel=2,
        )
    items = [(i, preds[i][0], gts[i]) for i in sorted(gts)]
    if workers > 0:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_score, items, chunksize=max(1, len(items) // (workers * 8))))
    else:
        results = [_score(item) for item in items]
    problems = [p for _, _, p in results if p is not None]
    if problems:
        listed = "; ".join(f"{path}: {problem}" for path, problem in problems[:20])
        raise SamspError(f"{len(problems)} file(s) could not be read: {listed}")
    notes = [n for _, n, _ in results if n is not None]
    if notes:
        warnings.warn(f"resized {len(notes)} prediction(s) to their ground-truth size, e.g. {notes[0]}", stacklevel=2)
    rows = [row for row, _, _ in results]
    return write_report(rows, out_dir, title or f"{pred_dir.name} vs {gt_dir.name}")
