"""Between an image of any size and the model's square input frame, both ways.

Every backbone resizes the longest side to its input size, normalises as its checkpoint was trained, and pads
bottom/right. Masks follow the same geometry. `postprocess` inverts it exactly: a predicted map comes back at the
image's original height and width.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..modeling.backbones import Backbone
from .frame import PIXEL_MEAN, PIXEL_STD, Frame, resized_shape

_MEAN = torch.tensor(PIXEL_MEAN).view(3, 1, 1)
_STD = torch.tensor(PIXEL_STD).view(3, 1, 1)


def resize_image(image: np.ndarray, size: int) -> torch.Tensor:
    """HxWx3 uint8 -> 3xh'xw' uint8 tensor with the longest side = size (antialiased, like cv2's INTER_AREA)."""
    h, w = image.shape[:2]
    rh, rw = resized_shape(h, w, size)
    x = torch.from_numpy(np.require(image, requirements=["C", "W"])).permute(2, 0, 1)[None].float()
    if (rh, rw) != (h, w):
        x = F.interpolate(x, size=(rh, rw), mode="bilinear", antialias=True, align_corners=False)
    return x[0].round_().clamp_(0, 255).to(torch.uint8)


def mask_fraction(mask: np.ndarray, size: int) -> torch.Tensor:
    """HxW bool -> h'xw' float at the image's resized shape: the area-weighted fraction of mask in each pixel."""
    h, w = mask.shape
    rh, rw = resized_shape(h, w, size)
    x = torch.from_numpy(np.require(mask, requirements=["C", "W"])).float()[None, None]
    if (rh, rw) != (h, w):
        x = F.interpolate(x, size=(rh, rw), mode="bilinear", antialias=True, align_corners=False)
    return x[0, 0]


def resize_mask(mask: np.ndarray, size: int) -> torch.Tensor:
    """HxW bool -> h'xw' bool at the image's resized shape (area-weighted, then > 0.5)."""
    return mask_fraction(mask, size) > 0.5


def normalize_and_pad(resized: torch.Tensor, backbone: Backbone) -> torch.Tensor:
    """3xh'xw' uint8 -> 3xSxS float, normalised as the backbone's checkpoint expects, zero-padded."""
    x = resized.float()
    if backbone.normalization == "minmax":
        lo, hi = x.min(), x.max()
        x = (x - lo) / torch.clamp(hi - lo, min=1e-8)
    else:
        x = (x - _MEAN) / _STD
    size = backbone.img_size
    return F.pad(x, (0, size - x.shape[2], 0, size - x.shape[1]))


def pad_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    """h'xw' mask -> SxS float, zero-padded bottom/right like the image."""
    return F.pad(mask.float(), (0, size - mask.shape[1], 0, size - mask.shape[0]))


def mask_in_frame(mask: np.ndarray, size: int) -> torch.Tensor:
    """HxW bool mask -> SxS bool in the input frame (resized like its image, zero-padded)."""
    return pad_mask(resize_mask(mask, size), size) > 0.5


def preprocess(image: np.ndarray, backbone: Backbone) -> tuple[torch.Tensor, Frame]:
    """One image (HxWx3 uint8 RGB) -> the model input (3xSxS float) and its frame."""
    resized = resize_image(image, backbone.img_size)
    frame = Frame(original_hw=image.shape[:2], resized_hw=tuple(resized.shape[1:]))
    return normalize_and_pad(resized, backbone), frame


def postprocess(logits: torch.Tensor, frame: Frame) -> torch.Tensor:
    """Input-frame logits (SxS) -> logits at the original image size: crop the padding, resize back."""
    h, w = frame.resized_hw
    x = logits[..., :h, :w].float()
    while x.dim() < 4:
        x = x[None]
    x = F.interpolate(x, size=frame.original_hw, mode="bilinear", align_corners=False)
    return x[0, 0]
