"""Prompt-free inference per engine on this CPU, in one run: PyTorch fp32, PyTorch bf16 autocast, ONNX Runtime fp32
and ONNX Runtime int8 (dynamic quantisation).

A LiteMedSAM SAM-SP model (a run folder given with --model, or the bundled weights with fresh decoder heads) is
exported to ONNX (float and int8), then each engine segments the same PraNet Kvasir-SEG test images one at a time
(batch 1, preprocessing to mask at original size). Prints and writes the "engines" section of BENCHMARKS.md: ms per
image (median of the images, after one warm-up), the ratio to PyTorch fp32, the largest probability difference to
fp32 and, with a trained --model, the mean Dice on those test images.

    python benchmarks/engines.py --images 100 --model runs/protocol/sam-sp-s0
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
from samsp.data import find_pairs, read_image, read_mask
from samsp.data.named import pranet_split
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


def dice(mask: np.ndarray, gt: np.ndarray) -> float:
    total = mask.sum() + gt.sum()
    return 1.0 if total == 0 else float(2 * (mask & gt).sum() / total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--model", help="run or export folder (default: LiteMedSAM with untrained SAM-SP heads)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    pairs = {p.id: p for p in find_pairs(SHARED / "kvasir-seg")}
    test = [pairs[i] for i in pranet_split("kvasir-seg")[1][: args.images]]
    images = [read_image(p.image) for p in test]
    gts = [read_mask(p.mask) for p in test]
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(args.model) if args.model else SamSP(ModelConfig()).save_pretrained(Path(tmp) / "model")
        model = SamSP.from_pretrained(source)
        started = time.perf_counter()
        export_onnx(source, Path(tmp) / "onnx")
        export_s = time.perf_counter() - started
        export_onnx(source, Path(tmp) / "int8", quantize="int8")
        engines = {
            "PyTorch fp32": Predictor(model).predict,
            "PyTorch bf16 autocast": Predictor(model, precision="bf16").predict,
            "ONNX Runtime fp32": OnnxPredictor(Path(tmp) / "onnx").predict,
            "ONNX Runtime int8 (dynamic)": OnnxPredictor(Path(tmp) / "int8").predict,
        }
        results = {name: timed(fn, images) for name, fn in engines.items()}
    base_ms, base_probs = results["PyTorch fp32"]
    rows = []
    for name, (ms, probs) in results.items():
        diff = max(float(np.abs(a - b).max()) for a, b in zip(probs, base_probs, strict=True))
        m_dice = np.mean([dice(prob > 0.5, gt) for prob, gt in zip(probs, gts, strict=True)])
        rows.append(
            [
                name,
                f"{statistics.median(ms):.0f}",
                f"{statistics.median(base_ms) / statistics.median(ms):.2f}x",
                f"{diff:.1e}",
                f"{m_dice:.4f}",
            ]
        )
    body = "\n".join(
        [
            "## Inference engines (LiteMedSAM, batch 1, CPU)",
            "",
            f"{len(images)} PraNet Kvasir-SEG test images, one at a time, preprocessing to mask at original size; "
            f"median ms per image after a warm-up, in one run. ONNX export took {export_s:.0f} s. "
            + (
                f"Model: {args.model}."
                if args.model
                else "Model: bundled LiteMedSAM weights with untrained SAM-SP heads: every first pass is empty, so "
                "the probability column says nothing about accuracy (give --model RUN for that); the times hold."
            ),
            "",
            markdown_table(
                ["engine", "ms per image", "speed vs PyTorch fp32", "max abs prob diff to fp32", "Kvasir mDice"], rows
            ),
        ]
    )
    print(body)
    if not args.no_write:
        write_section("engines", body)


if __name__ == "__main__":
    main()
