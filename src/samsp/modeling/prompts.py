"""Self-prompts: the box a predicted mask gives to the next decoder pass.

Everything here is tensor arithmetic with no data-dependent Python branch, so it traces into the ONNX graph.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def boxes_from_masks(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes (x0, y0, x1, y1) around all foreground pixels of each mask, in the mask's pixel frame.

    `masks` is (B, H, W) bool. Several blobs share one box around all of them. Returns the boxes (B, 4) float
    and a (B,) bool flag for empty masks, whose box rows are zeros and must be replaced by the caller's fallback.
    """
    if masks.dim() != 3:
        raise ValueError(f"masks must be (B, H, W), got {tuple(masks.shape)}")
    rows = masks.any(dim=2)  # (B, H): which rows hold foreground
    cols = masks.any(dim=1)  # (B, W)
    empty = ~rows.any(dim=1)
    h, w = masks.shape[1:]
    y0 = rows.float().argmax(dim=1)
    y1 = h - 1 - rows.flip(1).float().argmax(dim=1)
    x0 = cols.float().argmax(dim=1)
    x1 = w - 1 - cols.flip(1).float().argmax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    return torch.where(empty[:, None], 0.0, boxes), empty


def full_boxes(valid_hw: torch.Tensor) -> torch.Tensor:
    """A box around each image's valid (unpadded) region; `valid_hw` is (B, 2) of heights and widths."""
    zeros = torch.zeros_like(valid_hw[:, 0])
    return torch.stack([zeros, zeros, valid_hw[:, 1] - 1, valid_hw[:, 0] - 1], dim=1).float()


def valid_region(valid_hw: torch.Tensor, size: int) -> torch.Tensor:
    """(B, size, size) bool: True inside each image's unpadded region of the input frame."""
    ar = torch.arange(size, device=valid_hw.device)
    inside_h = ar[None, :] < valid_hw[:, :1]
    inside_w = ar[None, :] < valid_hw[:, 1:]
    return inside_h[:, :, None] & inside_w[:, None, :]


def open_masks(masks: torch.Tensor, radius: int) -> torch.Tensor:
    """Morphological opening (erode, then dilate, square of side 2r+1) of (B, H, W) bool masks.

    Removes blobs and spurs thinner than 2r+1 pixels, so a few stray pixels cannot widen a self-prompt box. A mask
    that the opening would empty is kept as it was (the opening never turns a found object into "nothing found").
    """
    if radius <= 0:
        return masks
    k = 2 * radius + 1
    x = masks.float()[:, None]
    eroded = -F.max_pool2d(-x, k, stride=1, padding=radius)
    opened = F.max_pool2d(eroded, k, stride=1, padding=radius)[:, 0] > 0.5
    kept = opened.flatten(1).any(1)
    return torch.where(kept[:, None, None], opened, masks)


def jitter_boxes(boxes: torch.Tensor, amount: float, valid_hw: torch.Tensor) -> torch.Tensor:
    """Move each box edge by up to `amount` x the box's width/height (uniform, torch's RNG), kept inside the image.

    Used in training only, so the prompted pass learns to cope with the imperfect boxes its own first pass gives.
    """
    if amount <= 0:
        return boxes
    w = (boxes[:, 2] - boxes[:, 0] + 1).clamp(min=1)
    h = (boxes[:, 3] - boxes[:, 1] + 1).clamp(min=1)
    scale = torch.stack([w, h, w, h], dim=1)
    noise = (torch.rand(boxes.shape, device=boxes.device) * 2 - 1) * amount * scale
    moved = boxes + noise
    upper = torch.stack([valid_hw[:, 1], valid_hw[:, 0], valid_hw[:, 1], valid_hw[:, 0]], dim=1).to(boxes) - 1
    moved = torch.minimum(moved.clamp(min=0), upper)
    x0, x1 = torch.minimum(moved[:, 0], moved[:, 2]), torch.maximum(moved[:, 0], moved[:, 2])
    y0, y1 = torch.minimum(moved[:, 1], moved[:, 3]), torch.maximum(moved[:, 1], moved[:, 3])
    return torch.stack([x0, y0, x1, y1], dim=1)


def ground_truth_boxes(masks: torch.Tensor, valid_hw: torch.Tensor, jitter: float = 0.0) -> torch.Tensor:
    """Training prompts from the labels: the box around each (B, H, W) target mask's foreground, edges moved by up
    to `jitter` x its size (`jitter_boxes`); an empty mask gets the box of its whole valid region."""
    box, empty = boxes_from_masks(masks > 0.5)
    box = torch.where(empty[:, None], full_boxes(valid_hw), box)
    return jitter_boxes(box, jitter, valid_hw)
