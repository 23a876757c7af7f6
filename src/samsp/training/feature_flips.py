"""Mirror flips of cached prefix features: augmentation for a training run that caches the frozen encoder prefix.

A cached run feeds every epoch the same features, so it trains with no augmentation at all. Flipping one sample's
feature grid inside its valid (unpadded) region, together with its mask, stands in for encoding the flipped image.
The stand-in is approximate, since the prefix's convolutions are not mirror-symmetric: LiteMedSAM's pretrained
decoder given the label's box segments the stand-in a few points worse than the features of the flipped image
(`benchmarks/feature_flips.py`, BENCHMARKS.md). `data.cached_flips` sets it; off by default.
"""

from __future__ import annotations

import math

import torch

from ..modeling.backbones import Layout


def _grid(features: torch.Tensor, layout: Layout) -> torch.Tensor:
    """A (H, W, C) view of one image's features."""
    if layout == "tokens":
        side = math.isqrt(features.shape[0])
        return features.view(side, side, features.shape[1])
    return features.permute(1, 2, 0) if layout == "chw" else features


def _flip_inside(x: torch.Tensor, rows: int, cols: int, horizontal: bool, vertical: bool) -> torch.Tensor:
    """`x` (H, W, ...) with its top-left rows x cols region mirrored; the rest (padding) left in place."""
    out = x.clone()
    if vertical:
        out[:rows, :cols] = out[:rows, :cols].flip(0)
    if horizontal:
        out[:rows, :cols] = out[:rows, :cols].flip(1)
    return out


def flip_sample(
    features: torch.Tensor,
    mask: torch.Tensor,
    valid_hw: torch.Tensor,
    layout: Layout,
    horizontal: bool,
    vertical: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One cached sample mirrored: its features (in `layout`) and its mask (S, S), inside the valid region.

    The features' grid is coarser than the mask (LiteMedSAM: 64 cells for 256 px), so their valid region is rounded
    up to whole cells; the two mirror images then differ by under one cell.
    """
    if not (horizontal or vertical):
        return features, mask
    height, width = (int(v) for v in valid_hw)
    grid = _grid(features, layout)
    stride = mask.shape[0] / grid.shape[0]
    flipped = _flip_inside(grid, math.ceil(height / stride), math.ceil(width / stride), horizontal, vertical)
    if layout == "chw":
        flipped = flipped.permute(2, 0, 1)
    return flipped.reshape(features.shape).contiguous(), _flip_inside(mask, height, width, horizontal, vertical)


def draw(probability: float, seed: int) -> tuple[bool, bool]:
    """Whether to flip horizontally and vertically, each with `probability`, from a generator seeded by `seed`."""
    u = torch.rand(2, generator=torch.Generator().manual_seed(seed))
    return bool(u[0] < probability), bool(u[1] < probability)
