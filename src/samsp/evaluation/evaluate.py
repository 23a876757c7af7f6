"""Evaluate a model on labelled pairs with no prompt (or, for reference rows, a given box), at original size."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.io import read_pair
from ..data.pairs import Pair, find_pairs
from ..data.prepared import decode_all
from ..errors import SamspError
from ..inference.prediction import BatchPredictor
from ..inference.predictor import Predictor
from ..inference.prefix_graph import choose_prefix_engine, predictor_prefix_engine, prefix_encoder
from ..inference.preprocess import Frame, mask_in_frame, preprocess
from ..modeling.prompts import boxes_from_masks, full_boxes
from ..modeling.sam_sp import SamSP
from ..progress import Progress
from .metrics import image_metrics
from .report import write_report

log = logging.getLogger("samsp")

PROMPTS = ("none", "full_box", "gt_box")


@dataclass
class EvalSet:
    """Labelled images decoded once: model inputs, frames, and ground truth at the original size."""

    ids: list[str]
    images: list[Path]  # the image files
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
        small = mask_in_frame(gt, backbone.img_size)
        return x, frame, gt, small

    loaded = decode_all(pairs, load, threads)
    boxes, _ = boxes_from_masks(torch.stack([s for *_, s in loaded])) if loaded else (torch.zeros(0, 4), None)
    return EvalSet(
        ids=[p.id for p in pairs],
        images=[Path(p.image) for p in pairs],
        inputs=[x for x, *_ in loaded],
        frames=[f for _, f, *_ in loaded],
        gts=[g for _, _, g, _ in loaded],
        gt_boxes=boxes,
    )


@torch.no_grad()
def prefix_features(model: SamSP, data: EvalSet, batch_size: int = 4, engine: str = "auto") -> list[torch.Tensor]:
    """The frozen encoder prefix for every image, so several models sharing it are evaluated at the cost of one.
    `engine`: torch, openvino, or auto (`choose_prefix_engine`: OpenVINO on a CPU when installed)."""
    engine, why = choose_prefix_engine(engine, model.device, "fp32", len(data.inputs))
    log.info(why)
    encode = prefix_encoder(model, engine)
    out = []
    for start in Progress(range(0, len(data.inputs), batch_size), desc="encoding the frozen part", unit="batch"):
        x = torch.stack(data.inputs[start : start + batch_size]).to(model.device)
        out += list(encode(x).cpu())
    return out


def predict_set(
    model: SamSP,
    data: EvalSet,
    prompt: str = "none",
    features: list[torch.Tensor] | None = None,
    start_stage: int = 0,
    batch_size: int = 4,
    iterations: int | None = None,
    precision: str = "fp32",
    flips: bool = False,
) -> list[np.ndarray]:
    """Probability maps at original size. `prompt`: none (SAM-SP), full_box or gt_box (one boxed pass).

    Without `features`, an fp32 prediction encodes the frozen prefix by OpenVINO on a CPU when installed, as
    training does: the same maps, about twice as fast (`samsp evaluate` on 300 Kvasir-SEG images: 4.7 minutes against
    9.8). With no flips all images first (`prefix_features`); with flips each mirrored view in its batch.
    """
    if prompt not in PROMPTS:
        raise SamspError(f"prompt must be one of {PROMPTS}, got {prompt!r}")
    engine = "torch"
    if features is None and start_stage == 0 and precision == "fp32" and model.prefix_stages > 0:
        if flips:  # the mirrored views are made from the images, so each batch's views go through the engine
            engine = predictor_prefix_engine(model, "auto", precision, flips, len(data.inputs))
        else:
            features, start_stage = prefix_features(model, data, batch_size), model.prefix_stages
    boxes = None
    if prompt != "none":
        valid = torch.tensor([f.resized_hw for f in data.frames]).reshape(-1, 2)
        boxes = full_boxes(valid) if prompt == "full_box" else data.gt_boxes
    predictor = Predictor(model, precision, batch_size, iterations, flips, prefix_engine=engine)
    predictions = predictor.predict_inputs(data.inputs, data.frames, features, start_stage, boxes)
    return [p.probability for p in Progress(predictions, len(data.ids), f"predicting ({prompt})", unit="img")]


def evaluate(
    model: SamSP,
    data: EvalSet | Sequence[Pair] | str | Path,
    out_dir: str | Path,
    title: str = "samsp",
    probs: list[np.ndarray] | None = None,
    **predict_kwargs,
) -> dict:
    """Score `model` on labelled data with no prompt; write per_image.csv and summary.json into `out_dir`.

    `data` is a folder with images/ and masks/, a list of pairs, or an `EvalSet` decoded once for several models.
    `predict_kwargs` go to `predict_set` (prompt, batch_size, iterations, precision, flips). Returns the summary
    (mDice, mIoU, per-metric means, pooled Dice); raises SamspError listing every unusable file.
    """
    if not isinstance(data, EvalSet):
        data = load_eval_set(find_pairs(data) if isinstance(data, str | Path) else list(data), model)
    probs = probs if probs is not None else predict_set(model, data, **predict_kwargs)
    cut = model.config.threshold  # the mask `samsp predict` writes
    rows = [{"id": i, **image_metrics(p, g, cut)} for i, p, g in zip(data.ids, probs, data.gts, strict=True)]
    return write_report(rows, out_dir, title)


def evaluate_predictor(
    predictor: BatchPredictor, pairs: Sequence[Pair], out_dir: str | Path, title: str = "samsp"
) -> dict:
    """Score any `BatchPredictor` (the ONNX Runtime and OpenVINO engines; `evaluate` is the faster path for a torch
    model) on labelled pairs at original size, the overlap metrics on the masks it predicts (its `threshold`).
    Writes and returns what `evaluate` does; raises SamspError listing every unusable file."""
    loaded = decode_all(pairs, lambda pair: read_pair(pair.image, pair.mask))
    rows = []
    size = predictor.batch_size
    for start in Progress(range(0, len(pairs), size), desc="evaluating", unit="batch"):
        chunk = loaded[start : start + size]
        predictions = predictor.predict_batch([image for image, _ in chunk])
        for pair, prediction, (_, gt) in zip(pairs[start : start + size], predictions, chunk, strict=True):
            rows.append({"id": pair.id, **image_metrics(prediction.probability, gt, predictor.threshold)})
    return write_report(rows, out_dir, title)
