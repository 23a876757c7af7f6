"""Training batches: the frozen encoder prefix cached once per image (and per augmented view), or images
augmented on the fly (their prefix features computed per batch by a compiled prefix when one is given); the order and
augmentation of every epoch depend only on (seed, epoch), so a resumed run sees exactly the batches a straight run
would.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import OrderedDict
from pathlib import Path

import torch

from .. import memory
from ..data.prepared import PreparedSet, collate
from ..inference.prefix_graph import PrefixEncoder, prefix_encoder
from ..modeling.sam_sp import SamSP
from ..progress import Progress
from . import feature_flips, feature_store

log = logging.getLogger("samsp")

# The latest training and validation sets' prefix features, so several trainings in one process (a sweep, the
# accuracy benchmark) encode them once; older entries are dropped so a long sweep's memory stays bounded, and all
# of them give way when new features would not fit the free memory (`ensure_room`).
_PREFIX_MEMO: OrderedDict[tuple, tuple[int, list, list]] = OrderedDict()
_PREFIX_MEMO_SIZE = 2


def forget_prefix_features() -> bool:
    """Drop the features this process keeps for a later training (before work that needs their memory); returns
    whether it held any."""
    held = bool(_PREFIX_MEMO)
    _PREFIX_MEMO.clear()
    return held


memory.on_short_memory(forget_prefix_features, "the prefix features kept from earlier trainings")


class Batches:
    """Seeded batches of training samples: cached prefix features, or images augmented on the fly.

    With `model` the frozen prefix is cached; without it, `prefix` (a compiled prefix, `prefix_encoder`) turns each
    on-the-fly batch's images into its prefix features, outside autograd, and None leaves the images to the model.
    """

    def __init__(
        self,
        data: PreparedSet,
        model: SamSP | None,
        views: int,
        seed: int,
        batch_size: int,
        device: torch.device,
        dtype: torch.dtype,
        rank: int = 0,
        world: int = 1,
        autocast=None,
        workers: int = 0,
        store: Path | None = None,
        augment_setting: str = "",
        engine: str = "torch",
        precision: str = "fp32",
        flips: float = 0.0,
        prefix: PrefixEncoder | None = None,
    ):
        self.data, self.seed, self.batch_size, self.device, self.workers = data, seed, batch_size, device, workers
        self.rank, self.world = rank, world
        self.store, self.augment_setting, self.engine = store, augment_setting, engine
        self.precision = precision  # what a compiled prefix computes in (`graph_precision`)
        self.flips = flips  # probability of each mirror flip of a cached sample (feature_flips)
        self.prefix = prefix  # used only for batches made on the fly (no model: nothing cached)
        self.features: list[list[torch.Tensor]] | None = None
        self.items: list[list[dict]] = []
        if model is not None:
            self.layout = model.features_layout(model.prefix_stages)
            with autocast() if autocast else contextlib.nullcontext():
                self.features, self.items = self._cache(model, views, dtype)

    def _cache(self, model: SamSP, views: int, dtype: torch.dtype) -> tuple[list, list]:
        """Prefix features per image and view; reused across runs in one process (benchmarks, sweeps).

        A memo entry computed for fewer stages is advanced through the missing frozen stages instead of
        encoding the images again.
        """
        recipe = (  # what the features depend on besides the images and weights (also names the on-disk file)
            views,
            (self.seed, self.augment_setting) if views > 1 else None,  # view 0 is never augmented
            str(dtype),
            torch.is_autocast_enabled("cpu") or torch.is_autocast_enabled("cuda"),
            *self._engine_key(),  # another runtime or graph precision: equal features up to rounding
        )
        key = (
            tuple((p.id, str(p.image)) for p in self.data.pairs),
            model.backbone.name,  # with its input size when not its own
            model.config.checkpoint,
            *recipe,
        )
        stop = model.prefix_stages
        if key in _PREFIX_MEMO and _PREFIX_MEMO[key][0] <= stop:
            _PREFIX_MEMO.move_to_end(key)
            start, features, items = _PREFIX_MEMO[key]
            if start < stop:
                features = [
                    [model.run_encoder(f[None].to(self.device).float(), start, stop)[0].to("cpu", dtype) for f in fv]
                    for fv in features
                ]
            return features, items
        features, items = self._read_or_encode(model, views, dtype, recipe)
        _PREFIX_MEMO[key] = (stop, features, items)
        while len(_PREFIX_MEMO) > _PREFIX_MEMO_SIZE:
            _PREFIX_MEMO.popitem(last=False)
        return features, items

    def _read_or_encode(self, model: SamSP, views: int, dtype: torch.dtype, recipe: tuple) -> tuple[list, list]:
        """From the on-disk store when one is set and holds these features; else encoded (and stored)."""
        if self.store is None:
            return self._encode(model, views, dtype)
        path = feature_store.store_path(self.store, self.data, model, model.prefix_stages, recipe)
        if path.is_file():
            ensure_room(path.stat().st_size, str(path))
        cached = feature_store.load(path, len(self.data), views)
        if cached is None:
            cached = self._encode(model, views, dtype)
            feature_store.save(path, *cached)
        return cached

    def _encode(self, model: SamSP, views: int, dtype: torch.dtype) -> tuple[list, list]:
        features, items = [], []
        encode = prefix_encoder(model, self.engine, self.precision)
        jobs = Progress(range(len(self.data)), desc="caching the frozen encoder part", unit="img")
        for i in jobs:
            per_view, per_items = [], []
            for v in range(views):
                item = self.data.item(i, seed=None if v == 0 else self._seed(-v, i))
                x = item["image"][None].to(self.device)
                per_view.append(encode(x)[0].to("cpu", dtype))
                if i == v == 0:
                    f, count = per_view[0], len(self.data) * views
                    dtype_name = str(f.dtype).removeprefix("torch.")
                    ensure_room(count * f.numel() * f.element_size(), f"{count} x {tuple(f.shape)} {dtype_name}")
                per_items.append({"mask": item["mask"], "valid_hw": item["valid_hw"]})
            features.append(per_view)
            items.append(per_items)
        return features, items

    def _engine_key(self) -> tuple[str, ...]:
        """What names a compiled prefix's features apart from PyTorch's: nothing for PyTorch, the runtime, and the
        precision unless fp32 (so the features stored before graphs had a precision keep their names)."""
        if self.engine == "torch":
            return ()
        return (self.engine,) if self.precision == "fp32" else (self.engine, self.precision)

    def _seed(self, epoch: int, index: int) -> int:
        return (self.seed * 1_000_003 + epoch * 10_007 + index) % (2**31)

    def steps_per_epoch(self) -> int:
        return steps_per_epoch(len(self.data), self.batch_size, self.rank, self.world)

    def epoch(self, epoch: int, start_step: int = 0):
        """Yield this process's batches for `epoch` from `start_step` on (a resumed epoch skips what was done);
        the order and augmentations depend only on (seed, epoch)."""
        g = torch.Generator().manual_seed(self.seed * 7919 + epoch)
        order = torch.randperm(len(self.data), generator=g)[self.rank :: self.world].tolist()
        order = order[start_step * self.batch_size :]
        if self.features is None:  # augment on the fly, in loader workers when there are any
            samples = _EpochSamples(self, order, epoch)
            loader = torch.utils.data.DataLoader(
                samples, batch_size=self.batch_size, num_workers=self.workers, collate_fn=collate
            )
            for batch in loader:
                batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
                if self.prefix is not None:
                    with torch.no_grad():
                        batch["features"] = self.prefix(batch.pop("image"))
                yield batch
            return
        views = len(self.features[0])
        for start in range(0, len(order), self.batch_size):
            pick = [(i, (epoch + i) % views) for i in order[start : start + self.batch_size]]
            batch = collate([self._cached_sample(i, v, epoch) for i, v in pick])
            yield {k: v.to(self.device) for k, v in batch.items()}

    def _cached_sample(self, i: int, view: int, epoch: int) -> dict[str, torch.Tensor]:
        """Image i's cached view, mirrored as this (seed, epoch) draws when flips are on."""
        item = self.items[i][view]
        features, mask = self.features[i][view].float(), item["mask"]
        if self.flips > 0:
            horizontal, vertical = feature_flips.draw(self.flips, self._seed(epoch, i))
            features, mask = feature_flips.flip_sample(
                features, mask, item["valid_hw"], self.layout, horizontal, vertical
            )
        return {**item, "mask": mask, "features": features}


class _EpochSamples(torch.utils.data.Dataset):
    """One epoch's samples in a fixed order, each augmented with its own (seed, epoch, index) seed."""

    def __init__(self, batches: Batches, order: list[int], epoch: int):
        self.data, self.order, self.epoch, self.seed_of = batches.data, order, epoch, batches._seed

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        i = self.order[k]
        return self.data.item(i, seed=self.seed_of(self.epoch, i))


def ensure_room(need: int, what: str) -> None:
    """SamspError when `need` bytes of cached features (`what`: their shape, or the file they are read from) would
    not fit the free memory, after the features kept from earlier trainings are dropped (`memory.ensure_room`)."""
    memory.ensure_room(
        need,
        "caching the frozen encoder prefix",
        what,
        "set runtime.cache_dtype=bfloat16 (half the size), runtime.cache=false (nothing cached, every batch encoded) "
        "or a smaller model.input_size",
    )


def steps_per_epoch(n: int, batch_size: int, rank: int = 0, world: int = 1) -> int:
    """Batches one process takes per epoch when `n` samples are dealt out over `world` processes."""
    return math.ceil(len(range(rank, n, world)) / batch_size)
