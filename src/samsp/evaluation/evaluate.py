"""Evaluate a model on labelled pairs with no prompt (or, for reference rows, a given box), at original size."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

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
from ..memory import ensure_room
from ..modeling.prompts import boxes_from_masks, full_boxes
from ..modeling.sam_sp import SamSP
from ..progress import Progress
from .metrics import image_metrics
from .report import write_report

log = logging.getLogger("samsp")
T = TypeVar("T")

PROMPTS = ("none", "full_box", "gt_box")
PART_SIZE = 256  # images `evaluate` decodes, predicts and scores at a time: its memory does not grow with the set
SMALLER_SET = "score fewer images at once (`samsp evaluate --part-size N`, or evaluate(..., part_size=N))"


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
    size = backbone.img_size
    ensure_room(
        len(pairs) * 3 * size * size * 4,
        f"decoding {len(pairs)} images",
        f"3x{size}x{size} float32 inputs each",
        SMALLER_SET,
    )

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
    setting = engine
    engine, why = choose_prefix_engine(setting, model.device, "fp32", len(data.inputs))
    log.log(logging.INFO if setting == "auto" else logging.DEBUG, why)  # a setting was said by whoever set it
    encode = prefix_encoder(model, engine)
    out = []
    for start in Progress(range(0, len(data.inputs), batch_size), desc="encoding the frozen part", unit="batch"):
        x = torch.stack(data.inputs[start : start + batch_size]).to(model.device)
        out += list(encode(x).cpu())
        if start == 0:
            f, n = out[0], len(data.inputs)
            detail = f"{n} x {tuple(f.shape)} {str(f.dtype).removeprefix('torch.')}"
            ensure_room(
                n * f.numel() * f.element_size(), "keeping the frozen prefix of every image", detail, SMALLER_SET
            )
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
    prefix_engine: str = "auto",
) -> list[np.ndarray]:
    """Probability maps at original size. `prompt`: none (SAM-SP), full_box or gt_box (one boxed pass).

    Without `features`, an fp32 prediction encodes the frozen prefix by `prefix_engine` (auto: OpenVINO on a CPU
    when installed), as training does: the same maps, about twice as fast (`samsp evaluate` on 300 Kvasir-SEG images:
    4.7 minutes against 9.8). With no flips all images first (`prefix_features`); with flips each mirrored view in its
    batch.
    """
    if prompt not in PROMPTS:
        raise SamspError(f"prompt must be one of {PROMPTS}, got {prompt!r}")
    pixels = sum(g.size for g in data.gts)
    ensure_room(
        pixels * 4,
        f"predicting the probability maps of {len(data.gts)} images",
        f"{pixels} float32 pixels",
        SMALLER_SET,
    )
    engine = "torch"
    if features is None and start_stage == 0 and precision == "fp32" and model.prefix_stages > 0:
        if flips:  # the mirrored views are made from the images, so each batch's views go through the engine
            engine = predictor_prefix_engine(model, prefix_engine, precision, flips, len(data.inputs))
        else:
            features = prefix_features(model, data, batch_size, prefix_engine)
            start_stage = model.prefix_stages
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
    part_size: int = PART_SIZE,
    **predict_kwargs,
) -> dict:
    """Score `model` on labelled data with no prompt; write per_image.csv and summary.json into `out_dir`.

    `data` is a folder with images/ and masks/, a list of pairs (decoded, predicted and scored `part_size` images at
    a time, so any number fits in memory), or an `EvalSet` decoded once for several models (with `probs`: its
    probability maps, already predicted). `predict_kwargs` go to `predict_set` (prompt, batch_size, iterations,
    precision, flips). Returns the summary (mDice, mIoU, per-metric means, pooled Dice); raises SamspError naming
    the unusable files, before anything is written.
    """
    if not isinstance(data, EvalSet):
        pairs = find_pairs(data) if isinstance(data, str | Path) else list(data)
        if probs is None:
            return write_report(_scored_in_parts(model, pairs, part_size, predict_kwargs), out_dir, title)
        data = load_eval_set(pairs, model)
    probs = probs if probs is not None else predict_set(model, data, **predict_kwargs)
    return write_report(_scored(model, data, probs), out_dir, title)


def _scored(model: SamSP, data: EvalSet, probs: Sequence[np.ndarray]) -> list[dict]:
    """One metrics row per image, on the mask `samsp predict` writes (probability > the model's threshold)."""
    cut = model.config.threshold
    return [{"id": i, **image_metrics(p, g, cut)} for i, p, g in zip(data.ids, probs, data.gts, strict=True)]


def _scored_in_parts(model: SamSP, pairs: list[Pair], part_size: int, predict_kwargs: dict) -> list[dict]:
    """`part_size` pairs at a time: decoded, predicted, scored, let go; the prefix engine is chosen once for all."""
    parts = _decoded_in_parts(pairs, part_size, lambda part: load_eval_set(part, model))
    engine, precision = "auto", predict_kwargs.get("precision", "fp32")
    if precision == "fp32":  # the only precision `predict_set` runs a prefix engine in
        engine = predictor_prefix_engine(model, engine, precision, predict_kwargs.get("flips", False), len(pairs))
    rows: list[dict] = []
    for data in parts:
        rows += _scored(model, data, predict_set(model, data, prefix_engine=engine, **predict_kwargs))
    return rows


def _decoded_in_parts(pairs: Sequence[Pair], part_size: int, decode: Callable[[Sequence[Pair]], T]) -> Iterator[T]:
    """`decode` of each run of `part_size` pairs, in order, lazily. Checked at the call, before any part: the part
    size, and, for a set of several parts, every file (decoded whole, keeping nothing), so that bad files anywhere
    are one error before any work."""
    if isinstance(part_size, bool) or not isinstance(part_size, int) or part_size < 1:
        raise SamspError(f"the part size (images scored at a time) must be a whole number >= 1, got {part_size!r}")
    if len(pairs) > part_size:
        decode_all(pairs, lambda pair: read_pair(pair.image, pair.mask) and None)

    def each_part() -> Iterator[T]:
        for start in range(0, len(pairs), part_size):
            part = pairs[start : start + part_size]
            if len(pairs) > part_size:
                log.info("scoring images %d-%d of %d", start + 1, start + len(part), len(pairs))
            yield decode(part)

    return each_part()


def evaluate_predictor(
    predictor: BatchPredictor,
    pairs: Sequence[Pair],
    out_dir: str | Path,
    title: str = "samsp",
    part_size: int = PART_SIZE,
) -> dict:
    """Score any `BatchPredictor` (the ONNX Runtime and OpenVINO engines; `evaluate` is the faster path for a torch
    model) on labelled pairs at original size, `part_size` images decoded at a time, the overlap metrics on the masks
    it predicts (its `threshold`). Writes and returns what `evaluate` does; raises SamspError naming the unusable
    files."""
    rows = []
    size = predictor.batch_size
    parts = _decoded_in_parts(
        pairs, part_size, lambda part: (part, decode_all(part, lambda p: read_pair(p.image, p.mask)))
    )
    for part, loaded in parts:
        for start in Progress(range(0, len(part), size), desc="evaluating", unit="batch"):
            chunk = loaded[start : start + size]
            predictions = predictor.predict_batch([image for image, _ in chunk])
            for pair, prediction, (_, gt) in zip(part[start : start + size], predictions, chunk, strict=True):
                rows.append({"id": pair.id, **image_metrics(prediction.probability, gt, predictor.threshold)})
    return write_report(rows, out_dir, title)
