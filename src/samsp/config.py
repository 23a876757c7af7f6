"""Training configuration: defaults, a YAML file, and `--set section.key=value` overrides, merged in that order.

Values left as "auto" are chosen for the hardware found (see `train.resolve_auto`); the resolved config is
written into the run folder so a run can be repeated or resumed exactly.
"""

from __future__ import annotations

import copy
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from .errors import SamspError
from .losses import LossConfig
from .model import ModelConfig


def _defaults(cls: type) -> dict[str, Any]:
    return {f.name: list(f.default) if isinstance(f.default, tuple) else f.default for f in fields(cls)}


_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")

DEFAULTS: dict[str, Any] = {
    "model": {**_defaults(ModelConfig), "adapt_stages": "auto"},
    "loss": _defaults(LossConfig),
    "data": {
        "path": None,  # folder with images/ and masks/, or a named dataset (kvasir-seg, isic2018)
        "images_dir": "images",
        "masks_dir": "masks",
        "mask_suffix": "",
        "mask_ext": None,
        "on_unpaired": "error",  # or "skip": leave unpaired images out with a warning
        "csv": None,  # CSV of image,mask paths instead of folders
        "train_ids": None,  # id-list files; without them a seeded random split is made
        "val_ids": None,
        "val_fraction": 0.1,
        "limit": None,  # train on a seeded sample of this many training pairs
        "augment": True,  # or a dict of probabilities: hflip, vflip, rotate90, affine, color
        "cache_views": 1,  # augmented views per image kept when the frozen encoder prefix is cached
    },
    "optim": {
        "epochs": "auto",  # GPU: 30; CPU: as many as fit in time_budget_min
        "time_budget_min": "auto",  # CPU: 30
        "batch_size": 4,
        "lr": 3e-4,
        "weight_decay": 0.01,
        "warmup": 0.05,  # fraction of all steps with a linear warm-up
        "schedule": "cosine",  # or "constant"
        "grad_clip": 1.0,
    },
    "runtime": {
        "seed": 0,
        "device": "auto",  # cpu, cuda, ... (accelerate handles multi-GPU under `accelerate launch`/torchrun)
        "mixed_precision": "auto",  # no, bf16, fp16; auto = bf16 on a GPU that has it, else no
        "cache": "auto",  # cache the frozen encoder prefix; auto = whenever there is a frozen prefix
        "cache_dtype": "float32",
        "threads": 4,  # image-decoding threads
        "workers": "auto",  # data-loader workers for on-the-fly augmentation; auto = 0 on the CPU, 8 on a GPU
    },
}


def merge(base: dict, update: dict, where: str = "") -> dict:
    """Recursive merge that refuses unknown keys, so a typo in a config is an error, not a silent default."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if key not in out:
            raise SamspError(f"unknown setting '{where}{key}'; known: {', '.join(out)}")
        if isinstance(out[key], dict) and not (where == "data." and key == "augment"):
            if not isinstance(value, dict):
                raise SamspError(f"setting {where}{key} must be a mapping")
            out[key] = merge(out[key], value, f"{where}{key}.")
        else:
            out[key] = _number(value) if where != "data." else value
    return out


def _number(value: Any) -> Any:
    """YAML 1.1 reads `1e-4` as a string; a setting that looks like a number is one."""
    if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        return float(value)
    return value


def parse_override(text: str) -> dict:
    """'optim.lr=1e-4' -> {'optim': {'lr': 0.0001}} (values parsed as YAML)."""
    if "=" not in text:
        raise SamspError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw)
    out: dict = {}
    node = out
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> dict:
    """Defaults, then the YAML file, then each override."""
    config = copy.deepcopy(DEFAULTS)
    if path is not None:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise SamspError(f"{path}: cannot read config ({err})") from err
        if not isinstance(data, dict):
            raise SamspError(f"{path}: a config must be a mapping of sections")
        config = merge(config, data)
    for text in overrides or []:
        config = merge(config, parse_override(text))
    return config


def dump_config(config: dict) -> str:
    return yaml.safe_dump(config, sort_keys=False)
