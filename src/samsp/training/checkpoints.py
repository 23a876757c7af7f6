"""What `--resume` needs beyond the model folders: optimiser, scheduler, RNG and history, in one atomic file."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

from ..config import ModelConfig
from ..errors import SamspError
from ..files import atomic_path
from ..modeling.sam_sp import SamSP
from .averaging import WeightAverage

STATE_NAME = "training_state.pt"


def state_path(run_dir: Path) -> Path:
    """Where a run keeps its resumable training state."""
    return run_dir / "last" / STATE_NAME


def save_state(
    run_dir: Path, model: SamSP, optimizer, scheduler, progress: dict, average: WeightAverage | None = None
) -> None:
    """Write last/training_state.pt (plain tensors and strings, so it loads with weights_only=True); with
    `average`, its averaged weights too."""
    payload = {
        "model": model.trainable_state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": torch.get_rng_state(),
        "epoch": progress["epoch"],
        "step": progress["step"],
        "sums": json.dumps(progress["sums"]),
        "best": progress["best"],
        "history": json.dumps(progress["history"]),
        "model_config": json.dumps(asdict(model.config)),
    }
    if average is not None:
        payload["average"] = average.state_dict()
    with atomic_path(state_path(run_dir)) as tmp:
        torch.save(payload, tmp)


def load_state(run_dir: Path, model: SamSP, optimizer, scheduler, average: WeightAverage | None = None) -> dict:
    """Restore model, optimiser, scheduler, RNG (and `average`'s weights) from a run; return its progress (epoch,
    step, sums, best, history). A corrupt or truncated file is one SamspError naming it."""
    path = state_path(run_dir)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        saved_config = payload["model_config"]
        progress = {
            "epoch": int(payload["epoch"]),
            "step": int(payload.get("step", 0)),
            "sums": json.loads(payload.get("sums", "{}")),
            "best": float(payload["best"]),
            "history": json.loads(payload["history"]),
        }
    except Exception as err:  # torch raises several types for a corrupt or truncated file
        raise SamspError(f"{path}: cannot be read ({type(err).__name__}: {err})".splitlines()[0]) from err
    if not _same_model(saved_config, model.config):
        raise SamspError(f"{path}: saved for another model configuration than {run_dir / 'config.yaml'}")
    model.load_state_dict(payload["model"], strict=False)
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    torch.set_rng_state(payload["rng"])
    if average is not None:
        average.load_state_dict(payload["average"])
    return progress


def _same_model(saved: str, config: ModelConfig) -> bool:
    """Whether a saved model config is `config`; settings added to samsp since it was saved take their defaults."""
    try:
        return ModelConfig(**json.loads(saved)) == config
    except (TypeError, ValueError, SamspError):
        return False
