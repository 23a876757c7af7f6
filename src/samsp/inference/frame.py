"""The input frame's geometry and pixel statistics, without torch: what both prediction engines agree on."""

from __future__ import annotations

from dataclasses import dataclass

# SAM's ImageNet pixel statistics, for the "imagenet" normalisation (0-255 scale)
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class Frame:
    """Where an image sits in the input frame: original size and resized (unpadded) size."""

    original_hw: tuple[int, int]
    resized_hw: tuple[int, int]


def resized_shape(h: int, w: int, size: int) -> tuple[int, int]:
    """SAM's ResizeLongestSide rule: the longest side becomes `size`, the other is rounded."""
    scale = size / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)
