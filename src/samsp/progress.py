"""Progress that reads well where it goes: a live bar on a terminal, one plain line every N seconds in a file.

With stdout sent to a file (CI, SLURM, nohup) a redrawn bar fills the log with carriage returns; there, progress is
a log line with count, rate, ETA and the caller's figures (loss, ...) every `interval` seconds and at the end.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

log = logging.getLogger("samsp")

LOG_INTERVAL_S = 60.0


class Progress:
    """Iterate with progress: `for x in (p := Progress(items, total, "epoch 1/4")): ...; p.set_postfix(loss=...)`."""

    def __init__(
        self,
        iterable: Iterable,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        disable: bool = False,
        interval: float = LOG_INTERVAL_S,
        terminal: bool | None = None,
    ):
        self.iterable, self.desc, self.unit, self.disable, self.interval = iterable, desc, unit, disable, interval
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.terminal = sys.stdout.isatty() if terminal is None else terminal
        self.postfix: dict[str, Any] = {}
        self.bar = None
        if self._live:  # tqdm only for a terminal (the torch-free ONNX install has none)
            from tqdm.auto import tqdm

            self.bar = tqdm(iterable, total=self.total, desc=desc, unit=unit, leave=False)

    @property
    def _live(self) -> bool:
        return self.terminal and not self.disable

    def set_postfix(self, **values: Any) -> None:
        """Figures shown beside the count (on the bar, or in the next log line)."""
        self.postfix = values
        if self.bar is not None:
            self.bar.set_postfix(**values)

    def __iter__(self) -> Iterator:
        if self.bar is not None:
            yield from self.bar
            return
        start = last = time.perf_counter()
        n = 0
        for n, item in enumerate(self.iterable, 1):
            yield item
            now = time.perf_counter()
            if not self.disable and now - last >= self.interval:
                last = now
                log.info(self.line(n, now - start))
        if not self.disable and n and time.perf_counter() - start >= self.interval:
            log.info(self.line(n, time.perf_counter() - start))

    def line(self, n: int, elapsed: float) -> str:
        """`desc: n/total (pct) rate unit/s, ETA m:ss, key value ...`."""
        rate = n / max(elapsed, 1e-9)
        parts = [f"{self.desc}: {n}" + (f"/{self.total} ({100 * n / self.total:.0f}%)" if self.total else "")]
        parts.append(f"{rate:.2f} {self.unit}/s")
        if self.total:
            eta = (self.total - n) / max(rate, 1e-9)
            parts.append(f"ETA {int(eta // 60)}:{int(eta % 60):02d}")
        parts += [f"{k} {v}" for k, v in self.postfix.items()]
        return ", ".join(parts)
