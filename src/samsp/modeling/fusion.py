"""Early-feature fusion (HQ-SAM's idea): an early encoder stage's features, upsampled to the mask decoder's upscaled
mask features and added to them, so the masks can draw on detail the last stages smooth away.

HQ-SAM (Ke et al., 2023, "Segment Anything in High Quality") compresses an early ViT block's output with two
transposed convolutions and adds it, with the final embedding, to the decoder's mask features. Here the early
features alone are added, through the same kind of head, to the features every pass's mask is read from. The last
convolution starts at zero, so a model with fusion predicts exactly what the model without it does until it trains.
"""

from __future__ import annotations

import torch
from segment_anything.modeling.common import LayerNorm2d
from torch import nn


class EarlyFusion(nn.Module):
    """(B, C, h, w) early features → (B, out_channels, h x factor, w x factor), factor a power of 2 (>= 2)."""

    def __init__(self, in_channels: int, out_channels: int, factor: int, hidden: int = 64):
        super().__init__()
        if factor < 2 or factor & (factor - 1):
            raise ValueError(f"the fusion's upsampling factor must be a power of 2 >= 2, got {factor}")
        layers: list[nn.Module] = []
        channels = in_channels
        while factor > 2:
            layers += [nn.ConvTranspose2d(channels, hidden, 2, stride=2), LayerNorm2d(hidden), nn.GELU()]
            channels, factor = hidden, factor // 2
        last = nn.ConvTranspose2d(channels, out_channels, 2, stride=2)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.layers = nn.Sequential(*layers, last)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)
