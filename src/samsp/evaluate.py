"""Evaluate a model on labelled pairs with no prompt (or, for reference rows, a given box), at original size."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .data.io import read_pair
from .data.pairs import Pair
from .data.prepared import decode_all
from .errors import SamspError
from .metrics import image_metrics
from .model import SamSP, inference_precision
from .preprocess import Frame, pad_mask, postprocess, preprocess, resize_mask
from .prompts import boxes_from_masks, full_boxes
from .report import write_report

PROMPTS = ("none", "full_box", "gt_box")


@dataclass
class EvalSet:
    """Labelled images decoded once: model inputs, frames, and ground truth at the original size."""

    ids: list[str]
    inputs: list[torch.Tensor]  # (3, S, S) normalised, padded
    frames: list[Frame]
    gts: list[np.ndarray]  # (H, W) bool at the original size
    gt_boxes: torch.Tensor  # (N, 4) ground-truth boxes in the input frame, for the oracle reference row


def load_eval_set(pairs: Sequence[Pair], model: SamSP, threads: int = 4) -> EvalSet:
    """Decode every pair (listing every bad file at once) and preprocess it for `model`'s backbone."""
    backbone = model.backbone

    def load(pair: Pair):
        image, gt = read_pair(pair.image, pair.mask)
        x, frame = preprocess(image, backbone)
        small = pad_mask(resize_mask(gt, backbone.img_size), backbone.img_size) > 0.5
        return x, frame, gt, small

    loaded = decode_all(pairs, load, threads)
    boxes, _ = boxes_from_masks(torch.stack([s for *_, s in loaded])) if loaded else (torch.zeros(0, 4), None)
    return EvalSet(
        ids=[p.id for p in pairs],
        inputs=[x for x, *_ in loaded],
        frames=[f for _, f, *_ in loaded],
        gts=[g for _, _, g, _ in loaded],
        gt_boxes=boxes,
    )


@torch.no_grad()
def prefix_features(model: SamSP, data: EvalSet, batch_size: int = 4) -> list[torch.Tensor]:
    """The frozen encoder prefix for every image, so several models sharing it are evaluated at the cost of one."""
    out = []
    for start in tqdm(range(0, len(data.inputs), batch_size), desc="encoding (frozen part)", leave=False):
        x = torch.stack(data.inputs[start : start + batch_size]).to(model.device)
        out += list(model.encode_prefix(x).cpu())
    return out


@torch.no_grad()
def predict_set(
    model: SamSP,
    data: EvalSet,
    prompt: str = "none",
    features: list[torch.Tensor] | None = None,
    start_stage: int = 0,
    batch_size: int = 4,
    iterations: int | None = None,
    precision: str = "fp32",
) -> list[np.ndarray]:
    """Probability maps at original size. `prompt`: none (SAM-SP), full_box or gt_box (one boxed pass)."""
    if prompt not in PROMPTS:
        raise SamspError(f"prompt must be one of {PROMPTS}, got {prompt!r}")
    model.eval()
    device = model.device
    autocast = inference_precision(device, precision)
    probs: list[np.ndarray] = []
    for start in tqdm(range(0, len(data.ids), batch_size), desc=f"predicting ({prompt})", leave=False):
        stop = min(start + batch_size, len(data.ids))
        with autocast:
            if features is not None:
                emb = model.run_encoder(torch.stack(features[start:stop]).to(device, torch.float32), start_stage)
            else:
                emb = model.run_encoder(torch.stack(data.inputs[start:stop]).to(device))
            valid = torch.tensor([f.resized_hw for f in data.frames[start:stop]], device=device)
            if prompt == "none":
                logits = model.self_prompt(emb, valid, iterations).logits[-1]
            else:
                boxes = full_boxes(valid) if prompt == "full_box" else data.gt_boxes[start:stop].to(device)
                logits, _ = model.decode(emb, boxes[:, None, :])
        for i, frame in enumerate(data.frames[start:stop]):
            probs.append(torch.sigmoid(postprocess(logits[i], frame)).cpu().numpy())
    return probs


def evaluate(
    model: SamSP,
    data: EvalSet,
    out_dir: str | Path,
    title: str = "samsp",
    probs: list[np.ndarray] | None = None,
    **predict_kwargs,
) -> dict:
    """Per-image metrics, per_image.csv and summary.json in `out_dir`; returns the summary."""
    probs = probs if probs is not None else predict_set(model, data, **predict_kwargs)
    rows = [{"id": i, **image_metrics(p, g)} for i, p, g in zip(data.ids, probs, data.gts, strict=True)]
    return write_report(rows, out_dir, title)
