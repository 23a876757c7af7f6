"""SamSP: SAM that prompts itself. Encode once, decode with no prompt, then with the box of its own mask.

The network returns every pass's logits in the input frame; the loss (losses.py) decides what to do with them,
and prediction at original size lives apart (samsp.inference.Predictor). The encoder runs as a list of stages so
that a frozen prefix can be computed once and cached (see `prefix_stages`), which makes CPU training practical.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..errors import SamspError
from .backbones import Layout, build_sam, channels_first, get_backbone
from .decoder import decode_batch
from .fusion import EarlyFusion
from .lora import adapted_stage_names, apply_lora, base_encoder, merge_lora, set_trainable
from .persistence import PretrainedMixin
from .prompts import boxes_from_masks, full_boxes, jitter_boxes, open_masks, valid_region


@dataclass
class Passes:
    """What one forward returns: input-frame logits of every pass, the boxes used, scores and fallbacks."""

    logits: list[torch.Tensor]  # (B, S, S) each, pass 0 (no prompt) first
    boxes: list[torch.Tensor]  # (B, 4) box given to pass k+1, input frame; NaN where pass 0 was empty
    scores: torch.Tensor  # (B,) the decoder's predicted IoU for the final pass
    fallback: torch.Tensor  # (B,) bool: pass 0 was empty and the fallback was used
    prompted: torch.Tensor | None = None  # (B, S, S) logits of the pass prompted by `prompt_boxes`, when given


class SamSP(PretrainedMixin, nn.Module):
    """SAM fine-tuned to segment with no prompt: LoRA encoder, self-prompting decoder passes."""

    def __init__(self, config: ModelConfig | None = None, pretrained: bool = True):
        super().__init__()
        self.config = config = config or ModelConfig()
        if config.adapt_stages == "auto":
            raise SamspError("model.adapt_stages is 'auto': resolve it for the hardware first (samsp.train does)")
        self.backbone = get_backbone(config.backbone).at_size(config.input_size)
        sam = build_sam(self.backbone, config.checkpoint, pretrained=pretrained)
        self.stage_names = [name for name, _ in self.backbone.stages(sam.image_encoder)]
        adapt = 0 if config.strategy == "frozen" else config.adapt_stages
        self.adapted = adapted_stage_names(self.stage_names, adapt)
        encoder = sam.image_encoder
        if config.strategy == "lora":
            encoder = apply_lora(
                encoder,
                self.adapted,
                config.lora_targets,
                config.lora_rank,
                config.lora_alpha,
                config.lora_dropout,
            )
        self.image_encoder = encoder
        self.prompt_encoder = sam.prompt_encoder
        self.mask_decoder = sam.mask_decoder
        # model.box_decoder: the box-prompted passes' own decoder, from the same pretrained weights
        self.box_decoder = copy.deepcopy(sam.mask_decoder) if config.box_decoder else None
        # model.fusion_stage: that stage's output, upsampled, joins the decoder's mask features (HQ-SAM's idea)
        self.fusion_index = None if config.fusion_stage is None else self._fusion_index(config.fusion_stage)
        self.early_fusion = None if self.fusion_index is None else self._build_fusion()
        set_trainable(self, config.strategy, self.fully_trained_stages)
        # nn.Module starts in training mode; the frozen encoder must not (TinyViT's BatchNorm would normalise
        # with each batch's statistics, so cached training features would differ from those seen at inference)
        self.train()

    # ----- encoder -----
    @property
    def trained_stages(self) -> list[str]:
        """Encoder stages whose weights train: the adapted ones, and under strategy `full` (or `lora` with
        `train_neck`) the neck too (so `full` with `adapt_stages=0` trains the neck alone, a cheap adaptation of the
        embeddings)."""
        if (self.config.strategy == "full" or self.config.train_neck) and "neck" in self.stage_names:
            return [*self.adapted, "neck"]
        return list(self.adapted)

    @property
    def fully_trained_stages(self) -> list[str]:
        """Trained stages whose every weight trains: all of them under strategy `full`; under `lora` only the neck
        (with `train_neck`), since LoRA adapts the others through adapters and their own weights stay frozen."""
        return [s for s in self.trained_stages if self.config.strategy == "full" or s == "neck"]

    @property
    def prefix_stages(self) -> int:
        """How many leading encoder stages never train: their output can be computed once and cached. With
        `model.fusion_stage` the prefix ends at the fused stage at the latest, so its output is the cached one."""
        trained = self.trained_stages
        stop = self.stage_names.index(trained[0]) if trained else len(self.stage_names)
        return stop if self.fusion_index is None else min(stop, self.fusion_index + 1)

    def _fusion_index(self, stage: str) -> int:
        body = [name for name in self.stage_names if name != "neck"]  # the neck's output is the embedding itself
        if stage not in body:
            raise SamspError(
                f"model.fusion_stage {stage!r} is not an encoder stage before the neck of {self.config.backbone}: "
                f"choose one of {', '.join(body)}"
            )
        return self.stage_names.index(stage)

    def _build_fusion(self) -> EarlyFusion:
        """The fusion head, sized by running the encoder on a blank image up to the fused stage (in eval mode, so
        no BatchNorm statistic moves; `__init__` sets each module's mode afterwards)."""
        size, stop = self.backbone.img_size, self.fusion_index + 1
        base_encoder(self.image_encoder).eval()
        with torch.no_grad():
            early = self.run_encoder(torch.zeros(1, 3, size, size), 0, stop)
        channels, side = channels_first(early, self.features_layout(stop)).shape[1:3]
        target = 4 * self.prompt_encoder.image_embedding_size[0]  # SAM's decoder upscales its grid 4x for masks
        factor = target // side
        if side * factor != target or factor < 2 or factor & (factor - 1):
            raise SamspError(
                f"model.fusion_stage {self.config.fusion_stage!r}: its {side}x{side} grid does not reach the "
                f"decoder's {target}x{target} mask features by doubling; choose a stage with a coarser grid"
            )
        return EarlyFusion(channels, self.mask_decoder.transformer_dim // 8, factor)

    def features_layout(self, stages: int) -> Layout:
        """How one image's features lie after the first `stages` encoder stages (a cached prefix's output): the
        backbone's layout inside the encoder; channels first after the neck, i.e. for the whole encoder."""
        return "chw" if stages == len(self.stage_names) else self.backbone.layout(stages)

    def run_encoder(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Run encoder stages [start, stop): start=0 takes images, start=prefix_stages takes cached features."""
        for _, stage in self.backbone.stages(base_encoder(self.image_encoder))[start:stop]:
            x = stage(x)
        return x

    def prefix_weights(self, stop: int) -> list[tuple[str, torch.Tensor]]:
        """The image encoder's weights the first `stop` stages compute with, by name: everything but the later
        stages' (which may train, and whose names change with where LoRA sits). What a cached or compiled frozen
        prefix is named by."""
        later = tuple(f"{name}." for name, _ in self.backbone.stages(base_encoder(self.image_encoder))[stop:])
        state = base_encoder(self.image_encoder).state_dict()
        return [(k, v) for k, v in sorted(state.items()) if "lora_" not in k and not k.startswith(later)]

    def embed(self, x: torch.Tensor, start: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Image embeddings from images (start=0) or from the output of the first `start` stages (a cached prefix),
        and the early features the decoder adds to its mask features (None without `model.fusion_stage`)."""
        if self.early_fusion is None:
            return self.run_encoder(x, start), None
        stop = self.fusion_index + 1
        if start > stop:
            raise SamspError(f"features after {start} encoder stages come after the fused stage ({stop})")
        early = self.run_encoder(x, start, stop)
        return self.run_encoder(early, stop), self.early_fusion(channels_first(early, self.features_layout(stop)))

    @torch.no_grad()
    def encode_prefix(self, images: torch.Tensor) -> torch.Tensor:
        """The frozen prefix of the encoder, for caching."""
        return self.run_encoder(images, 0, self.prefix_stages)

    # ----- decoder -----
    def decode(
        self,
        embeddings: torch.Tensor,
        boxes: torch.Tensor | None,
        fused: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One decoder pass for a batch: logits (B, S, S) in the input frame and predicted IoU (B,).

        `boxes` (B, 1, 4) gives each image one box, None decodes with no prompt; all images share one decoder call.
        A box runs through `box_decoder` when the model has one (`model.box_decoder`), no prompt through
        `mask_decoder`. `fused`: the early features `embed` returns with the embeddings. `masks` (B, S, S): logits of
        an earlier pass, given as SAM's dense mask prompt (`model.mask_prompt`).
        """
        if masks is not None:
            side = self.prompt_encoder.mask_input_size
            masks = F.interpolate(masks[:, None].float(), side, mode="bilinear", align_corners=False)
        sparse, dense = self.prompt_encoder(points=None, boxes=boxes, masks=masks)
        decoder = self.mask_decoder if boxes is None or self.box_decoder is None else self.box_decoder
        low, iou = decode_batch(decoder, embeddings, self.prompt_encoder.get_dense_pe(), sparse, dense, fused)
        size = self.backbone.img_size
        if low.shape[-1] != size:
            low = F.interpolate(low.float(), (size, size), mode="bilinear", align_corners=False)
        return low[:, 0], iou[:, 0]

    def forward(
        self,
        images: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
        valid_hw: torch.Tensor | None = None,
        iterations: int | None = None,
        prompt_boxes: torch.Tensor | None = None,
    ) -> Passes:
        """Pass 0 with no prompt, then `iterations` passes each prompted by the box of the previous mask.

        Give `images` (B, 3, S, S) or `features` (the cached output of the frozen prefix). `valid_hw` (B, 2)
        is each image's unpadded size in the input frame, so boxes never cover padding. `prompt_boxes` (B, 4),
        input frame, adds one pass prompted by them apart from the self-prompting chain (`Passes.prompted`):
        training uses it with ground-truth boxes.
        """
        if (images is None) == (features is None):
            raise ValueError("give exactly one of images or features")
        embeddings, fused = self.embed(images) if features is None else self.embed(features, self.prefix_stages)
        passes = self.decoder_passes(embeddings, valid_hw, iterations, fused)
        if prompt_boxes is not None:
            passes.prompted = self.decode(embeddings, prompt_boxes[:, None, :], fused)[0]
        return passes

    def decoder_passes(
        self,
        embeddings: torch.Tensor,
        valid_hw: torch.Tensor | None = None,
        iterations: int | None = None,
        fused: torch.Tensor | None = None,
    ) -> Passes:
        """The decoder passes from image embeddings (and `embed`'s early features): no prompt first, then each
        previous mask's box (and its logits, with `model.mask_prompt`)."""
        b, size = embeddings.shape[0], self.backbone.img_size
        if valid_hw is None:
            valid_hw = torch.full((b, 2), size, device=embeddings.device)
        if iterations is None:
            iterations = self.config.iterations if self.training else self.config.inference_iterations
        if not self.config.self_prompt:
            iterations = 0

        logits, scores = self.decode(embeddings, None, fused)
        passes, boxes = [logits], []
        fallback = torch.zeros(b, dtype=torch.bool, device=embeddings.device)
        cut = self.config.threshold_logit
        for k in range(iterations):
            with torch.no_grad():
                mask = (passes[-1] > cut) & valid_region(valid_hw, size)
                box, empty = boxes_from_masks(open_masks(mask, self.config.box_opening))
                if k == 0:
                    fallback = empty
                box = torch.where(empty[:, None], full_boxes(valid_hw), box)
                if self.training:
                    box = jitter_boxes(box, self.config.box_jitter, valid_hw)
                prior = passes[-1].detach() if self.config.mask_prompt else None
            logits, iou = self.decode(embeddings, box[:, None, :], fused, prior)
            if self.config.empty_fallback == "no_prompt":
                logits = torch.where(empty[:, None, None], passes[-1], logits)
                iou = torch.where(empty, scores, iou)
                box = torch.where(empty[:, None], float("nan"), box)
            passes.append(logits)
            boxes.append(box)
            scores = iou
        return Passes(logits=passes, boxes=boxes, scores=scores, fallback=fallback)

    def train(self, mode: bool = True) -> SamSP:
        """Frozen encoder stages stay in eval mode (BatchNorm statistics and cached attention biases kept); a
        LoRA-adapted stage too, except its adapters' dropout (`model.lora_dropout`), which trains."""
        super().train(mode)
        if mode:
            encoder = base_encoder(self.image_encoder)
            encoder.eval()
            for name in self.fully_trained_stages:  # a LoRA-adapted stage stays in eval mode
                encoder.get_submodule(name).train()
            for name, module in encoder.named_modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
                elif ".lora_dropout." in name:  # peft's dropout on each adapter's input
                    module.train()
        return self

    # ----- prediction (the one path is samsp.inference.Predictor; these are shortcuts to it) -----
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def predict(self, image: np.ndarray, iterations: int | None = None, precision: str = "fp32"):
        """Segment one HxWx3 uint8 RGB image with no prompt; a `Prediction` at the image's size."""
        from ..inference.predictor import Predictor

        return Predictor(self, precision=precision, iterations=iterations).predict(image)

    def predict_batch(
        self, images: list[np.ndarray], batch_size: int = 4, iterations: int | None = None, precision: str = "fp32"
    ) -> list:
        """Segment many images, `batch_size` at a time through the encoder; a list of `Prediction`s."""
        from ..inference.predictor import Predictor

        return Predictor(self, precision=precision, iterations=iterations, batch_size=batch_size).predict_batch(images)

    # ----- export -----
    def merged(self) -> SamSP:
        """A copy with LoRA folded into the encoder weights: same predictions, no peft at inference."""
        model = copy.deepcopy(self)
        model.image_encoder = merge_lora(model.image_encoder)
        model.config = replace(self.config, strategy="frozen", train_neck=False)
        model.adapted = []
        set_trainable(model, "frozen", [])
        return model
