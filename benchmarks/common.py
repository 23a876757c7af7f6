"""Shared by the benchmark scripts: where the data is, and how a result section lands in BENCHMARKS.md."""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import logging
import os
import platform
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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


def logits_probability(logits: torch.Tensor, frame: Frame) -> np.ndarray:
    """One image's input-frame logits (S, S) as a probability map at its original size."""
    return torch.sigmoid(postprocess(logits, frame)).numpy()


def logits_dice(logits: torch.Tensor, frame: Frame, gt: np.ndarray) -> float:
    """Dice of one image's input-frame logits (S, S) against its ground truth at the original size."""
    return image_metrics(logits_probability(logits, frame), gt)["dice"]


def pooled_against(folders: list[Path], columns: list[str], base: str) -> list[list]:
    """Per column of the folders' per_image.csv files: images, mean Dice, and the paired difference from column
    `base` with its 95% interval, each image's Dice averaged over the folders holding it (several models pooled)."""
    tables = []
    for folder in folders:
        with (folder / "per_image.csv").open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        tables.append({c: {r["id"]: float(r[c]) for r in rows} for c in columns})
    ids = sorted({i for t in tables for i in t[base]})

    def averaged(column: str) -> np.ndarray:
        return np.array([np.mean([t[column][i] for t in tables if i in t[column]]) for i in ids])

    reference = averaged(base)
    out = []
    for column in columns:
        values = averaged(column)
        mean, low, high = paired_interval(values - reference)
        out.append([column, len(ids), float(values.mean()), f"{mean:+.4f} [{low:+.4f}, {high:+.4f}]"])
    return out


def screen_parser(doc: str, title: str) -> argparse.ArgumentParser:
    """The command line every inference screen of trained models shares (box_components, zoom_pass, seed_ensemble):
    the images to score, where the per-image table goes, and the pooled report of several such tables."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="a folder with images/ and masks/, or a pairs CSV")
    parser.add_argument("--ids", type=Path, help="the image ids to score (validation ids to choose by)")
    parser.add_argument("--out", type=Path, help="where per_image.csv and summary.json go")
    parser.add_argument("--pool", type=Path, nargs="*", help="print the comparison pooled over these --out folders")
    parser.add_argument("--section", help="with --pool: the BENCHMARKS.md section the pooled table replaces")
    parser.add_argument("--title", default=title, help="that section's heading")
    return parser


def screen_pairs(args: argparse.Namespace) -> list:
    """The labelled pairs a screen scores: --data (a folder or a pairs CSV) restricted to the ids in --ids."""
    from samsp.data.pairs import find_pairs
    from samsp.data.splits import read_csv_pairs, read_id_list, select

    pairs = read_csv_pairs(args.data) if args.data.suffix == ".csv" else find_pairs(args.data)
    return select(pairs, read_id_list(args.ids), str(args.ids))


def write_screen(out: Path, ids: list[str], dice: dict[str, list[float]], models: list[Path]) -> None:
    """A screen's per-image Dice (one column per variant, in `dice`'s order) and its summary.json."""
    out.mkdir(parents=True, exist_ok=True)
    columns = list(dice)
    with (out / "per_image.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", *columns])
        writer.writerows([i, *(f"{dice[c][k]:.6f}" for c in columns)] for k, i in enumerate(ids))
    means = {c: float(np.mean(v)) for c, v in dice.items()}
    summary = {"models": [str(m) for m in models], "columns": columns, "mDice": means}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))


def report_screen(folders: list[Path], base: str, label: str, section: str | None = None, title: str = "") -> str:
    """Every column of the screens in `folders` against column `base` (pooled, paired); printed, and written to
    BENCHMARKS.md as `section` when given."""
    summaries = [json.loads((f / "summary.json").read_text()) for f in folders]
    header = [label, "images", "mDice", f"minus {base}: mean [95% interval]"]
    table = markdown_table(header, pooled_against(folders, summaries[0]["columns"], base))
    print(table)
    if section:
        models = ", ".join(m for s in summaries for m in s["models"])
        write_section(section, f"## {title}\n\nModels: {models}.\n\n{table}")
    return table


def embedded_batches(model, data, batch_size: int = 8) -> Iterator[tuple[range, torch.Tensor, torch.Tensor, Any]]:
    """A screen's walk over an EvalSet: per batch, its image indices, the valid (h, w) of each image in the input
    frame, and the model's image embeddings and early features (`SamSP.embed`), the frozen prefix encoded once."""
    from samsp.evaluation.evaluate import prefix_features

    model.eval()
    features = prefix_features(model, data) if model.prefix_stages > 0 else data.inputs
    for start in range(0, len(data.ids), batch_size):
        stop = min(start + batch_size, len(data.ids))
        emb, fused = model.embed(torch.stack(features[start:stop]), model.prefix_stages)
        yield range(start, stop), torch.tensor([f.resized_hw for f in data.frames[start:stop]]), emb, fused
        logging.info("%d/%d images", stop, len(data.ids))


def model_screen(doc: str, title: str, score: Callable, base: str, label: str) -> None:
    """The command of a screen of one trained model (--model): `score(model, eval_set)` gives each variant's
    per-image Dice, written with `write_screen`; `--pool` reports earlier runs instead (`report_screen`)."""
    from samsp import SamSP
    from samsp.evaluation.evaluate import load_eval_set

    parser = screen_parser(doc, title)
    parser.add_argument("--model", type=Path, help="a trained model folder")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if not args.pool:
        model = SamSP.from_pretrained(args.model)
        data = load_eval_set(screen_pairs(args), model)
        write_screen(args.out, data.ids, score(model, data), [args.model])
    report_screen(args.pool or [args.out], base, label, args.section, args.title)


def read_per_image_dice(path: Path) -> dict[str, float]:
    """Image id -> Dice from a `per_image.csv` that `samsp evaluate` wrote."""
    with path.open(newline="") as handle:
        return {row["id"]: float(row["dice"]) for row in csv.DictReader(handle)}
