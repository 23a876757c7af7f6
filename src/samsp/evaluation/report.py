"""Write evaluation results as a per-image CSV plus a JSON summary, and format the summary for a terminal."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from samsp.evaluation.metrics import COUNT_NAMES, METRIC_NAMES, summarize
from samsp.files import write_text_atomic


def _json_safe(value: object) -> object:
    # JSON has no NaN; null keeps summary.json loadable by strict parsers.
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


def write_report(rows: Sequence[Mapping[str, object]], out_dir: str | Path, title: str) -> dict:
    """Write ``per_image.csv`` (id, every metric, pixel counts) and ``summary.json``; return the summary.

    Each row needs an ``id`` and the keys of ``metrics.image_metrics``. NaN is written as ``nan`` in the CSV
    and ``null`` in the JSON. Both files are replaced atomically: an interrupted run leaves no partial report.
    """
    out_dir = Path(out_dir)
    summary = {"title": title, **summarize(rows)}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("id", *METRIC_NAMES, *COUNT_NAMES))
    for row in rows:
        metrics = [f"{float(row[m]):.6f}" for m in METRIC_NAMES]
        counts = [str(int(float(row[c]))) for c in COUNT_NAMES]
        writer.writerow((row["id"], *metrics, *counts))
    write_text_atomic(out_dir / "per_image.csv", buffer.getvalue())
    write_text_atomic(out_dir / "summary.json", json.dumps(_json_safe(summary), indent=2) + "\n")
    return summary


def format_table(summary: Mapping) -> str:
    """Aligned text table: one line per metric with its mean and NaN count, then the pooled scores."""
    lines = [f"{summary.get('title', 'evaluation')}: {summary['n_images']} images"]
    width = max(len(m) for m in (*METRIC_NAMES, "pooled_dice"))
    lines.append(f"{'metric':<{width}}  {'mean':>8}  {'n_nan':>5}")
    for name in METRIC_NAMES:
        value = summary["mean"][name]
        shown = "nan" if value is None or math.isnan(value) else f"{value:.4f}"
        lines.append(f"{name:<{width}}  {shown:>8}  {summary['n_nan'][name]:>5}")
    for name in ("pooled_dice", "pooled_iou"):
        lines.append(f"{name:<{width}}  {summary[name]:>8.4f}")
    return "\n".join(lines)
