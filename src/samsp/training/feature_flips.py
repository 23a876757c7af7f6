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

from ..inference.predictor import flip_valid
from ..modeling.backbones import Layout, channels_first


def _mirror(x: torch.Tensor, valid_hw: torch.Tensor, horizontal: bool, vertical: bool) -> torch.Tensor:
    """`x` (..., H, W) mirrored inside its valid region, by `flip_valid` (as test-time flips mirror an image)."""
    out = x[None]
    for dim, on in ((-2, vertical), (-1, horizontal)):
        if on:
            out = flip_valid(out, valid_hw[None], dim)
    return out[0]


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
    grid = channels_first(features[None], layout)[0]
    stride = mask.shape[0] / grid.shape[-1]
    cells = torch.tensor([math.ceil(int(v) / stride) for v in valid_hw])
    flipped = _mirror(grid, cells, horizontal, vertical)
    if layout != "chw":
        flipped = flipped.permute(1, 2, 0)
    return flipped.reshape(features.shape).contiguous(), _mirror(mask, valid_hw, horizontal, vertical)


def draw(probability: float, seed: int) -> tuple[bool, bool]:
    """Whether to flip horizontally and vertically, each with `probability`, from a generator seeded by `seed`."""
    u = torch.rand(2, generator=torch.Generator().manual_seed(seed))
    return bool(u[0] < probability), bool(u[1] < probability)
