"""Deployment export: LoRA merged into the encoder, written as a full model that loads without peft."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..modeling.card import provenance
from ..modeling.persistence import read_model_meta, resolve_model_dir
from ..modeling.sam_sp import SamSP
from .prediction import BatchPredictor
from .predictor import Predictor


def prediction_check(reference: BatchPredictor, other: BatchPredictor, size: int, seed: int = 0) -> float:
    """Largest difference in final-pass probability between two predictors on a seeded random image."""
    image = np.random.default_rng(seed).integers(0, 256, size=(size, size * 3 // 4, 3), dtype=np.uint8)
    a = reference.predict_batch([image])[0].probability
    b = other.predict_batch([image])[0].probability
    return float(np.abs(a - b).max())


def export_model(model_dir: str | Path, out_dir: str | Path) -> tuple[Path, float]:
    """Write the merged model to `out_dir`; return it and the merge check's largest probability difference."""
    source = resolve_model_dir(Path(model_dir))
    model = SamSP.from_pretrained(source)
    merged = model.merged()
    diff = prediction_check(Predictor(model), Predictor(merged), model.backbone.img_size)
    extra = {
        "exported_from": str(source.resolve()),
        "trained_as": asdict(model.config),
        "merge_max_abs_prob_diff": diff,
        "torch": torch.__version__,
        **provenance(source, read_model_meta(source)),  # what it was trained on and its validation Dice
    }
    merged.save_pretrained(out_dir, full=True, extra=extra)
    return Path(out_dir), diff
