"""LoRA on the image encoder (peft), which encoder weights train (LoRA, full, frozen), and the merge for export."""

from __future__ import annotations

import re
import typing
from collections.abc import Sequence

from torch import nn

from ..config import Strategy
from ..errors import SamspError

STRATEGIES = typing.get_args(Strategy)


def adapted_stage_names(stage_names: Sequence[str], adapt_stages: int | None) -> list[str]:
    """The trailing encoder stages (the neck excluded) that train: the last `adapt_stages`, or all when None."""
    body = [n for n in stage_names if n != "neck"]
    if adapt_stages is None:
        return body
    if adapt_stages < 0:
        raise SamspError(f"adapt_stages must be >= 0 or None (all), got {adapt_stages}")
    return body[len(body) - adapt_stages :] if adapt_stages else []


def lora_pattern(stages: Sequence[str], targets: Sequence[str]) -> str:
    """A peft target_modules regex: the target layers (e.g. attn.qkv) inside the given stages only."""
    scope = "|".join(re.escape(s) for s in stages)
    layers = "|".join(re.escape(t) for t in targets)
    return rf"({scope})\..*({layers})"


def apply_lora(
    encoder: nn.Module, stages: Sequence[str], targets: Sequence[str], rank: int, alpha: float, dropout: float
) -> nn.Module:
    """Wrap the encoder with peft LoRA on `targets` within `stages`; the base weights stay frozen."""
    if not stages:
        raise SamspError("strategy 'lora' needs at least one adapted encoder stage (adapt_stages >= 1)")
    from peft import LoraConfig, get_peft_model  # imported here: merged models load without peft

    if not targets:
        raise SamspError("strategy 'lora' needs at least one layer name in model.lora_targets")
    names = [name for name, _ in encoder.named_modules()]
    for target in targets:  # peft ignores a target that matches nothing while another one matches
        if not any(re.fullmatch(lora_pattern(stages, [target]), name) for name in names):
            raise SamspError(
                f"LoRA target {target!r} (model.lora_targets) matches no layer in encoder stages {list(stages)}"
            )
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=lora_pattern(stages, targets),
        bias="none",
    )
    try:
        return get_peft_model(encoder, config)
    except ValueError as err:
        raise SamspError(f"LoRA found no layer matching {list(targets)} in stages {list(stages)}: {err}") from err


def merge_lora(encoder: nn.Module) -> nn.Module:
    """Fold each LoRA product BA into its base weight W (peft's merge), so inference costs nothing extra."""
    return encoder.merge_and_unload() if is_peft(encoder) else encoder


def base_encoder(encoder: nn.Module) -> nn.Module:
    """The encoder module whose stages run the forward (inside the peft wrapper when there is one)."""
    return encoder.get_base_model() if is_peft(encoder) else encoder


def is_peft(module: nn.Module) -> bool:
    """True for a module wrapped by peft."""
    return hasattr(module, "merge_and_unload") and hasattr(module, "get_base_model")


def set_trainable(model: nn.Module, strategy: str, full_stages: Sequence[str]) -> None:
    """Freeze or unfreeze parameters for a training strategy: in the encoder, LoRA's adapters (strategy `lora`) and
    every weight of `full_stages`, the stages that train in full. Prompt encoder, mask decoder(s) and the early
    fusion head (model.fusion_stage) train, except the IoU heads."""
    if strategy not in STRATEGIES:
        raise SamspError(f"unknown strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")
    for name, param in model.image_encoder.named_parameters():
        lora = strategy == "lora" and "lora_" in name
        param.requires_grad = lora or any(f"{s}." in name for s in full_stages)
    model.prompt_encoder.requires_grad_(True)
    if model.early_fusion is not None:
        model.early_fusion.requires_grad_(True)
    for decoder in (model.mask_decoder, model.box_decoder):
        if decoder is not None:
            decoder.requires_grad_(True)
            # the SAM-SP loss never reaches the IoU head: its scores stay SAM's, and no process waits for its gradient
            decoder.iou_prediction_head.requires_grad_(False)
