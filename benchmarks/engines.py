"""Prompt-free inference per engine on this CPU, in one run: PyTorch fp32 and bf16 autocast, ONNX Runtime fp32 and
int8 (dynamic quantisation), OpenVINO fp32 and bf16 (the same ONNX file).

A LiteMedSAM SAM-SP model (a run folder given with --model, or the bundled weights with fresh decoder heads) is
exported to ONNX (float and int8); its image encoder alone is exported too, so each engine's encoder time can be
split from the rest (decoder passes, self-prompt box, pre- and post-processing). For each engine:

- ms per image at batch 1: median over the PraNet Kvasir-SEG test images, preprocessing to mask at original size;
- the encoder alone at batch 1 (median of repeats), and the rest (end to end minus encoder);
- the encoder's share of this machine's measured matrix-multiply peak (fp32 peak for fp32 and int8 engines,
  bf16 peak for bf16 ones): the encoder's FLOPs (torch's counter) / encoder time / peak;
- images/s at the best of batch sizes 1, 2, 4, 8 (predict_batch over --batch-images images);
- the largest probability difference to PyTorch fp32 and, with a trained --model, the Kvasir test mean Dice.

Prints and writes the "engines" section of BENCHMARKS.md.

    python benchmarks/engines.py --images 100 --model runs/protocol/sam-sp-s0
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from common import SHARED, best_of, markdown_table, matmul_peak, write_section
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from samsp import ModelConfig, Predictor, SamSP
from samsp.data import find_pairs, read_image, read_mask
from samsp.data.named import pranet_split
from samsp.inference.onnx_engine import OnnxPredictor
from samsp.inference.onnx_export import export_onnx, quantize_int8, trace_to_onnx
from samsp.inference.onnx_runtimes import open_graph
from samsp.inference.preprocess import preprocess

ENGINES = {  # name -> (runtime, precision, ONNX variant)
    "PyTorch fp32": ("torch", "fp32", None),
    "PyTorch bf16 autocast": ("torch", "bf16", None),
    "ONNX Runtime fp32": ("onnxruntime", "fp32", "fp32"),
    "ONNX Runtime int8 (dynamic)": ("onnxruntime", "fp32", "int8"),
    "OpenVINO fp32": ("openvino", "fp32", "fp32"),
    "OpenVINO bf16": ("openvino", "bf16", "fp32"),
}
BATCHES = (1, 2, 4, 8)


class EncoderOnly(nn.Module):
    """The image encoder as a graph of its own, to time it apart from the decoder passes."""

    def __init__(self, model: SamSP):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.run_encoder(images)


def dice(mask: np.ndarray, gt: np.ndarray) -> float:
    total = mask.sum() + gt.sum()
    return 1.0 if total == 0 else float(2 * (mask & gt).sum() / total)


def per_image(predictor, images: list[np.ndarray]) -> tuple[list[float], list[np.ndarray]]:
    """ms and probability map per image, one image at a time, after one warm-up image."""
    predictor.batch_size = 1
    predictor.predict(images[0])
    ms, probs = [], []
    for image in images:
        start = time.perf_counter()
        pred = predictor.predict(image)
        ms.append((time.perf_counter() - start) * 1000)
        probs.append(pred.probability)
    return ms, probs


def best_batch(predictor, images: list[np.ndarray]) -> tuple[int, float]:
    """(batch size, images/s) of the fastest batch size for predict_batch over `images`."""
    rates = {}
    for batch in BATCHES:
        predictor.batch_size = batch
        predictor.predict_batch(images[:batch])  # warm-up at this shape
        start = time.perf_counter()
        predictor.predict_batch(images)
        rates[batch] = len(images) / (time.perf_counter() - start)
    batch = max(rates, key=rates.get)
    return batch, rates[batch]


def engines(model: SamSP, source: Path, tmp: Path) -> dict[str, tuple[object, Callable[[np.ndarray], object]]]:
    """name -> (predictor, encoder-only function of a (1, 3, S, S) float32 array) per engine."""
    export_onnx(source, tmp / "fp32")
    export_onnx(source, tmp / "int8", quantize="int8")
    size = model.backbone.img_size
    (tmp / "encoder").mkdir()
    encoder_graph = EncoderOnly(model.merged().eval())
    trace_to_onnx(encoder_graph, (torch.zeros(2, 3, size, size),), ["images"], ["emb"], tmp / "encoder" / "fp32.onnx")
    shutil.copyfile(tmp / "encoder" / "fp32.onnx", tmp / "encoder" / "int8.onnx")
    quantize_int8(tmp / "encoder" / "int8.onnx")
    built = {}
    for name, (runtime, precision, variant) in ENGINES.items():
        if runtime == "torch":
            autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")

            def encoder(x, autocast=autocast):
                with torch.no_grad(), autocast:
                    return model.run_encoder(torch.from_numpy(x))

            built[name] = (Predictor(model, precision=precision), encoder)
        else:
            graph = open_graph(tmp / "encoder" / f"{variant}.onnx", runtime, precision)
            predictor = OnnxPredictor(tmp / variant, runtime=runtime, precision=precision)
            built[name] = (predictor, lambda x, graph=graph: graph({"images": x}))
    return built


def encoder_flops(model: SamSP, size: int) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.run_encoder(torch.zeros(1, 3, size, size))
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10, help="Kvasir test images timed one at a time (and scored)")
    parser.add_argument("--batch-images", type=int, default=16, help="images per batch-size trial")
    parser.add_argument("--repeats", type=int, default=5, help="encoder-alone repeats (best of)")
    parser.add_argument("--model", help="run or export folder (default: LiteMedSAM with untrained SAM-SP heads)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    pairs = {p.id: p for p in find_pairs(SHARED / "kvasir-seg")}
    test = [pairs[i] for i in pranet_split("kvasir-seg")[1][: max(args.images, args.batch_images)]]
    images = [read_image(p.image) for p in test]
    gts = [read_mask(p.mask) for p in test[: args.images]]
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(args.model) if args.model else SamSP(ModelConfig()).save_pretrained(Path(tmp) / "model")
        model = SamSP.from_pretrained(source)
        size = model.backbone.img_size
        flops = encoder_flops(model, size)
        x = preprocess(images[0], model.backbone)[0][None].numpy()
        results = {}
        for name, (predictor, encoder) in engines(model, source, Path(tmp)).items():
            ms, probs = per_image(predictor, images[: args.images])
            enc_s = best_of(lambda encoder=encoder: encoder(x), args.repeats)
            batch, rate = best_batch(predictor, images[: args.batch_images])
            results[name] = (ms, probs, enc_s, batch, rate)
            print(f"{name}: {statistics.median(ms):.0f} ms/img, encoder {enc_s * 1e3:.0f} ms, {rate:.2f} img/s")
    base_ms, base_probs = statistics.median(results["PyTorch fp32"][0]), results["PyTorch fp32"][1]
    rows = []
    for name, (ms, probs, enc_s, batch, rate) in results.items():
        precision = ENGINES[name][1]
        diff = max(float(np.abs(a - b).max()) for a, b in zip(probs, base_probs, strict=True))
        m_dice = np.mean([dice(prob > 0.5, gt) for prob, gt in zip(probs, gts, strict=True)])
        share = flops / enc_s / peaks[precision]
        rows.append(
            [
                name,
                f"{statistics.median(ms):.0f}",
                f"{base_ms / statistics.median(ms):.2f}x",
                f"{enc_s * 1000:.0f}",
                f"{statistics.median(ms) - enc_s * 1000:.0f}",
                f"{share:.0%}" + (" (int8 ops)" if "int8" in name else ""),
                f"{rate:.2f} @ {batch}",
                f"{diff:.1e}",
                f"{m_dice:.4f}",
            ]
        )
    header = [
        "engine",
        "ms per image (batch 1)",
        "speed vs PyTorch fp32",
        "encoder ms",
        "rest ms",
        "encoder share of matmul peak",
        "images/s @ best batch",
        "max abs prob diff to fp32",
        "Kvasir mDice",
    ]
    body = "\n".join(
        [
            "## Inference engines (LiteMedSAM, CPU)",
            "",
            f"{args.images} PraNet Kvasir-SEG test images, one at a time, preprocessing to mask at original size; "
            "median ms per image after a warm-up, in one run. Encoder: the image encoder alone at batch 1 (best of "
            f"{args.repeats}); rest: end to end minus encoder (two decoder passes, the self-prompt box, pre- and "
            f"post-processing). Encoder FLOPs {flops / 1e9:.2f} G per image; measured matmul peak "
            f"{peaks['fp32'] / 1e9:.0f} GFLOP/s fp32, {peaks['bf16'] / 1e9:.0f} GFLOP/s bf16 (int8 engines against "
            f"the fp32 peak). Best batch: the fastest of {', '.join(map(str, BATCHES))} over {args.batch_images} "
            "images. "
            + (
                f"Model: {args.model}."
                if args.model
                else "Model: bundled LiteMedSAM weights with untrained SAM-SP heads: every first pass is empty, so "
                "the probability and Dice columns say nothing about accuracy (give --model RUN for that)."
            ),
            "",
            markdown_table(header, rows),
        ]
    )
    print(body)
    if not args.no_write:
        write_section("engines", body)


if __name__ == "__main__":
    main()
