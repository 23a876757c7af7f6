"""SAM's mask decoder for a batch of images with one prompt each, in one call.

segment_anything's `MaskDecoder.predict_masks` repeats each image embedding once per prompt
(`repeat_interleave(image_embeddings, n_prompts)`), so it takes one image per call. SAM-SP gives every image one
prompt (or none), so the images can share the call: one transformer run for the whole batch, and a graph whose
batch size stays free when exported to ONNX.
"""

from __future__ import annotations

import torch
from segment_anything.modeling import MaskDecoder


def decode_batch(
    decoder: MaskDecoder,
    embeddings: torch.Tensor,
    image_pe: torch.Tensor,
    sparse: torch.Tensor,
    dense: torch.Tensor,
    fused: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Single-mask low-resolution logits (B, 1, h, w) and predicted IoU (B, 1) for B images, one prompt each.

    `embeddings` (B, C, H, W); `image_pe` (1, C, H, W); `sparse` (B or 1, N, C) and `dense` (B or 1, C, H, W) from
    the prompt encoder (batch 1 when there is no prompt). Mirrors `MaskDecoder.predict_masks` followed by
    `forward(multimask_output=False)` in segment_anything/modeling/mask_decoder.py (facebookresearch/segment-anything
    v1.0), without the repeat_interleave, and runs only the hypernetwork of the single-mask token that
    `multimask_output=False` keeps. `fused` (B, C', 4H, 4W), early encoder features (modeling/fusion.py), is added
    to the upscaled mask features, as HQ-SAM adds its own.
    """
    b = embeddings.shape[0]
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat((output_tokens.expand(b, -1, -1), sparse.expand(b, -1, -1)), dim=1)
    src = embeddings + dense
    pos_src = image_pe.expand(b, -1, -1, -1)
    _, c, h, w = src.shape

    hs, src = decoder.transformer(src, pos_src, tokens)
    iou_token_out, mask_token_out = hs[:, 0, :], hs[:, 1, :]

    upscaled = decoder.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
    if fused is not None:
        upscaled = upscaled + fused
    hyper_in = decoder.output_hypernetworks_mlps[0](mask_token_out)[:, None, :]
    _, c, h, w = upscaled.shape
    masks = (hyper_in @ upscaled.reshape(b, c, h * w)).reshape(b, 1, h, w)
    return masks, decoder.iou_prediction_head(iou_token_out)[:, :1]
