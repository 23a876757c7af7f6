"""Train/val/test splits: id lists, CSV pair lists and seeded random splits."""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np

from samsp.data.pairs import IMAGE_EXTENSIONS, Pair
from samsp.errors import DataError, SamspError
from samsp.files import write_text_atomic


def read_id_list(path: str | Path) -> list[str]:
    """Read one id per line; skips blanks and ``#`` comments, strips folders and image extensions.

    Stripping lets split files written as ``images/abc.jpg`` work unchanged; duplicates are dropped with a
    warning because they would silently weight a sample twice.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as e:
        raise DataError(path, "split file not found") from e
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(path, f"cannot read split file as UTF-8 text ({e})") from e
    ids, seen, dupes = [], set(), []
    for line in text.splitlines():
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        name = PurePosixPath(entry.replace("\\", "/")).name
        stem, ext = os.path.splitext(name)
        name = stem if ext.lower() in IMAGE_EXTENSIONS else name
        if name in seen:
            dupes.append(name)
            continue
        seen.add(name)
        ids.append(name)
    if not ids:
        raise DataError(path, "split file lists no ids (expected one id per line)")
    if dupes:
        warnings.warn(f"{path}: ignoring {len(dupes)} duplicate id(s): {', '.join(dupes[:10])}", stacklevel=2)
    return ids


def select(pairs: Sequence[Pair], ids: Sequence[str], source: str | Path) -> list[Pair]:
    """The pairs named by ``ids``, in that order; ids not in ``pairs`` are an error naming ``source``."""
    by_id = {p.id: p for p in pairs}
    missing = [i for i in ids if i not in by_id]
    if missing:
        more = f" ... and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise DataError(
            source,
            f"{len(missing)} of {len(ids)} ids are not in the dataset: {', '.join(missing[:10])}{more}; "
            "check that the split belongs to this dataset folder",
        )
    return [by_id[i] for i in ids]


def read_csv_pairs(path: str | Path, root: str | Path | None = None, require_masks: bool = False) -> list[Pair]:
    """Read a CSV with header ``image,mask``; relative paths resolve against ``root``, else the CSV's folder.

    The id is the image file stem. An empty mask cell gives an unlabelled pair, or with ``require_masks`` (training,
    evaluation) an error naming the line. All missing files are reported in one error so a user fixes the list in
    one pass.
    """
    path = Path(path)
    base = Path(root) if root is not None else path.parent
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in reader.fieldnames or []]
            if "image" not in header or "mask" not in header:
                raise DataError(path, f"CSV header must contain 'image' and 'mask' columns, found {header}")
            rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    except FileNotFoundError as e:
        raise DataError(path, "CSV file not found") from e
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(path, f"cannot read CSV ({e})") from e
    pairs, missing, seen = [], [], set()
    for line_no, row in enumerate(rows, start=2):
        if not row["image"]:
            raise DataError(path, f"line {line_no}: empty image cell")
        if require_masks and not row["mask"]:
            raise DataError(
                path, f"line {line_no}: empty mask cell; training and evaluation need a mask for every image"
            )
        image = base / row["image"]
        mask = base / row["mask"] if row["mask"] else None
        missing.extend(f"line {line_no}: {p}" for p in (image, mask) if p is not None and not p.is_file())
        if image.stem in seen:
            raise DataError(path, f"line {line_no}: id {image.stem!r} appears twice; image file names must be unique")
        seen.add(image.stem)
        pairs.append(Pair(image.stem, image, mask))
    if missing:
        more = f" ... and {len(missing) - 20} more" if len(missing) > 20 else ""
        raise DataError(path, f"{len(missing)} listed file(s) do not exist: {'; '.join(missing[:20])}{more}")
    if not pairs:
        raise DataError(path, "CSV lists no rows")
    return pairs


def random_split(pairs: Sequence[Pair], val_fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """Split into (train, val), both sorted by id; the result depends only on the set of ids and the seed."""
    if not 0.0 < val_fraction < 1.0:
        raise SamspError(f"val_fraction must be between 0 and 1 (exclusive), not {val_fraction}")
    ordered = sorted(pairs, key=lambda p: p.id)
    if len(ordered) < 2:
        raise SamspError(f"need at least 2 pairs to make a validation split, have {len(ordered)}")
    n_val = min(max(1, round(len(ordered) * val_fraction)), len(ordered) - 1)
    order = np.random.default_rng(seed).permutation(len(ordered))
    val_idx = set(order[:n_val].tolist())
    train = [p for k, p in enumerate(ordered) if k not in val_idx]
    val = [p for k, p in enumerate(ordered) if k in val_idx]
    return train, val


def write_split(path: str | Path, pairs: Sequence[Pair]) -> None:
    """Write ids one per line, atomically: a crash must not leave a half-written split that later loads."""
    write_text_atomic(path, "".join(f"{p.id}\n" for p in pairs))
