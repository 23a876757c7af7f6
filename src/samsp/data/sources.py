"""From a config's `data` section (or CLI options) to lists of image/mask pairs: folders, CSV, named sets, splits."""

from __future__ import annotations

import random
from pathlib import Path

from ..config import DataConfig
from ..errors import DataError
from .named import DATASETS, fetch, pranet_split
from .pairs import Pair, find_pairs
from .splits import random_split, read_csv_pairs, read_id_list, select

PRANET_PREFIX = "pranet:"


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


def all_pairs(data: DataConfig, labelled: bool = True) -> list[Pair]:
    """Every pair the data section describes; with `labelled`, a CSV row without a mask is an error naming it."""
    if data.csv:
        return read_csv_pairs(data.csv, root=data.path, require_masks=labelled)
    if not data.path:
        raise DataError(
            Path("."), "no data given: pass --data FOLDER (with images/ and masks/), a dataset name or --csv"
        )
    return find_pairs(
        dataset_root(data.path),
        images_dir=data.images_dir,
        masks_dir=data.masks_dir,
        mask_suffix=data.mask_suffix,
        mask_ext=data.mask_ext,
        on_unpaired=data.on_unpaired,
    )


def id_list(spec: str) -> list[str]:
    """The ids of an id-list file, or of a shipped PraNet split named `pranet:<dataset>` (its training ids)."""
    if spec.startswith(PRANET_PREFIX):
        return pranet_split(spec.removeprefix(PRANET_PREFIX))[0]
    return read_id_list(spec)


def train_val_pairs(data: DataConfig, seed: int) -> tuple[list[Pair], list[Pair]]:
    """Training and validation pairs: id lists when given (validation carved from the training ids when only those
    are), else a seeded random split of all pairs; then `limit`."""
    pairs = all_pairs(data)
    if data.train_ids:
        train = select(pairs, id_list(data.train_ids), data.train_ids)
        if data.val_ids:
            val = select(pairs, id_list(data.val_ids), data.val_ids)
        else:
            train, val = random_split(train, data.val_fraction, seed)
    else:
        train, val = random_split(pairs, data.val_fraction, seed)
    if data.limit and data.limit < len(train):
        train = sorted(random.Random(seed).sample(train, int(data.limit)), key=lambda p: p.id)
    if not train:
        raise DataError(Path(str(data.path or data.csv)), "no training pairs left after the split")
    return train, val
