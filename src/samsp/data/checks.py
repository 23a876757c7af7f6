"""Validate a whole dataset up front, so one run lists every bad file, not just the first."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from samsp.data.io import read_image, read_mask, require_same_size
from samsp.data.pairs import Pair
from samsp.errors import DataError


@dataclass
class Problem:
    """One unusable file and what is wrong with it."""

    path: Path
    problem: str


@dataclass
class CheckReport:
    """Outcome of ``check_pairs``; empty masks are legal (true negatives) and only counted."""

    n_pairs: int
    problems: list[Problem] = field(default_factory=list)
    n_empty_masks: int = 0
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every pair decoded and matched in size."""
        return not self.problems

    def format(self) -> str:
        """Human-readable summary with one line per problem."""
        lines = [f"{self.n_pairs} pairs checked, {len(self.problems)} problem(s), {self.n_empty_masks} empty mask(s)"]
        if self.sizes:
            (h0, w0), (h1, w1) = self.sizes["min_hw"], self.sizes["max_hw"]
            lines.append(f"image sizes (HxW): min {h0}x{w0}, max {h1}x{w1}")
        lines.extend(f"  {p.path}: {p.problem}" for p in self.problems)
        return "\n".join(lines)


def _check_one(pair: Pair) -> tuple[list[Problem], bool, tuple[int, int] | None]:
    # Returns plain data, never raises DataError: custom exceptions do not survive pickling across processes.
    problems, image, mask = [], None, None
    try:
        image = read_image(pair.image)
    except DataError as e:
        problems.append(Problem(e.path, e.problem))
    if pair.mask is not None:
        try:
            mask = read_mask(pair.mask)
            if image is not None:
                require_same_size(pair.image, pair.mask, image, mask)
        except DataError as e:
            problems.append(Problem(e.path, e.problem))
    empty = mask is not None and not problems and not mask.any()
    return problems, empty, None if image is None else image.shape[:2]


def check_pairs(pairs: Sequence[Pair], workers: int = 0) -> CheckReport:
    """Fully decode every image and mask and collect every problem (``workers`` > 0: processes)."""
    if workers > 0:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_check_one, pairs, chunksize=max(1, len(pairs) // (workers * 8))))
    else:
        results = [_check_one(p) for p in pairs]
    report = CheckReport(n_pairs=len(pairs))
    shapes = []
    for problems, empty, shape in results:
        report.problems.extend(problems)
        report.n_empty_masks += int(empty)
        if shape is not None:
            shapes.append(shape)
    if shapes:
        report.sizes = {
            "min_hw": (min(h for h, _ in shapes), min(w for _, w in shapes)),
            "max_hw": (max(h for h, _ in shapes), max(w for _, w in shapes)),
        }
    return report
