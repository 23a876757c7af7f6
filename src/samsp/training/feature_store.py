"""The cached frozen-prefix features kept on disk (`runtime.cache_dir`), so a later run on the same images with the
same pretrained weights skips encoding them (on a CPU, about 1 s per LiteMedSAM image: 22 minutes for the polyp
protocol's 1375 training images).

A file is named by a SHA-256 of everything its features depend on: the decoded training images and masks, the
frozen encoder weights, how many stages were run, the views, their augmentation and seed, the dtype and autocast.
A changed image, checkpoint or setting therefore reads another file; a file that cannot be read is encoded again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
from pathlib import Path
from typing import BinaryIO

import torch
from safetensors.torch import load_file

from ..data.prepared import PreparedSet
from ..modeling.persistence import update_digest
from ..modeling.sam_sp import SamSP

log = logging.getLogger("samsp")
FORMAT = "samsp-prefix-features-1"


def store_path(folder: Path, data: PreparedSet, model: SamSP, stop: int, recipe: tuple) -> Path:
    """The file for these images, frozen weights, prefix depth and `recipe` (views, seed, augmentation, dtype...)."""
    digest = hashlib.sha256(repr((FORMAT, model.backbone.name, stop, recipe)).encode())
    for image, mask in zip(data.images, data.masks, strict=True):
        digest.update(image.numpy().tobytes())
        digest.update(mask.numpy().tobytes())
    # only the prefix's own weights, so runs that train the later stages differently share a file
    update_digest(digest, model.prefix_weights(stop))
    return folder / f"{digest.hexdigest()[:32]}.safetensors"


def load(path: Path, n_images: int, views: int) -> tuple[list, list] | None:
    """Features and items per image and view, or None when the file is absent or unreadable (then encode again)."""
    if not path.is_file():
        return None
    try:
        stored = load_file(path)
        features, masks, valid_hw = stored["features"], stored["masks"], stored["valid_hw"]
        if features.shape[0] != n_images * views:
            raise ValueError(f"{features.shape[0]} entries, expected {n_images * views}")
    except Exception as err:  # a truncated or foreign file: the cache is an optimisation, never a failure
        log.warning("%s: cannot be read (%s); encoding the images again", path, str(err).splitlines()[0])
        return None
    log.info("read the cached frozen encoder prefix from %s", path)
    index = [[i * views + v for v in range(views)] for i in range(n_images)]
    return (
        [[features[k] for k in ks] for ks in index],
        [[{"mask": masks[k], "valid_hw": valid_hw[k]} for k in ks] for ks in index],
    )


def save(path: Path, features: list, items: list) -> None:
    """Write atomically (a temporary file, then a rename), so a killed run never leaves a half-written cache.

    The file is safetensors with one stacked tensor per name, written image by image: the features are never held
    twice in memory (stacking them first doubled the peak: 30 GB for 1230 LiteMedSAM images at 384 px in float32).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = {
        "features": [f for per_view in features for f in per_view],
        "masks": [it["mask"] for per_view in items for it in per_view],
        "valid_hw": [it["valid_hw"] for per_view in items for it in per_view],
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as file:
            write_stacked(file, rows)
        os.replace(tmp, path)
    except OSError as err:  # a full disk costs the reuse, not the run
        tmp.unlink(missing_ok=True)
        log.warning("%s: cannot be written (%s); the features stay in memory only", path, err)
        return
    log.info("kept the cached frozen encoder prefix in %s", path)


_SAFETENSORS_DTYPES = {
    torch.float32: "F32",
    torch.bfloat16: "BF16",
    torch.float16: "F16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def write_stacked(file: BinaryIO, named: dict[str, list[torch.Tensor]]) -> None:
    """safetensors holding, under each name, the stack of its list of equal tensors, written one tensor at a time.

    The layout is the format's own (a little-endian header length, the JSON header padded to 8 bytes, then each
    tensor's bytes in the header's order), so `safetensors.torch.load_file` reads it as if `save_file` had stacked.
    """
    header, offset = {}, 0
    for name, rows in named.items():
        first = rows[0]
        if any(r.shape != first.shape or r.dtype != first.dtype for r in rows):
            raise ValueError(f"{name}: the tensors to stack differ in shape or dtype")
        size = len(rows) * first.numel() * first.element_size()
        header[name] = {
            "dtype": _SAFETENSORS_DTYPES[first.dtype],
            "shape": [len(rows), *first.shape],
            "data_offsets": [offset, offset + size],
        }
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    file.write(struct.pack("<Q", len(encoded)))
    file.write(encoded)
    for rows in named.values():
        for row in rows:
            file.write(memoryview(row.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy()))
