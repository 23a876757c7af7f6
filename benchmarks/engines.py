"""Prompt-free inference per engine on this CPU, in one run: PyTorch fp32, PyTorch bf16 autocast, ONNX Runtime fp32.

A LiteMedSAM SAM-SP model (a run folder given with --model, or the bundled weights with fresh decoder heads) is
exported to ONNX, then each engine segments the same real Kvasir-SEG images one at a time (batch 1, preprocessing to
mask at original size). Prints and writes the "engines" section of BENCHMARKS.md: ms per image (median of the
images, after one warm-up) and the ratio to PyTorch fp32, plus the largest probability difference to fp32.

    python benchmarks/engines.py --images 10 [--model runs/polyps]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from common import SHARED, markdown_table, write_section

from samsp import ModelConfig, Predictor, SamSP
from samsp.data import find_pairs, read_image
from samsp.inference.onnx_engine import OnnxPredictor
from samsp.inference.onnx_export import export_onnx


def timed(predict, images: list[np.ndarray]) -> tuple[list[float], list[np.ndarray]]:
    predict(images[0])  # warm-up
    ms, probs = [], []
    for image in images:
        start = time.perf_counter()
        pred = predict(image)
        ms.append((time.perf_counter() - start) * 1000)
        probs.append(pred.probability)
    return ms, probs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--model", help="run or export folder (default: LiteMedSAM with untrained SAM-SP heads)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    images = [read_image(p.image) for p in find_pairs(SHARED / "kvasir-seg")[: args.images]]
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(args.model) if args.model else SamSP(ModelConfig()).save_pretrained(Path(tmp) / "model")
        model = SamSP.from_pretrained(source)
        started = time.perf_counter()
        export_onnx(source, Path(tmp) / "onnx")
        export_s = time.perf_counter() - started
        engines = {
            "PyTorch fp32": Predictor(model).predict,
            "PyTorch bf16 autocast": Predictor(model, precision="bf16").predict,
            "ONNX Runtime fp32": OnnxPredictor(Path(tmp) / "onnx").predict,
        }
        results = {name: timed(fn, images) for name, fn in engines.items()}
    base_ms, base_probs = results["PyTorch fp32"]
    rows = []
    for name, (ms, probs) in results.items():
        diff = max(float(np.abs(a - b).max()) for a, b in zip(probs, base_probs, strict=True))
        rows.append(
            [
                name,
                f"{statistics.median(ms):.0f}",
                f"{statistics.median(base_ms) / statistics.median(ms):.2f}x",
                f"{diff:.1e}",
            ]
        )
    body = "\n".join(
        [
            "## Inference engines (LiteMedSAM, batch 1, CPU)",
            "",
            f"{len(images)} Kvasir-SEG images, one at a time, preprocessing to mask at original size; median ms per "
            f"image after a warm-up, in one run. ONNX export took {export_s:.0f} s. "
            + (
                f"Model: {args.model}."
                if args.model
                else "Model: bundled LiteMedSAM weights with untrained SAM-SP heads: every first pass is empty, so "
                "the probability column says nothing about accuracy (give --model RUN for that); the times hold."
            ),
            "",
            markdown_table(["engine", "ms per image", "speed vs PyTorch fp32", "max abs prob diff to fp32"], rows),
        ]
    )
    print(body)
    if not args.no_write:
        write_section("engines", body)


if __name__ == "__main__":
    main()
