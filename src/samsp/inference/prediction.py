"""What a prompt-free predictor takes and returns, without torch: both engines (PyTorch, ONNX Runtime) share it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..errors import SamspError
from .frame import Frame


@dataclass
class Prediction:
    """A prompt-free prediction for one image, at its original size."""

    mask: np.ndarray  # (H, W) bool, final pass
    probability: np.ndarray  # (H, W) float32, final pass
    pass_masks: list[np.ndarray] = field(repr=False)  # (H, W) bool for every pass, pass 0 first
    box: np.ndarray | None  # (4,) x0, y0, x1, y1 in original pixels: the prompt given to the final pass
    score: float  # the decoder's predicted IoU
    fallback: bool  # pass 0 found nothing, so no box was derived


class BatchPredictor(Protocol):
    """Anything that segments a list of images `batch_size` at a time (`Predictor`, `OnnxPredictor`)."""

    batch_size: int
    threshold: float  # a Prediction's mask is its probability above this

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[Prediction]: ...


def as_rgb(image: np.ndarray) -> np.ndarray:
    """An HxWx3 uint8 view of a grayscale, RGB or RGBA array; SamspError for anything else."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise SamspError(f"expected an HxWx3 RGB image, got an array of shape {image.shape}")
    if image.dtype != np.uint8:
        raise SamspError(f"expected a uint8 image, got {image.dtype} (read files with samsp.data.read_image)")
    return image[:, :, :3]


def make_prediction(
    probabilities: list[np.ndarray],
    box: np.ndarray | None,
    frame: Frame,
    score: float,
    fallback: bool,
    threshold: float,
) -> Prediction:
    """A Prediction from every pass's probabilities at original size and the final box in the input frame."""
    if box is not None:
        (h, w), (rh, rw) = frame.original_hw, frame.resized_hw
        box = np.asarray(box, dtype=np.float32) * np.array([w / rw, h / rh, w / rw, h / rh], dtype=np.float32)
    return Prediction(
        mask=probabilities[-1] > threshold,
        probability=probabilities[-1].astype(np.float32),
        pass_masks=[p > threshold for p in probabilities],
        box=box,
        score=float(score),
        fallback=bool(fallback),
    )
