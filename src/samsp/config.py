"""Typed configuration: one dataclass per section, the defaults in one place, validated on load.

A training config is the defaults, then a YAML file, then `--set section.key=value` overrides, in that order.
Every value is checked against its field's type: an unknown key or a wrong type is one `SamspError` line naming
the key, and an override's text is parsed by the field's type (so a path called `on` stays a path). Values left
as "auto" are filled for the hardware by `samsp.training.hardware.resolve_auto`, which returns a new, concrete
config that the run folder records. This module knows nothing of the model or of torch.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import SamspError

BackboneName = Literal["litemedsam", "vit_b", "vit_l", "vit_h", "tiny"]
Strategy = Literal["lora", "frozen", "full"]
Fallback = Literal["no_prompt", "full_box"]
Precision = Literal["fp32", "bf16"]
Auto = Literal["auto"]
PrefixEngine = Literal["auto", "torch", "openvino"]  # what computes the encoder's frozen prefix on a CPU


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a SamSP network; saved beside its weights (samsp.json)."""

    backbone: BackboneName = "litemedsam"
    checkpoint: str | None = None  # base SAM weights; None = bundled (litemedsam) or the cached official file
    input_size: int | None = None  # square input side in pixels; None = the backbone's own (litemedsam 256, ViTs 1024)
    strategy: Strategy = "lora"  # how the image encoder trains; "full" trains the adapted stages and the neck
    adapt_stages: int | None | Auto = None  # trailing encoder stages that train (None = all); the rest is frozen
    lora_rank: int = 4
    lora_alpha: float = 4.0
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = ("attn.qkv", "attn.proj")
    train_neck: bool = False  # under strategy lora, the encoder's neck trains in full too (strategy full always does)
    self_prompt: bool = True  # False: one no-prompt pass (the SAMed-style baseline)
    iterations: int = 1  # self-prompting iterations when training (passes = 1 + iterations)
    infer_iterations: int | None = None  # at inference; None = same as training
    empty_fallback: Fallback = "no_prompt"  # empty pass 0: keep the no-prompt prediction, or prompt a full box
    threshold: float = 0.5
    box_opening: int = 0  # opening radius (input pixels) on a pass's mask before its box: drops thin stray blobs
    box_jitter: float = 0.0  # training only: move box edges by up to this fraction of the box size
    # the passes prompted by a box run their own copy of the mask decoder (same pretrained start), so learning to
    # segment with no prompt (pass 0) and following a box (the self-prompted passes) do not share one set of weights
    box_decoder: bool = False
    # SAM's own refinement input: each self-prompted pass also gets the previous pass's logits as the prompt encoder's
    # dense mask prompt, besides their box (SAM trains its interactive passes so). False = the box alone (the paper)
    mask_prompt: bool = False
    # HQ-SAM-style early-feature fusion: this encoder stage's output (e.g. "layers.1"), upsampled by a small head that
    # starts at zero, is added to the mask decoder's upscaled mask features; the frozen prefix then ends at it at the
    # latest. None = off (SAM's decoder as it is)
    fusion_stage: str | None = None

    def __post_init__(self) -> None:
        _validate(self)
        if self.iterations < 0 or (self.infer_iterations is not None and self.infer_iterations < 0):
            raise SamspError("model.iterations and model.infer_iterations must be >= 0")
        if self.input_size is not None and (self.input_size < 64 or self.input_size % 32):
            raise SamspError(f"model.input_size must be a multiple of 32, at least 64, got {self.input_size}")
        if isinstance(self.adapt_stages, int) and self.adapt_stages < 0:
            raise SamspError(f"model.adapt_stages must be >= 0, null (all) or auto, got {self.adapt_stages}")
        if not 0 < self.threshold < 1:
            raise SamspError(f"model.threshold must be between 0 and 1, got {self.threshold}")
        if self.train_neck and self.strategy != "lora":
            raise SamspError(f"model.train_neck applies to strategy lora (under {self.strategy} the strategy decides)")
        if self.box_opening < 0 or not 0 <= self.box_jitter < 1:
            raise SamspError("model.box_opening must be >= 0 and model.box_jitter in [0, 1)")
        for name in ("box_decoder", "mask_prompt"):
            if getattr(self, name) and not (self.self_prompt and self.iterations > 0):
                raise SamspError(
                    f"model.{name} needs a self-prompting pass to run (model.self_prompt, iterations >= 1)"
                )

    @property
    def threshold_logit(self) -> float:
        """`threshold` on the logit scale: a pass's mask is its logits above this."""
        return math.log(self.threshold / (1 - self.threshold))

    @property
    def inference_iterations(self) -> int:
        """Self-prompting passes after pass 0 at inference."""
        if not self.self_prompt:
            return 0
        return self.iterations if self.infer_iterations is None else self.infer_iterations


@dataclass(frozen=True)
class LossConfig:
    """The SAM-SP loss: Dice on the last pass (and on pass 0) plus alpha x self-distillation (modeling/losses.py)."""

    alpha: float = 1.0  # weight of self-distillation
    temperature: float = 1.0
    # also supervise pass 0 with Dice, so its box becomes useful sooner; not in the paper's loss (false restores it),
    # the default because the standard polyp protocol measured it better on validation (BENCHMARKS.md, protocol)
    dice_first_pass: bool = True
    distill: bool = True
    bce: float = 0.0  # weight of per-pixel binary cross-entropy on every Dice-supervised pass (0 = the paper's loss)
    # weight of PraNet's structure loss (BCE + IoU weighted towards the label's outline) on every Dice-supervised pass
    structure: float = 0.0
    # weight of a focal term (alpha 0.25, gamma 2) on every Dice-supervised pass; SAM was trained with focal:Dice 20:1
    focal: float = 0.0
    # weight of Dice on one more training pass prompted by the ground-truth box (edges moved by up to
    # gt_box_jitter of its size), so fine-tuning keeps the decoder's box-following skill; 0 = off (the paper's loss)
    gt_box: float = 0.0
    gt_box_jitter: float = 0.1

    def __post_init__(self) -> None:
        _validate(self)
        if self.bce < 0 or self.structure < 0 or self.focal < 0:
            raise SamspError("loss.bce, loss.structure and loss.focal must be >= 0")
        if self.gt_box < 0 or not 0 <= self.gt_box_jitter < 1:
            raise SamspError("loss.gt_box must be >= 0 and loss.gt_box_jitter in [0, 1)")


@dataclass(frozen=True)
class DataConfig:
    """Where the labelled pairs come from and how training samples are made."""

    path: str | None = None  # folder with images/ and masks/, or a named dataset (kvasir-seg, isic2018)
    images_dir: str = "images"
    masks_dir: str = "masks"
    mask_suffix: str = ""
    mask_ext: str | None = None
    on_unpaired: Literal["error", "skip"] = "error"  # skip: leave unpaired images out with a warning
    csv: str | None = None  # CSV of image,mask paths instead of folders
    train_ids: str | None = None  # id-list file, or pranet:<dataset> for the shipped PraNet training ids
    val_ids: str | None = None  # without it, val_fraction of the training ids is carved off (seeded)
    val_fraction: float = 0.1
    limit: int | None = None  # train on a seeded sample of this many training pairs
    augment: bool | dict[str, float] = True  # or probabilities: hflip, vflip, rotate90, affine, color
    cache_views: int = 1  # augmented views per image kept when the frozen encoder prefix is cached
    # probability of each mirror flip (horizontal, vertical) of a cached sample's prefix features and mask, drawn
    # per epoch: the only augmentation a cached run can have after caching (an approximation; training/feature_flips)
    cached_flips: float = 0.0

    def __post_init__(self) -> None:
        _validate(self)
        if not 0 <= self.cached_flips <= 1:
            raise SamspError("data.cached_flips must be a probability in [0, 1]")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with a linear warm-up and a cosine (or constant) schedule."""

    epochs: int | Auto = "auto"  # GPU: 30; CPU (or a GPU given time_budget_min): as many as fit in time_budget_min
    time_budget_min: float | None | Auto = "auto"  # CPU: 30; GPU: none
    max_steps: int | None = None  # stop after this many steps in all, cutting the last epoch short (a budget plans it)
    batch_size: int = 4
    lr: float = 3e-4
    decoder_lr_scale: float = 1.0  # learning rate of SAM's pretrained prompt encoder and mask decoder = lr x this
    weight_decay: float = 0.01
    warmup: float = 0.05  # fraction of all steps with a linear warm-up
    schedule: Literal["cosine", "constant"] = "cosine"
    grad_clip: float = 1.0
    # decay of an exponential moving average of the trained weights, taken after every step; validation, best/ and
    # last/ then use the averaged weights. 0 = off (the trained weights themselves)
    ema: float = 0.0

    def __post_init__(self) -> None:
        _validate(self)
        if not 0 <= self.ema < 1:
            raise SamspError("optim.ema must be in [0, 1) (0 = no moving average)")
        if self.decoder_lr_scale < 0:
            raise SamspError("optim.decoder_lr_scale must be >= 0")
        if self.max_steps is not None and self.max_steps < 1:
            raise SamspError("optim.max_steps must be >= 1 (or null: every step of every epoch)")


@dataclass(frozen=True)
class RuntimeConfig:
    """Where and how the run executes; none of it changes what the model learns, except the seed."""

    seed: int = 0
    device: str = "auto"  # cpu, cuda, ... (accelerate handles multi-GPU under `accelerate launch`/torchrun)
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"  # auto: bf16 where it is measured to pay
    cache: bool | Auto = "auto"  # cache the frozen encoder prefix; auto = whenever there is a frozen prefix
    cache_dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    cache_dir: str | None = None  # also keep the cached prefix features here, for later runs on the same images
    # what computes the cached prefix: auto = OpenVINO for a CPU run with enough images, in fp32 (or in bf16 where
    # OpenVINO has bf16 units for a bf16 run), else PyTorch
    prefix_engine: PrefixEngine = "auto"
    threads: int = 4  # image-decoding threads
    workers: int | Auto = "auto"  # data-loader workers for on-the-fly augmentation; auto = 0 on the CPU, 8 on a GPU
    checkpoint_every_min: float = 10.0  # inside an epoch, save the resumable state this often (0: epoch ends only)
    checkpoint_every_steps: int = 0  # ... or every this many steps (0: off)

    def __post_init__(self) -> None:
        _validate(self)


def _train_model_defaults() -> ModelConfig:
    return ModelConfig(adapt_stages="auto")


@dataclass(frozen=True)
class TrainConfig:
    """A whole training run's settings, section by section."""

    model: ModelConfig = field(default_factory=_train_model_defaults)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


SECTIONS: dict[str, type] = {
    f.name: typing.get_type_hints(TrainConfig)[f.name] for f in dataclasses.fields(TrainConfig)
}


# ----- reading values by type -----
_TRUE, _FALSE = {"true", "yes", "on"}, {"false", "no", "off"}
_INT = re.compile(r"[+-]?\d+")


def _validate(instance: Any) -> None:
    """Coerce every field of a section in place (frozen dataclasses) or raise one line naming the key."""
    section = _SECTION_NAMES.get(type(instance).__name__, type(instance).__name__)
    hints = typing.get_type_hints(type(instance))
    for f in dataclasses.fields(instance):
        value = coerce(getattr(instance, f.name), hints[f.name], f"{section}.{f.name}")
        object.__setattr__(instance, f.name, value)


_SECTION_NAMES = {
    "ModelConfig": "model",
    "LossConfig": "loss",
    "DataConfig": "data",
    "OptimConfig": "optim",
    "RuntimeConfig": "runtime",
}


def coerce(value: Any, tp: Any, key: str) -> Any:
    """`value` as type `tp` (a str from the command line is parsed by the type); SamspError naming `key` if not."""
    options = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    for option in options:
        ok, result = _as(value, option)
        if ok:
            return result
    raise SamspError(f"setting {key}: expected {_describe(tp)}, got {value!r}")


def _as(value: Any, option: Any) -> tuple[bool, Any]:
    text = value.strip() if isinstance(value, str) else None
    origin = typing.get_origin(option)
    if option is type(None):
        return (value is None or (text is not None and text.lower() in ("null", "none", "~"))), None
    if origin is Literal:
        choices = typing.get_args(option)
        if value is False and "no" in choices:  # YAML 1.1 reads a bare `no` as false
            return True, "no"
        return (text in choices, text) if text is not None else (False, None)
    if option is bool:
        if isinstance(value, bool):
            return True, value
        return (text.lower() in _TRUE | _FALSE, text.lower() in _TRUE) if text is not None else (False, None)
    if option is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return True, value
        return (bool(_INT.fullmatch(text)), int(text) if _INT.fullmatch(text) else None) if text else (False, None)
    if option is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return True, float(value)
        try:
            return (text is not None, float(text)) if text else (False, None)
        except ValueError:
            return False, None
    if option is str:
        return (text is not None, value)
    if origin is tuple:  # a,b or YAML's flow style [a, b] (quotes allowed)
        if text is not None:
            text = text[1:-1] if text.startswith("[") and text.endswith("]") else text
            items = [v for v in (part.strip().strip("'\"") for part in text.split(",")) if v]
        else:
            items = value
        ok = isinstance(items, list | tuple) and all(isinstance(v, str) for v in items)
        return ok, tuple(items) if ok else None
    if origin is dict:
        import yaml  # here, not at the top: the torch-free ONNX install has no PyYAML

        parsed = yaml.safe_load(value) if text is not None else value
        return isinstance(parsed, dict), parsed
    raise TypeError(f"no reader for {option}")


def _describe(tp: Any) -> str:
    options = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    names = []
    for option in options:
        if option is type(None):
            names.append("null")
        elif typing.get_origin(option) is Literal:
            names.append("one of " + ", ".join(typing.get_args(option)))
        elif typing.get_origin(option) is tuple:
            names.append("a list of names")
        elif typing.get_origin(option) is dict:
            names.append("a mapping")
        else:
            names.append({bool: "true/false", int: "an integer", float: "a number", str: "text"}[option])
    return " or ".join(names)


# ----- building, merging, writing -----
def section_from_dict(cls: type, values: dict, where: str) -> Any:
    """One section from a mapping; unknown keys are refused with the list of known ones."""
    if not isinstance(values, dict):
        raise SamspError(f"setting {where}: expected a mapping of settings, got {values!r}")
    known = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in known:
            raise SamspError(f"unknown setting {f'{where}.{key}'!r}; known: {', '.join(known)}")
    return cls(**values)


def config_from_dict(values: dict) -> TrainConfig:
    """A TrainConfig from nested mappings (missing keys take their defaults)."""
    if not isinstance(values, dict):
        raise SamspError("a config must be a mapping of sections (model, loss, data, optim, runtime)")
    for name in values:
        if name not in SECTIONS:
            raise SamspError(f"unknown setting {str(name)!r}; known sections: {', '.join(SECTIONS)}")
    base = to_dict(TrainConfig())
    sections = {}
    for name, cls in SECTIONS.items():
        given = values.get(name) or {}
        if not isinstance(given, dict):
            raise SamspError(f"setting {name}: expected a mapping of settings, got {given!r}")
        sections[name] = section_from_dict(cls, {**base[name], **given}, name)
    return TrainConfig(**sections)


def to_dict(config: TrainConfig) -> dict[str, dict[str, Any]]:
    """Nested plain mappings (tuples as lists), as written to config.yaml."""
    out = {}
    for name in SECTIONS:
        section = dataclasses.asdict(getattr(config, name))
        out[name] = {k: list(v) if isinstance(v, tuple) else v for k, v in section.items()}
    return out


def parse_override(text: str) -> tuple[str, str, str]:
    """'optim.lr=1e-4' -> ('optim', 'lr', '1e-4'); the value is parsed later by the field's type."""
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) != 2 or not all(parts):
        raise SamspError(f"override {text!r} must look like section.key=value (e.g. optim.lr=1e-4)")
    return parts[0], parts[1], raw


def apply_overrides(config: TrainConfig, overrides: list[str]) -> TrainConfig:
    """A new config with each `section.key=value` applied in order."""
    values = to_dict(config)
    for text in overrides:
        section, key, raw = parse_override(text)
        if section not in values:
            raise SamspError(f"unknown setting {f'{section}.{key}'!r}; known sections: {', '.join(SECTIONS)}")
        if key not in values[section]:
            raise SamspError(f"unknown setting {f'{section}.{key}'!r}; known: {', '.join(values[section])}")
        values[section][key] = raw
    return config_from_dict(values)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Defaults, then the YAML file at `path`, then each override."""
    import yaml

    values: dict = {}
    if path is not None:
        path = Path(path)
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            raise SamspError(f"{path}: cannot read config ({type(err).__name__}: {err})".splitlines()[0]) from err
        if not isinstance(values, dict):
            raise SamspError(f"{path}: a config must be a mapping of sections (model, loss, data, optim, runtime)")
    try:
        config = config_from_dict(values)
    except SamspError as err:
        raise SamspError(f"{path}: {err}" if path is not None else str(err)) from err
    return apply_overrides(config, overrides or [])


def dump_config(config: TrainConfig) -> str:
    """YAML text of a config, sections in order."""
    import yaml

    return yaml.safe_dump(to_dict(config), sort_keys=False)
