"""What a training step costs when every image is augmented anew (`runtime.cache=false`), against the cached prefix.

A cached CPU run encodes the frozen prefix once and then trains on the same un-augmented features every epoch; a run
that augments its images must compute the prefix again every step. This times, in one run on this CPU, a LoRA
(last stage) training step, the trainer's own (`training.trainer.training_step`: model, SAM-SP loss, backward, AdamW
and the schedule) on the trainer's own batches (`training.batches.Batches`: augmentation, prefix), in each way a run
can feed it:

- the cached prefix (no augmentation after caching), as the CPU default trains;
- the same, with the frozen Linear and convolution weights stored in bf16, so autocast need not cast them again on
  every call (a speed-up the cost reading suggested);
- images augmented each step, the whole encoder run by the model in PyTorch (under autocast in a bf16 run);
- images augmented each step, the frozen prefix computed per batch by the compiled OpenVINO graph (what a CPU run
  with `runtime.cache=false` and `runtime.prefix_engine: auto` does).

The ways alternate step by step so the machine's load falls on all alike; a step's time includes making its batch.
Prints and writes the "augmented-steps" section of BENCHMARKS.md.

    python benchmarks/augmented_steps.py --steps 8
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch
from accelerate import Accelerator
from common import SHARED, markdown_table, write_section

from samsp import ModelConfig, SamSP
from samsp.config import TrainConfig
from samsp.data import find_pairs
from samsp.data.prepared import PreparedSet
from samsp.data.transforms import build_augment
from samsp.inference import prefix_graph
from samsp.inference.onnx_runtimes import openvino_has_bf16
from samsp.training.batches import Batches
from samsp.training.schedule import make_optimizer
from samsp.training.trainer import training_step

WAYS = (
    "cached prefix (no augmentation)",
    "cached prefix, frozen weights stored in bf16",
    "augmented, prefix in PyTorch",
    "augmented, prefix in OpenVINO",
)


def frozen_weights_to_bf16(model: SamSP) -> int:
    """Store every frozen Linear and convolution weight and bias in bf16; returns how many values were cast."""
    cast = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear | torch.nn.Conv2d):
            for p in (module.weight, module.bias):
                if p is not None and not p.requires_grad:
                    p.data = p.data.to(torch.bfloat16)
                    cast += p.numel()
    return cast


def stepper(way: str, pairs: list, config: TrainConfig, accelerator: Accelerator, graph: str):
    """A function that runs one trainer step (`training.trainer.training_step`) of `way`, on its own model and
    batches, and returns its seconds."""
    torch.manual_seed(0)
    model = SamSP(config.model).train()
    batch_size = config.optim.batch_size
    cached = way.startswith("cached")
    data = PreparedSet(pairs, model.backbone, None if cached else build_augment(True))
    common = {"seed": 0, "batch_size": batch_size, "device": torch.device("cpu"), "dtype": torch.float32}
    if cached:
        batches = Batches(data, model, 1, autocast=accelerator.autocast, engine="openvino", precision=graph, **common)
        if "bf16" in way:
            frozen_weights_to_bf16(model)
    else:
        prefix = prefix_graph.prefix_encoder(model, "openvino", graph) if "OpenVINO" in way else None
        batches = Batches(data, None, 1, prefix=prefix, **common)
    optimizer, scheduler = make_optimizer(model, config.optim, 1000)
    stream = iter(())
    epoch = 0

    def step() -> float:
        nonlocal stream, epoch
        start = time.perf_counter()
        batch = next(stream, None)
        if batch is None:  # a new epoch: new order and new augmentations
            epoch += 1
            stream = batches.epoch(epoch)
            batch = next(stream)
        training_step(model, batch, config, optimizer, scheduler, accelerator)
        return time.perf_counter() - start

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per way, after one warm-up step")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--images", type=int, default=16, help="Kvasir-SEG images the batches are drawn from")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    bf16 = openvino_has_bf16()
    precision = "bf16" if bf16 else "fp32"
    accelerator = Accelerator(cpu=True, mixed_precision="bf16" if bf16 else "no")
    config = TrainConfig(model=ModelConfig(strategy="lora", adapt_stages=1))
    config = dataclasses.replace(config, optim=dataclasses.replace(config.optim, batch_size=args.batch_size))
    pairs = find_pairs(SHARED / "kvasir-seg")[: args.images]
    steps = {way: stepper(way, pairs, config, accelerator, precision) for way in WAYS}
    times: dict[str, list[float]] = {way: [] for way in WAYS}
    for way in WAYS:  # warm-up: the first step of each way pays for allocations and the graph's first run
        steps[way]()
    for _ in range(args.steps):
        for way in WAYS:
            times[way].append(steps[way]())
    base = statistics.median(times[WAYS[0]])
    rows = []
    for way in WAYS:
        median = statistics.median(times[way])
        rows.append([way, round(median, 2), round(args.batch_size / median, 2), f"{median / base:.2f}x"])
        print(way, [round(t, 2) for t in times[way]], flush=True)
    table = markdown_table(["batches", "s per step (median)", "img/s", "step time / cached"], rows)
    print(table)
    if args.no_write:
        return
    body = "\n".join(
        [
            "## Training on images augmented every step: what a step costs (LiteMedSAM, LoRA on the last stage, CPU)",
            "",
            f"One training step of {args.batch_size} images (the trainer's batches and its `training_step`: two "
            "self-prompting passes, SAM-SP loss with pass-0 Dice, backward, clipping, AdamW and the schedule), "
            f"{precision} "
            f"({'autocast and a bf16 OpenVINO graph' if bf16 else 'no autocast, fp32 graph'}), 2 threads; "
            f"{args.images} Kvasir-SEG images; the four ways alternate step by step, {args.steps} timed steps each "
            "after a warm-up, and a step's time includes making its batch (augmenting it and, when nothing is "
            "cached, encoding its prefix).",
            "",
            table,
        ]
    )
    write_section("augmented-steps", body)


if __name__ == "__main__":
    main()
