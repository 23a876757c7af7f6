"""preprocess.py's steps in numpy, for the ONNX Runtime engine: the same frame, without torch.

The resize reimplements torch's antialiased bilinear `interpolate` (the filter PIL also uses, but in float32 and
without PIL's rounding to uint8 between the horizontal and the vertical pass): on Kvasir-SEG images resized to
256 px, about 2 in a million values land on the other side of a .5 when rounded, against 1 in 10 for Pillow's
`resize`. The way back is torch's plain bilinear resize (align_corners=False), as separable weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .frame import PIXEL_MEAN, PIXEL_STD, Frame, resized_shape


def resize_weights(in_size: int, out_size: int, antialias: bool) -> np.ndarray:
    """(out_size, in_size) float32 weights of torch's bilinear resize along one axis (align_corners=False)."""
    scale = np.float32(in_size) / np.float32(out_size)
    if antialias:  # torch's _compute_indices_min_size_weights_aa: a triangle as wide as the scale when shrinking
        invscale = np.float32(1) / scale if scale >= 1 else np.float32(1)
        centers = scale * (np.arange(out_size, dtype=np.float32) + np.float32(0.5))
        taps = (np.arange(in_size, dtype=np.float32)[None, :] - centers[:, None] + np.float32(0.5)) * invscale
        weights = np.maximum(np.float32(0), np.float32(1) - np.abs(taps))
        return weights / weights.sum(axis=1, keepdims=True)
    # torch's upsample_bilinear2d: source coordinate (i + 0.5) * scale - 0.5 (one rounding, as the fused
    # multiply-add torch's CPU kernel compiles to: 1e-6 from it instead of 1e-4), clamped at 0, two neighbours
    source = np.maximum(np.float64(scale) * (np.arange(out_size) + 0.5) - 0.5, 0).astype(np.float32)
    lo = source.astype(np.int64)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = source - lo
    weights = np.zeros((out_size, in_size), np.float32)
    rows = np.arange(out_size)
    weights[rows, lo] += 1 - frac
    weights[rows, hi] += frac
    return weights


def resize(x: np.ndarray, hw: tuple[int, int], antialias: bool) -> np.ndarray:
    """(H, W, ...) float32 -> (h, w, ...): width first, then height, as torch does."""
    if x.shape[1] != hw[1]:
        x = np.tensordot(resize_weights(x.shape[1], hw[1], antialias), x, axes=([1], [1])).swapaxes(0, 1)
    if x.shape[0] != hw[0]:
        x = np.tensordot(resize_weights(x.shape[0], hw[0], antialias), x, axes=([1], [0]))
    return x


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """HxWx3 uint8 -> h'xw'x3 uint8 with the longest side = size (preprocess.resize_image without torch)."""
    rh, rw = resized_shape(*image.shape[:2], size)
    x = resize(image.astype(np.float32), (rh, rw), antialias=True)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def normalize_and_pad(
    resized: np.ndarray,
    size: int,
    normalization: str,
    mean: Sequence[float] = PIXEL_MEAN,
    std: Sequence[float] = PIXEL_STD,
) -> np.ndarray:
    """h'xw'x3 uint8 -> 3xSxS float32, normalised ("minmax", or "imagenet" by mean/std), zero-padded bottom/right."""
    x = resized.astype(np.float32).transpose(2, 0, 1)
    if normalization == "minmax":
        lo, hi = x.min(), x.max()
        x = (x - lo) / max(hi - lo, np.float32(1e-8))
    else:
        x = (x - np.float32(mean)[:, None, None]) / np.float32(std)[:, None, None]
    return np.pad(x, ((0, 0), (0, size - x.shape[1]), (0, size - x.shape[2])))


def preprocess(
    image: np.ndarray,
    size: int,
    normalization: str,
    mean: Sequence[float] = PIXEL_MEAN,
    std: Sequence[float] = PIXEL_STD,
) -> tuple[np.ndarray, Frame]:
    """One image (HxWx3 uint8 RGB) -> the model input (3xSxS float32) and its frame."""
    resized = resize_image(image, size)
    frame = Frame(original_hw=image.shape[:2], resized_hw=resized.shape[:2])
    return normalize_and_pad(resized, size, normalization, mean, std), frame


def postprocess(maps: np.ndarray, frame: Frame) -> np.ndarray:
    """Input-frame maps (..., S, S) -> (..., H, W) at the original size: crop the padding, resize back."""
    h, w = frame.resized_hw
    x = np.moveaxis(maps[..., :h, :w], (-2, -1), (0, 1))
    return np.moveaxis(resize(x.astype(np.float32), frame.original_hw, antialias=False), (0, 1), (-2, -1))
