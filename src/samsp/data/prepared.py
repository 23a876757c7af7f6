"""Training and validation samples in the model's input frame, decoded and resized once, then kept in memory.

Decoding a 700 px JPEG and resizing it costs more than a decoder step on the CPU, so every image is read once
(in a thread pool) and held at the model's input size as uint8. Augmentation runs on those small arrays,
seeded per (epoch, sample), so a resumed run sees exactly the samples a straight run would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import torch

from ..errors import DataError, SamspError
from ..inference.preprocess import normalize_and_pad, pad_mask, resize_image, resize_mask
from ..modeling.backbones import Backbone
from .io import read_pair
from .pairs import Pair
from .transforms import Augment

T = TypeVar("T")


NAMED_PROBLEMS = 5  # bad files a decoding error names on its one line; `samsp check-data` lists every one


def decode_all(pairs: Sequence[Pair], load: Callable[[Pair], T], threads: int = 4) -> list[T]:
    """`load` every pair in a thread pool; if any file is bad, one error of one line counts them all and names the
    first `NAMED_PROBLEMS` (not just the first one)."""

    def attempt(pair: Pair) -> T | DataError:
        try:
            return load(pair)
        except DataError as err:
            return err

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        loaded = list(pool.map(attempt, pairs))
    problems = [" ".join(str(item).splitlines()) for item in loaded if isinstance(item, DataError)]
    if problems:
        named = "; ".join(problems[:NAMED_PROBLEMS])
        if len(problems) > NAMED_PROBLEMS:
            named += f"; and {len(problems) - NAMED_PROBLEMS} more (samsp check-data lists every one)"
        raise SamspError(f"{len(problems)} of {len(pairs)} pairs cannot be used: {named}")
    return loaded


class PreparedSet:
    """Pairs decoded and resized to the backbone's input size, with an optional seeded augmentation."""

    def __init__(self, pairs: Sequence[Pair], backbone: Backbone, augment: Augment | None = None, threads: int = 4):
        self.pairs = list(pairs)
        self.backbone = backbone
        self.augment = augment
        loaded = decode_all(self.pairs, self._load, threads)
        self.images = [im for im, _ in loaded]
        self.masks = [m for _, m in loaded]

    def _load(self, pair: Pair) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = read_pair(pair.image, pair.mask)
        size = self.backbone.img_size
        return resize_image(image, size), resize_mask(mask, size)

    def __len__(self) -> int:
        return len(self.pairs)

    def item(self, index: int, seed: int | None = None) -> dict[str, torch.Tensor]:
        """One sample: normalised padded image (3, S, S), mask (S, S) float, and valid (unpadded) size."""
        image, mask = self.images[index], self.masks[index]
        if self.augment is not None and seed is not None:
            self.augment.set_seed(seed)
            im, mk = self.augment(image.permute(1, 2, 0).numpy(), mask.numpy().astype(np.uint8))
            image, mask = (
                torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1),
                torch.from_numpy(mk > 0),
            )
        size = self.backbone.img_size
        return {
            "image": normalize_and_pad(image, self.backbone),
            "mask": pad_mask(mask, size),
            "valid_hw": torch.tensor(image.shape[1:]),
        }


def collate(items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}
