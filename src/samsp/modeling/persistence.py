"""Saving, loading and sharing: `save_pretrained` / `from_pretrained` for the network, and `push_to_hub`.

A model folder holds `samsp.json` (the ModelConfig and provenance), `weights.safetensors` (only the trained
tensors: LoRA, prompt encoder, mask decoder, the base weights coming from the backbone's checkpoint; or, for an
export, every weight) and `README.md`, its model card. Weights are only ever read from safetensors. A model can
also be named by a Hugging Face Hub repository id ("user/name"), fetched into the Hub cache.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .. import __version__
from ..config import ModelConfig
from ..errors import SamspError
from ..files import atomic_path, write_text_atomic
from . import hub
from .backbones import key_problems
from .card import CARD_NAME, card_markdown, read_card

CONFIG_NAME = "samsp.json"
WEIGHTS_NAME = "weights.safetensors"


class PretrainedMixin:
    """`save_pretrained` / `from_pretrained` for a network built from a `ModelConfig` (as in smp's mixin)."""

    config: ModelConfig

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors that training changes (what a checkpoint holds)."""
        return {n: p.detach().cpu().contiguous() for n, p in self.named_parameters() if p.requires_grad}

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """Every weight, in segment_anything's Sam layout (image_encoder.*, prompt_encoder.*, mask_decoder.*; with
        model.box_decoder also box_decoder.*, a second mask decoder; with model.fusion_stage also early_fusion.*)."""
        if self.config.strategy == "lora":
            raise SamspError("merge the LoRA weights first (SamSP.merged()) to get a plain SAM state dict")
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}

    def save_pretrained(self, directory: str | Path, full: bool = False, extra: dict | None = None) -> Path:
        """Write samsp.json, weights.safetensors (only what was trained, or with `full` every weight) and README.md.

        `extra` adds provenance to samsp.json (epoch, val_dice, and `data`: what it was trained on), which the
        model card shows.
        """
        directory = Path(directory)
        state = self.full_state_dict() if full else self.trainable_state_dict()
        with atomic_path(directory / WEIGHTS_NAME) as tmp:
            save_file(state, str(tmp))
        meta = {"samsp_version": __version__, "format": "full" if full else "trainable", "model": asdict(self.config)}
        meta.update(extra or {})
        write_text_atomic(directory / CONFIG_NAME, json.dumps(meta, indent=2))
        write_text_atomic(directory / CARD_NAME, card_markdown(read_card(directory, meta)))
        return directory

    @classmethod
    def from_pretrained(cls, path: str | Path, checkpoint: str | Path | None = None, map_location: str = "cpu") -> Any:
        """Load a saved model: a run folder (its final model, last/), a checkpoint folder, an export, or a Hugging
        Face Hub repository id ("user/name", fetched into the Hub cache; offline, a cached copy is used).

        `checkpoint` replaces the base SAM weights' path recorded at training time. Raises SamspError naming the
        file when the folder, its config or its weights cannot be used.
        """
        directory = resolve_model_dir(Path(path))
        meta = read_model_meta(directory)
        fields = dict(meta["model"])
        if checkpoint is not None:
            fields["checkpoint"] = str(checkpoint)
        try:
            config = ModelConfig(**fields)
        except (TypeError, SamspError) as err:
            raise SamspError(f"{directory / CONFIG_NAME}: unusable model settings ({err})") from err
        full = meta.get("format") == "full"
        model = cls(config, pretrained=not full)
        state = _read_weights(directory / WEIGHTS_NAME, map_location)
        expected = model.state_dict() if full else model.trainable_state_dict()
        if not full:  # a model saved when more parts trained (the IoU head, before it was frozen) still loads
            everything = model.state_dict()
            expected |= {k: everything[k] for k in state if k in everything and k not in expected}
        problems = key_problems(expected, state)
        if problems:
            raise SamspError(
                f"{directory / WEIGHTS_NAME}: does not fit a {config.backbone} model built from "
                f"{directory / CONFIG_NAME} ({problems})"
            )
        model.load_state_dict(state, strict=full)
        return model.eval()


def update_digest(digest: hashlib._Hash, named: Iterable[tuple[str, torch.Tensor]]) -> None:
    """Feed each tensor's name and bytes to `digest`, whatever its dtype or rank (BatchNorm's 0-d step counters,
    bfloat16 weights): what the feature store and the compiled prefix name their weights by."""
    for name, tensor in named:
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())


def read_model_meta(directory: Path) -> dict:
    """The parsed samsp.json of a model folder; SamspError naming the file if it is not one."""
    path = directory / CONFIG_NAME
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(meta.get("model"), dict):
            raise KeyError("model")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, AttributeError) as err:
        raise SamspError(f"{path}: not a samsp model config ({type(err).__name__}: {err})") from err
    return meta


def _read_weights(path: Path, map_location: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise SamspError(f"{path}: weights file missing (was the run finished or exported?)")
    try:
        return load_file(str(path), device=map_location)
    except Exception as err:  # safetensors raises its own error types for a corrupt file
        raise SamspError(f"{path}: cannot be read as safetensors ({err})") from err


def resolve_model_dir(path: Path) -> Path:
    """A run folder means its final model (last/, where the learning-rate schedule ends, as nnU-Net predicts with
    its final checkpoint; RUN/best names the best-validation one); a folder with samsp.json is used as it is; a Hub
    repository id that is not a local folder is fetched into the Hub cache."""
    repo_id = path.as_posix()
    if not path.exists() and hub.is_repo_id(repo_id):
        folder = hub.download_snapshot(repo_id, [CONFIG_NAME, WEIGHTS_NAME, CARD_NAME])
        if not (folder / CONFIG_NAME).is_file():
            raise SamspError(f"{repo_id}: the Hugging Face Hub repository has no {CONFIG_NAME}; not a samsp model")
        return folder
    if (path / CONFIG_NAME).is_file():
        return path
    for sub in ("last", "best"):
        if (path / sub / CONFIG_NAME).is_file():
            return path / sub
    if not path.exists():
        raise SamspError(f"{path}: model folder not found (give a run folder from `samsp train` or an export)")
    raise SamspError(f"{path}: no {CONFIG_NAME} here or in last/ or best/ (give a run or export folder)")


def push_to_hub(path: str | Path, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Upload a model (run, checkpoint or export folder) to the Hub repository `repo_id`; return its URL.

    The model card README.md is written again first, so the repository's page says how to load it by its id.
    """
    if not hub.is_repo_id(repo_id):
        raise SamspError(f"{repo_id!r} is not a Hugging Face Hub repository id (expected user/name)")
    directory = resolve_model_dir(Path(path))
    meta = read_model_meta(directory)
    _read_weights(directory / WEIGHTS_NAME, "cpu")  # refuse to publish a missing or corrupt weights file
    card = read_card(directory, meta, name=repo_id.split("/")[1])
    write_text_atomic(directory / CARD_NAME, card_markdown(card, reference=repo_id))
    return hub.upload_folder(directory, repo_id, [CONFIG_NAME, WEIGHTS_NAME, CARD_NAME], private, token)
