"""Encoding the frozen encoder prefix (what a CPU run caches before training, and what an evaluation computes for
every test image): PyTorch eager against the same prefix compiled for OpenVINO (`runtime.prefix_engine`), in one
run on this CPU.

For each LiteMedSAM prefix (the neck-and-decoder recipe freezes 5 of 6 stages, LoRA on the last stage 4): the one-off
cost of exporting and compiling the graph, the seconds per image of each engine (images taken one at a time, as the
trainer caches them, the two engines alternating image by image so the machine's load falls on both alike), the
speed ratio, the largest feature difference, and what the main job's 180 images and the standard protocol's 1447
would take.

Prints and writes the "prefix-engine" section of BENCHMARKS.md.

    python benchmarks/prefix_engine.py --images 40
"""

from __future__ import annotations

import argparse
import time

import torch
from common import SHARED, markdown_table, write_section

from samsp import ModelConfig, SamSP
from samsp.data import find_pairs
from samsp.data.named import pranet_split
from samsp.data.prepared import PreparedSet
from samsp.data.splits import select
from samsp.inference import prefix_graph

RECIPES = {
    "neck + decoder (5 of 6 stages frozen)": ModelConfig(strategy="full", adapt_stages=0),
    "LoRA on the last stage (4 of 6 frozen)": ModelConfig(adapt_stages=1),
}
JOBS = {"main job (180 images)": 180, "standard protocol (1447 images)": 1447}


def measure(config: ModelConfig, data: PreparedSet) -> dict:
    model = SamSP(config)
    prefix_graph._COMPILED.clear()  # time the export and compilation, not a graph kept from the previous recipe
    start = time.perf_counter()
    compiled = prefix_graph.prefix_encoder(model, "openvino")
    compile_s = time.perf_counter() - start
    times = {"torch": [], "openvino": []}
    difference = scale = 0.0
    for i in range(len(data)):
        x = data.item(i)["image"][None]
        outputs = {}
        for name, encode in (("torch", model.encode_prefix), ("openvino", compiled)):
            start = time.perf_counter()
            outputs[name] = encode(x)
            times[name].append(time.perf_counter() - start)
        difference = max(difference, float((outputs["torch"] - outputs["openvino"]).abs().max()))
        scale = max(scale, float(outputs["torch"].abs().max()))
    # the first image of each engine warms it up
    per_image = {name: sum(t[1:]) / (len(t) - 1) for name, t in times.items()}
    return {"compile_s": compile_s, **per_image, "difference": difference, "scale": scale}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=40, help="PraNet Kvasir training images to encode")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md as it is")
    args = parser.parse_args()
    torch.manual_seed(0)
    root = SHARED / "kvasir-seg"
    train_ids, _ = pranet_split("kvasir-seg")
    pairs = sorted(select(find_pairs(root), train_ids, "PraNet train ids"), key=lambda p: p.id)[: args.images]
    rows = []
    for recipe, config in RECIPES.items():
        data = PreparedSet(pairs, SamSP(config).backbone)
        m = measure(config, data)
        ratio = m["torch"] / m["openvino"]
        jobs = [f"{(n * m['torch']) / 60:.1f} / {(m['compile_s'] + n * m['openvino']) / 60:.1f}" for n in JOBS.values()]
        rows.append(
            [
                recipe,
                f"{m['torch']:.2f}",
                f"{m['openvino']:.2f}",
                f"{ratio:.2f}x",
                f"{m['compile_s']:.0f}",
                f"{m['difference']:.1e} (of {m['scale']:.0f})",
                *jobs,
            ]
        )
        print(rows[-1], flush=True)
    header = [
        "frozen prefix",
        "PyTorch s/img",
        "OpenVINO s/img",
        "speed-up",
        "export + compile s",
        "max feature difference",
        *(f"{job}: min PyTorch / OpenVINO" for job in JOBS),
    ]
    table = markdown_table(header, rows)
    print(table)
    if args.no_write:
        return
    body = (
        "## Encoding the frozen prefix: PyTorch against OpenVINO (`runtime.prefix_engine`, LiteMedSAM, CPU, fp32)\n\n"
        f"{args.images} PraNet Kvasir-SEG training images, one at a time as the trainer caches them, the two engines "
        "alternating image by image in one run (mean seconds per image after the first). The OpenVINO graph is the "
        "same prefix exported to ONNX once per process; the job columns add that one-off cost.\n\n" + table
    )
    write_section("prefix-engine", body)


if __name__ == "__main__":
    main()
