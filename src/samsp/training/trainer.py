"""The trainer: `Trainer.fit()` is a short list of named steps, each a method a researcher can override.

It knows nothing about self-prompting: the model returns its passes and `samsp_loss` consumes them. On the CPU
the frozen prefix of the encoder is computed once per image (and per cached augmented view) and reused every
epoch; only the trained encoder stages (`SamSP.trained_stages`), the prompt encoder and the mask decoder run each
step.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from ..config import TrainConfig, apply_overrides, dump_config, load_config
from ..data.prepared import PreparedSet
from ..data.sources import train_val_pairs
from ..data.splits import write_split
from ..data.transforms import build_augment
from ..errors import Preempted, SamspError
from ..files import remove_stale_temporaries, write_text_atomic
from ..inference.prefix_graph import choose_prefix_engine, graph_precision, prefix_encoder
from ..modeling.card import training_data
from ..modeling.losses import samsp_loss
from ..modeling.prompts import ground_truth_boxes, valid_region
from ..modeling.sam_sp import SamSP
from ..progress import Progress
from .averaging import WeightAverage
from .batches import Batches
from .checkpoints import load_state, save_state, state_path
from .hardware import environment, forced_bf16_warning, pick_device, resolve_auto, set_seed
from .history import write_history
from .schedule import make_optimizer, steps_fit

log = logging.getLogger("samsp")
MAX_EPOCHS = 200  # the most epochs a time budget plans


def train(
    data: str | None = None,
    out: str | Path = "runs/samsp",
    config_path: str | Path | None = None,
    overrides: list[str] | None = None,
    resume: str | Path | None = None,
    config: TrainConfig | None = None,
) -> Path:
    """Train SAM-SP and return the run folder.

    The settings are `config` (or the defaults), then the YAML at `config_path`, then `overrides`
    (`section.key=value`); `data` sets `data.path`. With `resume`, that run continues from its last epoch exactly
    and every other argument is ignored. Raises SamspError for unusable settings, data or run folders.
    """
    if resume is not None:
        run_dir = Path(resume)
        if not state_path(run_dir).is_file() or not (run_dir / "config.yaml").is_file():
            raise SamspError(f"{run_dir}: nothing to resume (no config.yaml and {state_path(run_dir).name} in last/)")
        return Trainer(load_config(run_dir / "config.yaml"), run_dir, resume=True).fit()
    run_dir = Path(out)
    if state_path(run_dir).exists():
        raise SamspError(f"{run_dir}: already holds a run; use --resume {run_dir} or another --out")
    config = apply_overrides(config, overrides or []) if config is not None else load_config(config_path, overrides)
    if data is not None:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, path=str(data)))
    return Trainer(config, run_dir).fit()


class Trainer:
    """Fine-tunes a SamSP model: setup, cache, plan, then per epoch train, validate,
    checkpoint; finish."""

    def __init__(self, config: TrainConfig, run_dir: str | Path, resume: bool = False):
        self.config, self.run_dir, self.resume = config, Path(run_dir), resume
        self.notes: list[str] = ["resuming"] if resume else []
        # epochs done, steps done in the next one (with their loss sums), best validation Dice, one row per epoch
        self.progress: dict = {"epoch": 0, "step": 0, "sums": {}, "best": -1.0, "history": []}
        self.stop_signal: str | None = None  # set by SIGTERM/SIGUSR1: save and stop after the current step

    def fit(self) -> Path:
        """Run every step in order; return the run folder."""
        self.setup()
        self.cache()
        self.plan()
        self.on_train_start()
        try:
            with preemption_signals(self):
                while self.progress["epoch"] < self.epochs:
                    epoch = self.progress["epoch"] + 1
                    row = self.train_epoch(epoch)
                    start = time.perf_counter()
                    row["val_dice"] = self.validate()
                    self.val_seconds = time.perf_counter() - start
                    improved = self.on_epoch_end(epoch, row)
                    self.save_checkpoint(improved)
                    if self.stop_requested() and epoch < self.epochs:  # signal in the last step or the validation
                        raise Preempted(self.stop_signal, self.run_dir, epoch, self.steps)
        except Preempted:  # every process agreed to stop after the same step
            self.leave_process_group()
            raise
        return self.finish()

    # ----- steps -----
    def setup(self) -> None:
        """Device and "auto" settings, accelerate, seed, logging, data pairs and the model."""
        from accelerate import Accelerator, DistributedDataParallelKwargs
        from accelerate.state import AcceleratorState

        device = pick_device(self.config.runtime.device)
        slow_bf16 = forced_bf16_warning(device) if self.config.runtime.mixed_precision == "bf16" else None
        self.config, notes = resolve_auto(self.config, device)
        self.notes += notes
        # accelerate keeps one precision per process; a sweep or test suite runs several trainings in one process
        AcceleratorState._reset_state()
        runtime = self.config.runtime
        # some trainable parameters sit out some steps (point embeddings under a box prompt, an empty pass 0)
        ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
        self.accelerator = Accelerator(
            cpu=device.type == "cpu", mixed_precision=runtime.mixed_precision, kwargs_handlers=[ddp]
        )
        self.device = self.accelerator.device
        set_seed(runtime.seed)
        self.train_pairs, self.val_pairs = train_val_pairs(self.config.data, runtime.seed)  # bad data: no folder
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.accelerator.is_main_process:  # a kill -9 mid-write left .NAME.tmp-PID files behind
            remove_stale_temporaries(self.run_dir, recursive=True)
        self.setup_logging()
        if slow_bf16:
            log.warning("warning: %s", slow_bf16)
        log.info(
            "data: %d training and %d validation pairs from %s",
            len(self.train_pairs),
            len(self.val_pairs),
            self.config.data.path or self.config.data.csv,
        )
        if self.accelerator.num_processes > 1:
            log.info(
                "%d processes (%s): global batch %d",
                self.accelerator.num_processes,
                self.accelerator.distributed_type.value,
                self.accelerator.num_processes * self.config.optim.batch_size,
            )
        self.model = SamSP(self.config.model).to(self.device)

    def cache(self) -> None:
        """Decode every pair once; cache the frozen encoder prefix (training views and validation)."""
        data, runtime, model = self.config.data, self.config.runtime, self.model
        augment = build_augment(data.augment)
        backbone = model.backbone
        train_set = PreparedSet(self.train_pairs, backbone, augment, runtime.threads)
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        val_set = PreparedSet(self.val_pairs[rank::world], backbone, None, runtime.threads)
        use_cache = runtime.cache if runtime.cache != "auto" else model.prefix_stages > 0
        cacher = model if use_cache else None
        views = data.cache_views if augment is not None else 1
        dtype = getattr(torch, runtime.cache_dtype)
        precision = "fp32" if runtime.mixed_precision == "no" else runtime.mixed_precision
        engine, why = choose_prefix_engine(
            runtime.prefix_engine, self.device, precision, len(train_set) * views + len(val_set)
        )
        # nothing cached: a compiled prefix still computes each batch's frozen part (the images are augmented anew)
        per_batch = not use_cache and model.prefix_stages > 0 and engine != "torch"
        if use_cache or per_batch:
            self.notes.append(why + ("; nothing is cached, so it encodes every batch" if per_batch else ""))
        started = time.perf_counter()
        common = {
            "batch_size": self.config.optim.batch_size,
            "device": self.device,
            "dtype": dtype,
            "autocast": self.accelerator.autocast,
            "store": Path(runtime.cache_dir).expanduser() if runtime.cache_dir else None,
            "augment_setting": repr(data.augment),
            "engine": engine,
            "precision": graph_precision(engine, precision),
        }
        prefix = prefix_encoder(model, engine, common["precision"]) if per_batch else None
        # every process holds the whole training cache (each epoch deals it out anew); validation is split
        flips = data.cached_flips if augment is not None and use_cache else 0.0
        if data.cached_flips and not flips:
            why = "data.augment is off" if augment is None else "nothing is cached, so data.augment augments images"
            self.notes.append(f"data.cached_flips has no effect: {why}")
        self.train_batches = Batches(
            train_set,
            cacher,
            views,
            runtime.seed,
            rank=rank,
            world=world,
            workers=runtime.workers,
            flips=flips,
            prefix=prefix,
            **common,
        )
        self.val_batches = Batches(val_set, cacher, 1, runtime.seed, prefix=prefix, **common)
        if use_cache:
            log.info(
                "cached the frozen encoder prefix (%d of %d stages) for %d images x %d view(s) in %.0f s",
                model.prefix_stages,
                len(model.stage_names),
                len(train_set),
                views,
                time.perf_counter() - started,
            )

    def plan(self) -> None:
        """Fix the epoch count (from the time budget, when epochs are auto under one), say what the defaults chose,
        record the run."""
        optim = self.config.optim
        self.steps = self.train_batches.steps_per_epoch()
        self.budget_s = None
        if optim.epochs == "auto":
            step_s = self.step_seconds(self.train_batches)
            budget_s = float(optim.time_budget_min) * 60
            fit = self.budget_steps(budget_s, step_s, self.validation_seconds(step_s), self.steps)
            total = int(self.agreed(max(1, fit)))
            self.set_plan(total)
            self.notes.append(
                f"{'CPU' if self.device.type == 'cpu' else 'GPU'}: {self.describe_plan()} fit the "
                f"{optim.time_budget_min:g}-minute budget "
                f"(measured {step_s:.2f} s per step of {optim.batch_size})"
            )
            # one process re-plans by its own clock; several would disagree, so they keep the first plan
            if self.accelerator.num_processes == 1:
                self.budget_s = budget_s
        elif optim.max_steps:  # a max_steps set by hand may end the run before its epochs do
            self.set_plan(self.total_steps)
        for note in self.notes:
            log.info("defaults chose: %s", note)
        cfg = self.config.model
        log.info(
            "strategy %s, trained encoder stages %s, %d trainable parameters, %d self-prompting iteration(s)",
            cfg.strategy,
            ", ".join(self.model.trained_stages) or "none",
            sum(p.numel() for p in self.model.parameters() if p.requires_grad),
            cfg.iterations if cfg.self_prompt else 0,
        )
        if not self.resume and self.accelerator.is_main_process:
            write_text_atomic(self.run_dir / "config.yaml", dump_config(self.config))
            write_text_atomic(self.run_dir / "environment.json", json.dumps(environment(self.device), indent=2))
            write_split(self.run_dir / "splits" / "train.txt", self.train_pairs)
            write_split(self.run_dir / "splits" / "val.txt", self.val_pairs)

    def on_train_start(self) -> None:
        """Optimiser and schedule, handed to accelerate; a resumed run restores them and its progress."""
        self.optimizer, self.scheduler = make_optimizer(self.model, self.config.optim, self.total_steps)
        self.model, self.optimizer = self.accelerator.prepare(self.model, self.optimizer)
        self.core: SamSP = self.accelerator.unwrap_model(self.model)
        ema = self.config.optim.ema
        self.average = WeightAverage(self.core, ema) if ema else None
        if self.resume:
            self.progress = load_state(self.run_dir, self.core, self.optimizer, self.scheduler, self.average)
            log.info(
                "resumed after epoch %d of %d (+%d steps)", self.progress["epoch"], self.epochs, self.progress["step"]
            )
        self.core.train()
        self.loop_start = time.perf_counter()

    def train_epoch(self, epoch: int) -> dict:
        """One pass over this process's share of the training set (from where a resumed run stopped); returns the
        epoch's mean loss parts. Saves the resumable state as `runtime.checkpoint_every_*` says, and on a signal."""
        start, done, planned = time.perf_counter(), self.progress["step"], self.epoch_steps(epoch)
        sums, last_save = dict(self.progress["sums"]), time.perf_counter()
        steps = Progress(
            itertools.islice(self.train_batches.epoch(epoch, start_step=done), planned - done),
            total=planned - done,
            desc=f"epoch {epoch}/{self.epochs}",
            unit="step",
            disable=not self.accelerator.is_main_process,
        )
        for n, batch in enumerate(steps, done + 1):
            for key, value in self.train_step(batch).items():
                sums[key] = sums.get(key, 0.0) + value
            steps.set_postfix(loss=f"{sums['loss'] / n:.4f}")
            self.progress.update(step=n, sums=sums)
            stop = self.stop_requested()
            if n < planned and (stop or self.checkpoint_due(n, last_save)):
                self.save_state()
                last_save = time.perf_counter()
                if stop:
                    raise Preempted(self.stop_signal, self.run_dir, epoch, n)
        self.progress.update(step=0, sums={})
        if self.accelerator.num_processes > 1:  # the epoch's loss over every process's share
            keys = list(sums)
            mean = self.accelerator.reduce(torch.tensor([sums[k] for k in keys], device=self.device), "mean")
            sums = dict(zip(keys, mean.tolist(), strict=True))
        row = {"epoch": epoch, **{k: v / planned for k, v in sums.items()}}
        row["lr"] = self.scheduler.get_last_lr()[0]
        row["seconds"] = time.perf_counter() - start
        return row

    def stop_requested(self) -> bool:
        """Whether a preemption signal has arrived; several processes agree on it, so all stop after the same
        step (one leaving early would strand the others in a collective)."""
        if self.accelerator.num_processes > 1:
            mine = signal.Signals[self.stop_signal].value if self.stop_signal else 0
            agreed = int(self.accelerator.gather(torch.tensor([mine], device=self.device)).max())
            self.stop_signal = signal.Signals(agreed).name if agreed else None
        return self.stop_signal is not None

    def checkpoint_due(self, step: int, last_save: float) -> bool:
        """Whether the resumable state should be saved inside the epoch after `step`."""
        runtime = self.config.runtime
        by_steps = runtime.checkpoint_every_steps > 0 and step % runtime.checkpoint_every_steps == 0
        by_time = (
            runtime.checkpoint_every_min > 0 and time.perf_counter() - last_save >= runtime.checkpoint_every_min * 60
        )
        return by_steps or by_time

    def train_step(self, batch: dict) -> dict:
        """Forward, SAM-SP loss, backward, clip, step (and the weights' moving average); returns the loss parts as
        floats."""
        parts = training_step(self.model, batch, self.config, self.optimizer, self.scheduler, self.accelerator)
        if self.average is not None:
            self.average.update()
        return parts

    def evaluated_weights(self) -> contextlib.AbstractContextManager:
        """The weights validation scores and best/ and last/ hold: the moving average (`optim.ema`) or the trained
        ones."""
        return self.average.swapped_in() if self.average is not None else contextlib.nullcontext()

    @torch.no_grad()
    def validate(self) -> float:
        """Mean prompt-free Dice on the validation set, in the input frame; each process scores its share and the
        sums are added up across processes."""
        self.core.eval()
        total = torch.zeros(2, dtype=torch.float64, device=self.device)  # Dice sum, image count
        with self.evaluated_weights():
            for batch in self.val_batches.epoch(0):
                out = self.core(**model_inputs(batch), valid_hw=batch["valid_hw"])
                dice = dice_at_input(out.logits[-1], batch["mask"], batch["valid_hw"])
                count = torch.tensor(len(dice), dtype=torch.float64, device=dice.device)  # on the GPU with the Dice
                total += torch.stack([dice.double().sum(), count])
        self.core.train()
        total = self.accelerator.reduce(total, "sum")
        return float(total[0] / total[1]) if total[1] else float("nan")

    def on_epoch_end(self, epoch: int, row: dict) -> bool:
        """Record the epoch, log it, re-plan a budgeted run; return whether validation improved."""
        progress = self.progress
        progress["history"].append(row)
        progress["epoch"] = epoch
        improved = row["val_dice"] > progress["best"]
        progress["best"] = max(progress["best"], row["val_dice"])
        log.info(
            "epoch %d/%d  loss %.4f  val Dice %.4f%s  %.0f s",
            epoch,
            self.epochs,
            row["loss"],
            row["val_dice"],
            " (best)" if improved else "",
            row["seconds"],
        )
        if self.budget_s and epoch < self.epochs:  # before saving, so the saved schedule and config.yaml agree
            used = time.perf_counter() - self.loop_start
            step_s = row["seconds"] / max(1, self.epoch_steps(epoch))
            done = epoch * self.steps
            total = done + self.budget_steps(self.budget_s - used, step_s, self.val_seconds, self.steps, done)
            if total != self.total_steps:
                was = self.describe_plan()
                self.set_plan(total)
                log.info(
                    "re-planned: %s fit the %g-minute budget at %.2f s per step (was %s)",
                    self.describe_plan(),
                    self.budget_s / 60,
                    step_s,
                    was,
                )
                self.scheduler.lr_lambdas[0].total_steps = self.total_steps
                if self.accelerator.is_main_process:
                    write_text_atomic(self.run_dir / "config.yaml", dump_config(self.config))
        return improved

    def save_checkpoint(self, improved: bool) -> None:
        """best/ (when validation improved), last/, the resumable state, metrics.csv and curves.png."""
        if not self.accelerator.is_main_process:
            return
        row = self.progress["history"][-1]
        extra = {"epoch": row["epoch"], "val_dice": row["val_dice"], "data": training_data(self.run_dir)}
        with disk_errors(self.run_dir):
            with self.evaluated_weights():
                if improved:
                    self.core.save_pretrained(self.run_dir / "best", extra=extra)
                self.core.save_pretrained(self.run_dir / "last", extra=extra)
            save_state(self.run_dir, self.core, self.optimizer, self.scheduler, self.progress, self.average)
            write_history(self.run_dir, self.progress["history"])

    def save_state(self) -> None:
        """The resumable state alone (inside an epoch): optimiser, schedule, RNG, weights, progress."""
        if self.accelerator.is_main_process:
            with disk_errors(self.run_dir):
                save_state(self.run_dir, self.core, self.optimizer, self.scheduler, self.progress, self.average)

    def finish(self) -> Path:
        """Leave the process group; say where the final and the best-validation models are; return the run folder."""
        self.leave_process_group()
        final = self.progress["history"][-1]["val_dice"] if self.progress["history"] else float("nan")
        log.info(
            "done: final model in %s (validation Dice %.4f), the run folder's default; best validation Dice %.4f in %s",
            self.run_dir / "last",
            final,
            self.progress["best"],
            self.run_dir / "best",
        )
        return self.run_dir

    # ----- helpers -----
    def leave_process_group(self) -> None:
        """End a run of several processes once all reach this point. A gloo process group left to the interpreter's
        exit can abort the process (SIGABRT, "terminate called without an active exception", pytorch/pytorch#190489).
        Not called after an error: a process still waiting in a collective would never reach the barrier."""
        if self.accelerator.num_processes > 1:
            self.accelerator.wait_for_everyone()
            self.accelerator.end_training()

    @property
    def epochs(self) -> int:
        return int(self.config.optim.epochs)

    @property
    def total_steps(self) -> int:
        """Steps in all: every epoch's, unless `optim.max_steps` cuts the last epoch short."""
        every = self.epochs * self.steps
        return min(every, self.config.optim.max_steps or every)

    def epoch_steps(self, epoch: int) -> int:
        """Steps in `epoch` (from 1): all of this process's batches, or fewer in a last epoch cut short."""
        return max(0, min(self.steps, self.total_steps - (epoch - 1) * self.steps))

    def set_plan(self, total: int) -> None:
        """Plan `total` steps in all: whole epochs, the last cut short where `total` is not a multiple of an epoch's
        steps (config.yaml records optim.epochs and optim.max_steps, so a resumed run keeps the plan)."""
        epochs = max(1, -(-total // self.steps))
        max_steps = total if total < epochs * self.steps else None
        optim = dataclasses.replace(self.config.optim, epochs=epochs, max_steps=max_steps)
        self.config = dataclasses.replace(self.config, optim=optim)

    def describe_plan(self) -> str:
        """The plan in words for the log: "3 epochs", or "3.50 epochs (140 steps, 40 per epoch)"."""
        total, steps = self.total_steps, self.steps
        if total % steps == 0:
            return f"{total // steps} epochs"
        return f"{total / steps:.2f} epochs ({total} steps, {steps} per epoch)"

    def budget_steps(self, time_s: float, step_s: float, val_s: float, steps: int, done: int = 0) -> int:
        """Steps after the `done` ones that fit `time_s`, with a validation after each epoch of `steps` steps
        (MAX_EPOCHS epochs at most)."""
        return steps_fit(time_s, step_s, val_s, steps, MAX_EPOCHS * steps - done)

    def agreed(self, value: float) -> float:
        """Process 0's `value` in every process: each times its own steps, and plans made from different clocks
        would leave one process waiting for another in a collective."""
        if self.accelerator.num_processes == 1:
            return value
        from accelerate.utils import broadcast

        return float(broadcast(torch.tensor([value], dtype=torch.float64, device=self.device), from_process=0).item())

    def validation_seconds(self, step_s: float) -> float:
        """A validation's time, before one was timed: about a third of a training step per batch."""
        return len(self.val_pairs) * step_s / max(1, self.config.optim.batch_size) / 3

    def step_seconds(self, batches: Batches) -> float:
        """Seconds per training step on `batches`, timed on a throw-away copy so the real run starts untouched; a step's
        time includes making its batch (augmenting and encoding it, when nothing is cached)."""
        probe = copy.deepcopy(self.model)
        probe.train()
        optimizer, scheduler = make_optimizer(probe, self.config.optim, 100)
        times: list[float] = []
        while len(times) < 3:  # the first step warms up; a one-batch set is run again
            start = time.perf_counter()
            for batch in batches.epoch(-1):
                training_step(probe, batch, self.config, optimizer, scheduler, self.accelerator)
                now = time.perf_counter()
                times.append(now - start)
                start = now
                if len(times) >= 3:
                    break
        return min(times[1:])

    def setup_logging(self) -> None:
        """Log to stdout and RUN/train.log from the main process; other processes log warnings only."""
        log.setLevel(logging.INFO if self.accelerator.is_main_process else logging.WARNING)
        log.handlers.clear()
        fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
        for handler in (logging.StreamHandler(sys.stdout), logging.FileHandler(self.run_dir / "train.log")):
            handler.setFormatter(fmt)
            log.addHandler(handler)
        log.propagate = False


def training_step(model: torch.nn.Module, batch: dict, config: TrainConfig, optimizer, scheduler, accelerator) -> dict:
    """One optimisation step of a SamSP (wrapped by accelerate when several processes train) on `batch`: the passes
    under autocast, the SAM-SP loss, backward, clipping, AdamW and the schedule; returns the loss parts (and the share
    of images whose pass 0 fell back to the whole frame)."""
    with accelerator.autocast():
        prompts = None
        if config.loss.gt_box > 0:  # one more pass, prompted by the label's box
            prompts = ground_truth_boxes(batch["mask"], batch["valid_hw"], config.loss.gt_box_jitter)
        out = model(**model_inputs(batch), valid_hw=batch["valid_hw"], prompt_boxes=prompts)
        loss, parts = samsp_loss(out.logits, batch["mask"], config.loss, out.prompted)
    accelerator.backward(loss)
    if config.optim.grad_clip:
        accelerator.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], config.optim.grad_clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    parts["fallback"] = float(out.fallback.float().mean())
    return parts


def model_inputs(batch: dict) -> dict:
    """The model's input keyword for a batch: cached prefix features, or images."""
    return {"features": batch["features"]} if "features" in batch else {"images": batch["image"]}


def dice_at_input(logits: torch.Tensor, mask: torch.Tensor, valid_hw: torch.Tensor) -> torch.Tensor:
    """Binary Dice per image over the unpadded input frame; both empty counts as 1."""
    region = valid_region(valid_hw, mask.shape[-1])
    pred = (logits > 0) & region
    gt = (mask > 0.5) & region
    inter = (pred & gt).flatten(1).sum(1).float()
    total = (pred.flatten(1).sum(1) + gt.flatten(1).sum(1)).float()
    return torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))


@contextlib.contextmanager
def preemption_signals(trainer: Trainer) -> Iterator[None]:
    """While training, SIGTERM and SIGUSR1 (how SLURM and Kubernetes announce preemption) ask the trainer to save
    a resumable checkpoint after the current step and stop (`Preempted`)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum, frame) -> None:
        trainer.stop_signal = signal.Signals(signum).name

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def disk_errors(run_dir: Path) -> Iterator[None]:
    """A failed write (full disk, quota, read-only) becomes one SamspError; the files written before stay intact."""
    try:
        yield
    except OSError as err:
        where = err.filename or run_dir
        raise SamspError(
            f"{where}: could not write the checkpoint ({err.strerror or err}); the previous checkpoint in "
            f"{run_dir / 'last'} is intact: free space and continue with samsp train --resume {run_dir}"
        ) from err
