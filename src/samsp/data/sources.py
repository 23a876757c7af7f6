"""From a config's `data` section (or CLI options) to lists of image/mask pairs: folders, CSV, named sets, splits."""

from __future__ import annotations

import random
from pathlib import Path

from ..errors import DataError
from .named import DATASETS, fetch
from .pairs import Pair, find_pairs
from .splits import random_split, read_csv_pairs, read_id_list, select


def dataset_root(path: str | Path) -> Path:
    """A folder as it is; a dataset name (kvasir-seg, isic2018) is downloaded on first use and cached."""
    if str(path) in DATASETS and not Path(path).exists():
        return fetch(str(path))
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(
            root,
            f"data folder not found (give a folder with images/ and masks/, or one of {', '.join(sorted(DATASETS))})",
        )
    return root


def all_pairs(data: dict) -> list[Pair]:
    """Every pair the data section describes."""
    if data.get("csv"):
        return read_csv_pairs(data["csv"], root=data.get("path"))
    if not data.get("path"):
        raise DataError(Path("."), "no data given: pass --data FOLDER (with images/ and masks/) or a dataset name")
    return find_pairs(
        dataset_root(data["path"]),
        images_dir=data.get("images_dir", "images"),
        masks_dir=data.get("masks_dir", "masks"),
        mask_suffix=data.get("mask_suffix", ""),
        mask_ext=data.get("mask_ext"),
        on_unpaired=data.get("on_unpaired", "error"),
    )


def train_val_pairs(data: dict, seed: int) -> tuple[list[Pair], list[Pair]]:
    """Training and validation pairs: id-list files when given, else a seeded random split; then `limit`."""
    pairs = all_pairs(data)
    if data.get("train_ids"):
        train = select(pairs, read_id_list(data["train_ids"]), data["train_ids"])
        if data.get("val_ids"):
            val = select(pairs, read_id_list(data["val_ids"]), data["val_ids"])
        else:
            train, val = random_split(train, data.get("val_fraction", 0.1), seed)
    else:
        train, val = random_split(pairs, data.get("val_fraction", 0.1), seed)
    limit = data.get("limit")
    if limit and limit < len(train):
        train = sorted(random.Random(seed).sample(train, int(limit)), key=lambda p: p.id)
    if not train:
        raise DataError(Path(str(data.get("path") or data.get("csv"))), "no training pairs left after the split")
    return train, val
