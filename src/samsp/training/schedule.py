"""The optimiser and its learning-rate schedule: AdamW, linear warm-up, then cosine (or constant)."""

from __future__ import annotations

import logging
import math

import torch

from ..config import OptimConfig

log = logging.getLogger("samsp")
DECODER_PREFIXES = ("prompt_encoder.", "mask_decoder.", "box_decoder.")  # SamSP's heads, as named_parameters names them


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


def make_optimizer(model: torch.nn.Module, optim: OptimConfig, total_steps: int):
    """AdamW over the trainable parameters and its warm-up + cosine LambdaLR scheduler; SAM's prompt encoder and mask
    decoder(s) learn at `lr x decoder_lr_scale`; the adapted encoder and the new fusion head (model.fusion_stage)
    at `lr`."""
    named = [(name, param) for name, param in model.named_parameters() if param.requires_grad]
    if optim.decoder_lr_scale == 1:  # one group, in parameter order: what runs saved before the setting existed hold
        param_groups = [{"params": [param for _, param in named], "lr": optim.lr}]
    else:
        lrs = {False: optim.lr, True: optim.lr * optim.decoder_lr_scale}  # keyed by "is a SAM head"
        param_groups = [
            {"params": [p for name, p in named if name.startswith(DECODER_PREFIXES) == head], "lr": lr}
            for head, lr in lrs.items()
        ]
        param_groups = [group for group in param_groups if group["params"]]  # e.g. a frozen encoder adapts nothing
    optimizer = torch.optim.AdamW(param_groups, lr=optim.lr, weight_decay=optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(total_steps, optim.warmup, optim.schedule))
    return optimizer, scheduler


def steps_fit(time_s: float, step_s: float, val_s: float, steps: int, limit: int) -> int:
    """The most training steps that fit `time_s` at `step_s` seconds each, with a validation of `val_s` seconds after
    every `steps` steps (an epoch) and after a last, shorter epoch; at most `limit`, never fewer than 0."""
    per_epoch = steps * step_s + val_s
    full = int(time_s // per_epoch) if per_epoch > 0 else limit
    left = time_s - full * per_epoch - val_s  # what a last, partial epoch and its validation may use
    partial = min(steps - 1, int(left // step_s)) if left > 0 and step_s > 0 else 0
    return max(0, min(limit, full * steps + partial))
