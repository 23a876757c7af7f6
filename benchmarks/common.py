"""Shared by the benchmark scripts: where the data is, and how a result section lands in BENCHMARKS.md."""

from __future__ import annotations

import csv
import datetime
import os
import platform
import re
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from samsp.evaluation.metrics import image_metrics
from samsp.inference.preprocess import Frame, postprocess

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SAMSP_SHARED_DATA", ROOT.parent / "shared" / "data"))
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}"


def command() -> str:
    return "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])


def write_section(name: str, body: str, ran_on: str | None = None) -> None:
    """Replace (or append) the section between `<!-- name -->` markers in BENCHMARKS.md. `ran_on` names the machine
    the figures were measured on, when that is not this one (a table rebuilt here from another machine's runs)."""
    stamp = datetime.date.today().isoformat()
    where = f"{ran_on}; table built on {machine()}" if ran_on else machine()
    block = (
        f"<!-- {name} -->\n{body.rstrip()}\n\nCommand: `{command()}`  \nMachine: {where}  \nDate: {stamp}\n"
        f"<!-- /{name} -->"
    )
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"<!-- {re.escape(name)} -->.*?<!-- /{re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    BENCHMARKS_MD.write_text(text)


def markdown_table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def best_of(fn, repeats: int) -> float:
    """The fastest of `repeats` timed calls of `fn` (seconds), after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_peak(dtype: torch.dtype, n: int = 2048) -> float:
    """The machine's measured matrix-multiply rate (FLOP/s), the practical ceiling for this model."""
    a = torch.randn(n, n, dtype=dtype)
    seconds = best_of(lambda: a @ a, 3)
    return 2 * n**3 / seconds


def paired_interval(diff: np.ndarray) -> tuple[float, float, float]:
    """Mean of per-image differences and its 95% percentile bootstrap interval (10000 resamples, seeded): how large
    a difference these images can tell from the luck of which images were drawn."""
    from scipy import stats

    ci = stats.bootstrap((diff,), np.mean, n_resamples=10_000, method="percentile", random_state=0)
    return float(diff.mean()), float(ci.confidence_interval.low), float(ci.confidence_interval.high)


def logits_dice(logits: torch.Tensor, frame: Frame, gt: np.ndarray) -> float:
    """Dice of one image's input-frame logits (S, S) against its ground truth at the original size."""
    return image_metrics(torch.sigmoid(postprocess(logits, frame)).numpy(), gt)["dice"]


def read_per_image_dice(path: Path) -> dict[str, float]:
    """Image id -> Dice from a `per_image.csv` that `samsp evaluate` wrote."""
    with path.open(newline="") as handle:
        return {row["id"]: float(row["dice"]) for row in csv.DictReader(handle)}
