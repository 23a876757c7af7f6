"""Free memory checked before a large allocation: an out-of-memory kill ends a run with no message, often after
minutes of work. Caches kept for later work in this process register how to drop themselves, and give way first."""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable

import psutil

from .errors import SamspError

log = logging.getLogger("samsp")

_RELEASERS: list[tuple[Callable[[], bool], str]] = []


def on_short_memory(release: Callable[[], bool], what: str) -> None:
    """Register how a cache (`what`, for the log) is dropped when an allocation would not fit; `release` returns
    whether the cache held anything."""
    _RELEASERS.append((release, what))


def ensure_room(need: int, what: str, detail: str, advice: str) -> None:
    """SamspError `"{what} needs about N GB ({detail}), but M GB of memory is free: {advice}"` when `need` bytes would
    not fit the free memory. Before it says so, the registered caches are dropped and the free memory measured again."""
    free = psutil.virtual_memory().available
    if need > 0.9 * free:
        dropped = [name for release, name in _RELEASERS if release()]
        if dropped:
            gc.collect()
            free = psutil.virtual_memory().available
            log.info("dropped %s: %.1f GB of memory is free", ", ".join(dropped), free / 1e9)
    if need > 0.9 * free:
        raise SamspError(
            f"{what} needs about {need / 1e9:.1f} GB ({detail}), but {free / 1e9:.1f} GB of memory is free: {advice}"
        )
