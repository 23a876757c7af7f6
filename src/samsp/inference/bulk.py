"""Predict many image files: streamed, resumable, and sharded across processes. Imports no torch itself.

Threads decode the next batches while the model works and others write the PNGs, so at most `prefetch` batches of
images wait in memory. Each finished image appends one row to its process's part file,
`predictions.parts/<rank>.csv`, after its PNGs are in place (each written atomically), so a rerun of the same
command skips every image with a row and an interrupted run simply continues. The process that finishes last merges
the parts into `predictions.csv`, in input order. Under torchrun or `accelerate launch` (RANK and WORLD_SIZE set),
process r takes images r, r + WORLD_SIZE, ...
"""

from __future__ import annotations

import csv
import io
import logging
import os
import threading
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..data.io import read_image
from ..data.pairs import find_images
from ..errors import SamspError
from ..files import atomic_path, remove_stale_temporaries
from ..progress import Progress
from .outputs import mask_image, overlay, summary_row, write_rows_csv
from .prediction import BatchPredictor, Prediction

log = logging.getLogger("samsp")

PARTS_DIR = "predictions.parts"
FIELDS = ["image", "mask", "score", "fallback", "foreground", "box_x0", "box_y0", "box_x1", "box_y1"]


def shard() -> tuple[int, int]:
    """(rank, world size) from the launcher's environment; (0, 1) for a plain process."""
    try:
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError as err:
        raise SamspError(f"RANK / WORLD_SIZE must be integers ({err})") from err
    if not 0 <= rank < world:
        raise SamspError(f"RANK={rank} is outside WORLD_SIZE={world}")
    return rank, world


def predict_files(
    predictor: BatchPredictor,
    inputs: list[str | Path],
    out_dir: str | Path,
    overlays: bool = True,
    prefetch: int = 2,
    writers: int = 2,
) -> list[dict]:
    """Predict every image in `inputs` (files, folders, or .txt lists of paths) with either engine; write masks/,
    overlays/ and predictions.csv into `out_dir`. Returns the rows of every image done so far, in input order."""
    paths = input_images(inputs)
    rank, world = shard()
    out_dir = Path(out_dir)
    part = PartFile(out_dir / PARTS_DIR / f"{rank:05d}.csv")
    for folder in (out_dir / "masks", out_dir / "overlays"):
        remove_stale_temporaries(folder)
    done = finished_rows(out_dir, overlays)
    todo = [p for p in paths[rank::world] if str(p) not in done]
    written = _stream(predictor, todo, out_dir, overlays, part, prefetch, writers)
    for _ in Progress(written, total=len(todo), desc="predicting", unit="img"):
        pass
    rows = finished_rows(out_dir, overlays)
    if all(str(p) in rows for p in paths):  # the last process to finish writes the merged table
        write_rows_csv(out_dir / "predictions.csv", [rows[str(p)] for p in paths])
    else:  # other processes are still at work on their shares
        log.info("this process's share is done; the last process to finish writes predictions.csv")
    return [rows[str(p)] for p in paths if str(p) in rows]


def input_images(inputs: list[str | Path]) -> list[Path]:
    """Image files from files, folders and .txt lists (one path per line, relative to the list's folder)."""
    expanded: list[str | Path] = []
    for raw in inputs:
        path = Path(raw)
        if path.suffix.lower() == ".txt" and path.is_file():
            lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
            listed = [path.parent / line for line in lines if line and not line.startswith("#")]
            if not listed:
                raise SamspError(f"{path}: the list holds no image paths")
            expanded += listed
        else:
            expanded.append(path)
    paths = find_images(expanded)
    clashes = sorted(stem for stem, n in Counter(p.stem for p in paths).items() if n > 1)
    if clashes:
        raise SamspError(
            f"several inputs share the name {', '.join(clashes[:5])}: outputs would overwrite "
            "each other; predict those folders separately"
        )
    return paths


def finished_rows(out_dir: Path, overlays: bool) -> dict[str, dict]:
    """Rows of images whose outputs are complete, from every process's part file, keyed by image path."""
    rows: dict[str, dict] = {}
    for part in sorted((out_dir / PARTS_DIR).glob("*.csv")):
        text = part.read_text(errors="replace")
        text = text[: text.rfind("\n") + 1]  # a line cut by a kill is not a row
        for row in csv.DictReader(io.StringIO(text)):
            if None in row or any(row.get(k) is None for k in FIELDS):
                continue
            stem = Path(row["mask"]).stem
            if (out_dir / row["mask"]).is_file() and (not overlays or (out_dir / "overlays" / f"{stem}.png").is_file()):
                rows[row["image"]] = {k: _typed(k, row[k]) for k in FIELDS}
    return rows


class PartFile:
    """One process's rows, appended one line at a time (a line cut by a kill is dropped when the file is reopened)."""

    def __init__(self, path: Path):
        self.path, self.lock = path, threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file():
            data = path.read_bytes()
            keep = data[: data.rfind(b"\n") + 1]
            if keep != data:
                with path.open("r+b") as handle:
                    handle.truncate(len(keep))
        if not path.is_file() or path.stat().st_size == 0:
            self._append(",".join(FIELDS) + "\n")

    def append(self, row: dict) -> None:
        text = io.StringIO()
        csv.DictWriter(text, fieldnames=FIELDS, lineterminator="\n").writerow(row)
        self._append(text.getvalue())

    def _append(self, line: str) -> None:
        with self.lock:
            try:
                with self.path.open("a") as handle:
                    handle.write(line)
            except OSError as err:
                raise SamspError(f"{self.path}: could not write ({err.strerror or err})") from err


def _stream(
    predictor: BatchPredictor,
    paths: list[Path],
    out_dir: Path,
    overlays: bool,
    part: PartFile,
    prefetch: int,
    writers: int,
) -> Iterator[Path]:
    """Decode ahead, predict batch by batch, write behind; yields each image once its outputs and row are written."""
    with (
        ThreadPoolExecutor(max(1, prefetch), "samsp-read") as readers,
        ThreadPoolExecutor(max(1, writers), "samsp-write") as pool,
    ):
        pending: deque[tuple[Path, Future]] = deque()
        for chunk, images in _decoded(readers, paths, predictor.batch_size, prefetch):
            for path, image, pred in zip(chunk, images, predictor.predict_batch(images), strict=True):
                pending.append((path, pool.submit(_write, out_dir, path, image, pred, overlays, part)))
            while len(pending) > max(1, writers) * predictor.batch_size:  # bound what waits to be written
                path, job = pending.popleft()
                job.result()
                yield path
        while pending:
            path, job = pending.popleft()
            job.result()
            yield path


def _decoded(readers: ThreadPoolExecutor, paths: list[Path], batch_size: int, prefetch: int) -> Iterator:
    """(paths, images) batch by batch, decoded `prefetch` batches ahead by the reader threads."""
    chunks = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
    ahead: deque[Future] = deque()
    for k, chunk in enumerate(chunks):
        while len(ahead) <= prefetch and k + len(ahead) < len(chunks):
            ahead.append(readers.submit(lambda c: [read_image(p) for p in c], chunks[k + len(ahead)]))
        yield chunk, ahead.popleft().result()


def _write(out_dir: Path, path: Path, image: np.ndarray, pred: Prediction, overlays: bool, part: PartFile) -> None:
    mask = f"masks/{path.stem}.png"
    _save_png(mask_image(pred.mask), out_dir / mask)
    if overlays:
        _save_png(overlay(image, pred), out_dir / "overlays" / f"{path.stem}.png")
    part.append({"image": str(path), "mask": mask, **summary_row(pred)})


def _save_png(picture, path: Path) -> None:
    try:
        with atomic_path(path) as tmp:
            picture.save(tmp, format="PNG")
    except OSError as err:  # full disk, quota, read-only folder: nothing half-written is left behind
        raise SamspError(f"{path}: could not write ({err.strerror or err})") from err


def _typed(key: str, value: str):
    """A part-file cell back to what `summary_row` wrote."""
    if key in ("image", "mask") or value == "":
        return value
    if key == "fallback":
        return value == "True"
    return float(value)
