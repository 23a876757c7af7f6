"""Encoding the frozen encoder prefix (what a CPU run caches before training, and what an evaluation computes for
every test image): PyTorch eager against the same prefix compiled for OpenVINO (`runtime.prefix_engine`), in one
run on this CPU.

For each LiteMedSAM prefix (the neck-and-decoder recipe freezes 5 of 6 stages, LoRA on the last stage 4) and each
precision a run computes it in (fp32; bf16 where OpenVINO has bf16 on this CPU, PyTorch then under autocast as a bf16
run's training is): the one-off cost of exporting and compiling the graph, the seconds per image of each engine
(images taken one at a time, as the trainer caches them, the engines alternating image by image so the machine's load
falls on all alike), the speed ratio, each engine's difference from the fp32 PyTorch features, and what the main
job's 180 images and the standard protocol's 1447 would take.

Prints and writes the "prefix-engine" section of BENCHMARKS.md.

    python benchmarks/prefix_engine.py --images 40
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
from common import SHARED, markdown_table, write_section

from samsp import ModelConfig, SamSP
from samsp.data import find_pairs
from samsp.data.named import pranet_split
from samsp.data.prepared import PreparedSet
from samsp.data.splits import select
from samsp.inference import prefix_graph
from samsp.inference.onnx_runtimes import openvino_has_bf16

RECIPES = {
    "neck + decoder (5 of 6 stages frozen)": ModelConfig(strategy="full", adapt_stages=0),
    "LoRA on the last stage (4 of 6 frozen)": ModelConfig(adapt_stages=1),
}
JOBS = {"main job (180 images)": 180, "standard protocol (1447 images)": 1447}
# how PyTorch computes a run's prefix in each precision: a bf16 run's under autocast
TORCH_CONTEXT = {"fp32": contextlib.nullcontext, "bf16": lambda: torch.autocast("cpu", dtype=torch.bfloat16)}


def measure(config: ModelConfig, data: PreparedSet, precisions: list[str]) -> dict[str, dict]:
    """Per precision: export + compile seconds, each engine's seconds per image and relative feature difference."""
    model = SamSP(config).eval()
    prefix_graph._COMPILED.clear()  # time the export and compilation, not a graph kept from the previous recipe
    engines, compile_s = {}, {}
    for precision in precisions:  # each precision exports and compiles a graph of its own
        start = time.perf_counter()
        compiled = prefix_graph.prefix_encoder(model, "openvino", precision)
        compile_s[precision] = time.perf_counter() - start
        engines[precision] = {
            "torch": (model.encode_prefix, TORCH_CONTEXT[precision]),
            "openvino": (compiled, contextlib.nullcontext),
        }
    times = {(p, e): [] for p in precisions for e in ("torch", "openvino")}
    errors = {key: [] for key in times}
    for i in range(len(data)):
        x = data.item(i)["image"][None]
        with torch.no_grad():
            exact = model.encode_prefix(x)
            for precision, pair in engines.items():
                for name, (encode, context) in pair.items():
                    start = time.perf_counter()
                    with context():
                        out = encode(x).float()
                    times[precision, name].append(time.perf_counter() - start)
                    errors[precision, name].append(float((out - exact).norm() / exact.norm()))
    # the first image of each engine warms it up
    return {
        p: {
            "compile_s": compile_s[p],
            **{e: sum(times[p, e][1:]) / (len(times[p, e]) - 1) for e in ("torch", "openvino")},
            **{f"{e}_error": sum(errors[p, e]) / len(errors[p, e]) for e in ("torch", "openvino")},
        }
        for p in precisions
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=40, help="PraNet Kvasir training images to encode")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md as it is")
    args = parser.parse_args()
    torch.manual_seed(0)
    root = SHARED / "kvasir-seg"
    train_ids, _ = pranet_split("kvasir-seg")
    pairs = sorted(select(find_pairs(root), train_ids, "PraNet train ids"), key=lambda p: p.id)[: args.images]
    precisions = ["fp32", "bf16"] if openvino_has_bf16() else ["fp32"]
    rows = []
    for recipe, config in RECIPES.items():
        data = PreparedSet(pairs, SamSP(config).backbone)
        for precision, m in measure(config, data, precisions).items():
            ratio = m["torch"] / m["openvino"]
            jobs = [
                f"{(n * m['torch']) / 60:.1f} / {(m['compile_s'] + n * m['openvino']) / 60:.1f}" for n in JOBS.values()
            ]
            rows.append(
                [
                    recipe,
                    precision if precision == "fp32" else "bf16 (PyTorch under autocast)",
                    f"{m['torch']:.2f}",
                    f"{m['openvino']:.2f}",
                    f"{ratio:.2f}x",
                    f"{m['compile_s']:.0f}",
                    f"{m['torch_error']:.1e} / {m['openvino_error']:.1e}",
                    *jobs,
                ]
            )
            print(rows[-1], flush=True)
    header = [
        "frozen prefix",
        "precision",
        "PyTorch s/img",
        "OpenVINO s/img",
        "speed-up",
        "export + compile s",
        "difference from fp32 PyTorch features (PyTorch / OpenVINO)",
        *(f"{job}: min PyTorch / OpenVINO" for job in JOBS),
    ]
    table = markdown_table(header, rows)
    print(table)
    if args.no_write:
        return
    body = (
        "## Encoding the frozen prefix: PyTorch against OpenVINO (`runtime.prefix_engine`, LiteMedSAM, CPU)\n\n"
        f"{args.images} PraNet Kvasir-SEG training images, one at a time as the trainer caches them, the engines "
        "alternating image by image in one run (mean seconds per image after the first). The OpenVINO graph is the "
        "same prefix exported to ONNX and compiled once per process and precision; the job columns add that one-off "
        "cost. The difference is the feature error relative to the fp32 PyTorch "
        "features (norm of the difference over their norm, mean over the images).\n\n" + table
    )
    write_section("prefix-engine", body)


if __name__ == "__main__":
    main()
