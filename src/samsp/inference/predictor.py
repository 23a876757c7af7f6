"""The one prompt-free prediction path: images (or prepared inputs) in, masks at original size out.

`SamSP.predict*`, evaluation, `samsp predict` and the export check all call `Predictor`, so precision, batching,
self-prompting iterations and test-time flips mean the same thing everywhere.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from ..config import Precision
from ..errors import SamspError
from ..modeling.sam_sp import Passes, SamSP
from .prediction import Prediction, as_rgb, make_prediction
from .preprocess import Frame, postprocess, preprocess

PRECISIONS: tuple[str, ...] = Precision.__args__
FLIP_DIMS: tuple[int, ...] = (-1, -2)  # test-time flips: left-right and up-down mirrors, beside the image itself


def inference_precision(device: torch.device, precision: str):
    """The autocast context for a precision name; fp32 runs as it is."""
    check_precision(precision)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def check_precision(precision: str) -> None:
    """SamspError unless `precision` is one of PRECISIONS."""
    if precision not in PRECISIONS:
        raise SamspError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


class Predictor:
    """Batched prompt-free prediction with a model and its options.

    `precision`: "fp32" (reproducible) or "bf16" (autocast; ~3x faster on a CPU with bf16 units, masks differ at a
    few boundary pixels). `iterations`: self-prompting passes after pass 0 (default: as trained). `flips`: also
    predict the horizontally and vertically flipped image and average the probabilities (test-time augmentation;
    each view prompts itself). `prefix_engine`: openvino computes the encoder's frozen prefix of each batch (each
    mirrored view too) in a compiled graph (`inference.prefix_graph`, compiled here, once per process), torch in
    the model itself.
    """

    def __init__(
        self,
        model: SamSP,
        precision: str = "fp32",
        batch_size: int = 4,
        iterations: int | None = None,
        flips: bool = False,
        prefix_engine: str = "torch",
    ):
        check_precision(precision)
        if batch_size < 1:
            raise SamspError(f"batch size must be >= 1, got {batch_size}")
        self.model, self.precision, self.batch_size = model, precision, batch_size
        self.iterations, self.flips = iterations, flips
        self.encode_prefix = None
        self.prefix_engine = "torch"  # what computes the frozen prefix: torch (in the model) unless compiled here
        if prefix_engine != "torch" and model.prefix_stages > 0:
            from .prefix_graph import graph_precision, prefix_encoder  # it imports the exporter, which imports us

            self.encode_prefix = prefix_encoder(model, prefix_engine, graph_precision(prefix_engine, precision))
            self.prefix_engine = prefix_engine

    @property
    def threshold(self) -> float:
        """A Prediction's mask is its probability above this (`model.threshold`)."""
        return self.model.config.threshold

    def predict(self, image: np.ndarray) -> Prediction:
        """Segment one HxWx3 uint8 RGB image (grayscale and RGBA are accepted)."""
        return self.predict_batch([image])[0]

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """Segment many images, `batch_size` at a time through the encoder (preprocessed one batch at a time)."""
        results: list[Prediction] = []
        for start in range(0, len(images), self.batch_size):
            prepared = [preprocess(as_rgb(im), self.model.backbone) for im in images[start : start + self.batch_size]]
            results += self.predict_inputs([x for x, _ in prepared], [f for _, f in prepared])
        return results

    @torch.no_grad()
    def predict_inputs(
        self,
        inputs: Sequence[torch.Tensor],
        frames: Sequence[Frame],
        features: Sequence[torch.Tensor] | None = None,
        start_stage: int = 0,
        boxes: torch.Tensor | None = None,
    ) -> Iterator[Prediction]:
        """Predictions for preprocessed inputs (3, S, S) and their frames, one batch at a time.

        `features` (with `start_stage`) replaces the inputs by cached outputs of the encoder's frozen prefix.
        `boxes` (N, 4, input frame) gives every image a fixed box and runs one boxed pass: the reference rows of
        a benchmark (whole-image or ground-truth box), never the prompt-free path.
        """
        if self.flips and (features is not None or boxes is not None):
            raise SamspError("test-time flips apply to prompt-free prediction from images only")
        device, was_training = self.model.device, self.model.training
        self.model.eval()
        try:
            yield from self._batches(inputs, frames, features, start_stage, boxes, device)
        finally:
            self.model.train(was_training)

    def _batches(self, inputs, frames, features, start_stage, boxes, device) -> Iterator[Prediction]:
        for start in range(0, len(frames), self.batch_size):
            stop = min(start + self.batch_size, len(frames))
            source = features if features is not None else inputs
            x = torch.stack(list(source[start:stop])).to(device, torch.float32)
            valid = torch.tensor([f.resized_hw for f in frames[start:stop]], device=device)
            fixed = None if boxes is None else boxes[start:stop].to(device)
            with inference_precision(device, self.precision):
                out = self.passes(x, valid, start_stage, fixed)
            for i, frame in enumerate(frames[start:stop]):
                yield to_prediction(out, i, frame, self.threshold)

    def passes(
        self, x: torch.Tensor, valid_hw: torch.Tensor, start_stage: int = 0, boxes: torch.Tensor | None = None
    ) -> Passes:
        """The model's passes for one batch, averaged over the flipped views when `flips` is on."""
        out = self._run(x, valid_hw, start_stage, boxes)
        if not self.flips:
            return out
        views = [out]
        for dim in FLIP_DIMS:
            flipped = self._run(flip_valid(x, valid_hw, dim), valid_hw, start_stage, None)
            flipped.logits = [flip_valid(lg, valid_hw, dim) for lg in flipped.logits]
            views.append(flipped)
        probs = [
            torch.stack([torch.sigmoid(v.logits[k].float()) for v in views]).mean(0) for k in range(len(out.logits))
        ]
        out.logits = [torch.logit(p, eps=1e-6) for p in probs]
        return out

    def _run(self, x: torch.Tensor, valid_hw: torch.Tensor, start_stage: int, boxes: torch.Tensor | None) -> Passes:
        if start_stage == 0 and self.encode_prefix is not None:  # images: the compiled graph takes the frozen prefix
            x, start_stage = self.encode_prefix(x).float(), self.model.prefix_stages
        embeddings, fused = self.model.embed(x, start_stage)
        if boxes is None:
            return self.model.decoder_passes(embeddings, valid_hw, self.iterations, fused)
        logits, scores = self.model.decode(embeddings, boxes[:, None, :], fused)
        fallback = torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)
        return Passes(logits=[logits], boxes=[boxes.float()], scores=scores, fallback=fallback)


def flip_valid(x: torch.Tensor, valid_hw: torch.Tensor, dim: int) -> torch.Tensor:
    """Flip each image's unpadded region along `dim` (-1: left-right, -2: up-down); padding stays where it is."""
    out = x.clone()
    for i, (h, w) in enumerate(valid_hw.tolist()):
        out[i, ..., :h, :w] = x[i, ..., :h, :w].flip(dim)
    return out


def to_prediction(out: Passes, i: int, frame: Frame, threshold: float) -> Prediction:
    """Image `i` of a batch's passes, cropped and resized back to its original size."""
    probs = [torch.sigmoid(postprocess(logits[i], frame)).cpu().numpy() for logits in out.logits]
    box = out.boxes[-1][i].cpu().numpy() if out.boxes and not bool(out.fallback[i]) else None
    return make_prediction(probs, box, frame, float(out.scores[i]), bool(out.fallback[i]), threshold)
