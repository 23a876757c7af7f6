"""SamSP: SAM that prompts itself. Encode once, decode with no prompt, then with the box of its own mask.

The model returns every pass's logits; the loss (losses.py) decides what to do with them, so the trainer knows
nothing about self-prompting. The encoder runs as a list of stages so that a frozen prefix can be computed once
and cached (see `prefix_stages`), which is what makes CPU training practical.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from . import __version__
from .adapters import adapted_stage_names, apply_lora, base_encoder, merge_lora, set_trainable
from .backbones import build_sam, get_backbone, key_problems
from .errors import SamspError
from .io_utils import atomic_path
from .preprocess import Frame, postprocess, preprocess
from .prompts import boxes_from_masks, full_boxes, valid_region

CONFIG_NAME = "samsp.json"
WEIGHTS_NAME = "weights.safetensors"
FALLBACKS = ("no_prompt", "full_box")
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a SamSP model; saved next to its weights."""

    backbone: str = "litemedsam"
    checkpoint: str | None = None  # base SAM weights; None = bundled (litemedsam) or the cached official file
    strategy: str = "lora"  # lora | frozen | full: how the image encoder trains
    adapt_stages: int | None = None  # trailing encoder stages that train (None = all); the rest is frozen
    lora_rank: int = 4
    lora_alpha: float = 4.0
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = ("attn.qkv", "attn.proj")
    self_prompt: bool = True  # False: one no-prompt pass (the SAMed-style baseline)
    iterations: int = 1  # self-prompting iterations when training (passes = 1 + iterations)
    infer_iterations: int | None = None  # at inference; None = same as training
    empty_fallback: str = "no_prompt"  # empty pass-0 mask: keep the no-prompt prediction, or use a full box
    threshold: float = 0.5

    def __post_init__(self) -> None:
        get_backbone(self.backbone)
        if self.empty_fallback not in FALLBACKS:
            raise SamspError(f"empty_fallback must be one of {FALLBACKS}, got {self.empty_fallback!r}")
        if self.iterations < 0 or (self.infer_iterations is not None and self.infer_iterations < 0):
            raise SamspError("self-prompting iterations must be >= 0")
        object.__setattr__(self, "lora_targets", tuple(self.lora_targets))

    @property
    def inference_iterations(self) -> int:
        if not self.self_prompt:
            return 0
        return self.iterations if self.infer_iterations is None else self.infer_iterations


@dataclass
class Passes:
    """What one forward returns: input-frame logits of every pass, the boxes used, scores and fallbacks."""

    logits: list[torch.Tensor]  # (B, S, S) each, pass 0 (no prompt) first
    boxes: list[torch.Tensor]  # (B, 4) box given to pass k+1, input frame; NaN where pass 0 was empty
    scores: torch.Tensor  # (B,) the decoder's predicted IoU for the final pass
    fallback: torch.Tensor  # (B,) bool: pass 0 was empty and the fallback was used


@dataclass
class Prediction:
    """A prompt-free prediction for one image, at its original size."""

    mask: np.ndarray  # (H, W) bool, final pass
    probability: np.ndarray  # (H, W) float32, final pass
    pass_masks: list[np.ndarray] = field(repr=False)  # (H, W) bool for every pass, pass 0 first
    box: np.ndarray | None  # (4,) x0, y0, x1, y1 in original pixels: the self-prompt given to the final pass
    score: float  # the decoder's predicted IoU
    fallback: bool  # pass 0 found nothing, so no box was derived


class SamSP(nn.Module):
    """SAM fine-tuned to segment with no prompt: LoRA encoder, self-prompting decoder passes."""

    def __init__(self, config: ModelConfig | None = None, pretrained: bool = True):
        super().__init__()
        self.config = config = config or ModelConfig()
        self.backbone = get_backbone(config.backbone)
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
        set_trainable(self, config.strategy, self.adapted)
        # nn.Module starts in training mode; the frozen encoder must not (TinyViT's BatchNorm would normalise
        # with each batch's statistics, so cached training features would differ from those seen at inference)
        self.train()

    # ----- encoder -----
    @property
    def prefix_stages(self) -> int:
        """How many leading encoder stages never train: their output can be computed once and cached."""
        if not self.adapted:
            return len(self.stage_names)
        return self.stage_names.index(self.adapted[0])

    def run_encoder(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Run encoder stages [start, stop): start=0 takes images, start=prefix_stages takes cached features."""
        for _, stage in self.backbone.stages(base_encoder(self.image_encoder))[start:stop]:
            x = stage(x)
        return x

    @torch.no_grad()
    def encode_prefix(self, images: torch.Tensor) -> torch.Tensor:
        """The frozen prefix of the encoder, for caching."""
        return self.run_encoder(images, 0, self.prefix_stages)

    # ----- decoder -----
    def decode(self, embeddings: torch.Tensor, boxes: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """One decoder pass for a batch: logits (B, S, S) in the input frame and predicted IoU (B,).

        SAM's mask decoder expects one image per call, so images are decoded one by one; the prompt encoder
        runs once for the whole batch.
        """
        sparse, dense = self.prompt_encoder(points=None, boxes=boxes, masks=None)
        pe = self.prompt_encoder.get_dense_pe()
        logits, ious = [], []
        for i in range(embeddings.shape[0]):
            j = slice(i, i + 1) if boxes is not None else slice(0, 1)
            low, iou = self.mask_decoder(
                image_embeddings=embeddings[i : i + 1],
                image_pe=pe,
                sparse_prompt_embeddings=sparse[j],
                dense_prompt_embeddings=dense[j],
                multimask_output=False,
            )
            logits.append(low)
            ious.append(iou)
        low = torch.cat(logits)
        size = self.backbone.img_size
        if low.shape[-1] != size:
            low = F.interpolate(low.float(), (size, size), mode="bilinear", align_corners=False)
        return low[:, 0], torch.cat(ious)[:, 0]

    def forward(
        self,
        images: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
        valid_hw: torch.Tensor | None = None,
        iterations: int | None = None,
    ) -> Passes:
        """Pass 0 with no prompt, then `iterations` passes each prompted by the box of the previous mask.

        Give `images` (B, 3, S, S) or `features` (the cached output of the frozen prefix). `valid_hw` (B, 2)
        is each image's unpadded size in the input frame, so boxes never cover padding.
        """
        if (images is None) == (features is None):
            raise ValueError("give exactly one of images or features")
        embeddings = self.run_encoder(images) if features is None else self.run_encoder(features, self.prefix_stages)
        return self.self_prompt(embeddings, valid_hw, iterations)

    def self_prompt(
        self, embeddings: torch.Tensor, valid_hw: torch.Tensor | None = None, iterations: int | None = None
    ) -> Passes:
        """The decoder passes from image embeddings: no prompt first, then each previous mask's box."""
        b, size = embeddings.shape[0], self.backbone.img_size
        if valid_hw is None:
            valid_hw = torch.full((b, 2), size, device=embeddings.device)
        if iterations is None:
            iterations = self.config.iterations if self.training else self.config.inference_iterations
        if not self.config.self_prompt:
            iterations = 0

        logits, scores = self.decode(embeddings, None)
        passes, boxes = [logits], []
        fallback = torch.zeros(b, dtype=torch.bool, device=embeddings.device)
        cut = math.log(self.config.threshold / (1 - self.config.threshold))
        for k in range(iterations):
            with torch.no_grad():
                mask = (passes[-1] > cut) & valid_region(valid_hw, size)
                box, empty = boxes_from_masks(mask)
                if k == 0:
                    fallback = empty
                box[empty] = full_boxes(valid_hw)[empty]
            logits, iou = self.decode(embeddings, box[:, None, :])
            if self.config.empty_fallback == "no_prompt" and empty.any():
                logits = torch.where(empty[:, None, None], passes[-1], logits)
                iou = torch.where(empty, scores, iou)
                box[empty] = float("nan")
            passes.append(logits)
            boxes.append(box)
            scores = iou
        return Passes(logits=passes, boxes=boxes, scores=scores, fallback=fallback)

    def train(self, mode: bool = True) -> SamSP:
        """Frozen encoder stages stay in eval mode (BatchNorm statistics and cached attention biases kept)."""
        super().train(mode)
        if mode:
            encoder = base_encoder(self.image_encoder)
            encoder.eval()
            if self.config.strategy == "full":
                for name in (*self.adapted, "neck"):
                    encoder.get_submodule(name).train()
                for module in encoder.modules():
                    if isinstance(module, nn.modules.batchnorm._BatchNorm):
                        module.eval()
        return self

    # ----- prediction -----
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def predict(self, image: np.ndarray, iterations: int | None = None, precision: str = "fp32") -> Prediction:
        """Segment one HxWx3 uint8 RGB image with no prompt; the mask comes back at the image's size."""
        return self.predict_batch([image], iterations=iterations, precision=precision)[0]

    @torch.no_grad()
    def predict_batch(
        self,
        images: list[np.ndarray],
        batch_size: int = 4,
        iterations: int | None = None,
        precision: str = "fp32",
    ) -> list[Prediction]:
        """Segment many images, `batch_size` at a time through the encoder.

        `precision="bf16"` runs under bf16 autocast: about 3x faster on a CPU with bf16 units (BENCHMARKS.md),
        with masks that differ only at a few boundary pixels.
        """
        was_training = self.training
        self.eval()
        results: list[Prediction] = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            tensors, frames = zip(*(preprocess(_as_rgb(im), self.backbone) for im in chunk), strict=True)
            x = torch.stack(tensors).to(self.device)
            valid = torch.tensor([f.resized_hw for f in frames], device=self.device)
            with inference_precision(self.device, precision):
                out = self(images=x, valid_hw=valid, iterations=iterations)
            results += [_to_prediction(out, i, frames[i], self.config.threshold) for i in range(len(chunk))]
        self.train(was_training)
        return results

    # ----- saving and loading -----
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().cpu().contiguous() for n, p in self.named_parameters() if p.requires_grad}

    def save_pretrained(self, directory: str | Path, full: bool = False, extra: dict | None = None) -> Path:
        """Write samsp.json and weights.safetensors: only what was trained, or (full) the whole model."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = self.full_state_dict() if full else self.trainable_state_dict()
        with atomic_path(directory / WEIGHTS_NAME) as tmp:
            save_file(state, str(tmp))
        meta = {
            "samsp_version": __version__,
            "format": "full" if full else "trainable",
            "model": asdict(self.config),
        }
        meta.update(extra or {})
        with atomic_path(directory / CONFIG_NAME) as tmp:
            tmp.write_text(json.dumps(meta, indent=2))
        return directory

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """Every weight, in segment_anything's Sam layout (image_encoder.*, prompt_encoder.*, mask_decoder.*)."""
        if self.config.strategy == "lora":
            raise SamspError("merge the LoRA weights first (SamSP.merged()) to get a plain SAM state dict")
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}

    def merged(self) -> SamSP:
        """A copy with LoRA folded into the encoder weights: same predictions, no peft at inference."""
        model = copy.deepcopy(self)
        model.image_encoder = merge_lora(model.image_encoder)
        model.config = replace(self.config, strategy="frozen")
        model.adapted = []
        set_trainable(model, "frozen", [])
        return model

    @classmethod
    def from_pretrained(
        cls, path: str | Path, checkpoint: str | Path | None = None, map_location: str = "cpu"
    ) -> SamSP:
        """Load a saved model: a run folder (its best checkpoint), a checkpoint folder, or an export."""
        directory = resolve_model_dir(Path(path))
        meta_path = directory / CONFIG_NAME
        try:
            meta = json.loads(meta_path.read_text())
            fields = dict(meta["model"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise SamspError(f"{meta_path}: not a samsp model config ({err})") from err
        if checkpoint is not None:
            fields["checkpoint"] = str(checkpoint)
        try:
            config = ModelConfig(**fields)
        except TypeError as err:
            raise SamspError(f"{meta_path}: unknown model setting ({err})") from err
        full = meta.get("format") == "full"
        model = cls(config, pretrained=not full)
        weights = directory / WEIGHTS_NAME
        if not weights.is_file():
            raise SamspError(f"{weights}: weights file missing (was the run finished or exported?)")
        try:
            state = load_file(str(weights), device=map_location)
        except Exception as err:  # safetensors raises its own error types for a corrupt file
            raise SamspError(f"{weights}: cannot be read as safetensors ({err})") from err
        expected = model.state_dict() if full else model.trainable_state_dict()
        problems = key_problems(expected, state)
        if problems:
            raise SamspError(f"{weights}: does not fit a {config.backbone} model built from {meta_path} ({problems})")
        model.load_state_dict(state, strict=full)
        return model.eval()


def inference_precision(device: torch.device, precision: str):
    """The autocast context for a precision name; fp32 runs as it is."""
    if precision not in PRECISIONS:
        raise SamspError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def resolve_model_dir(path: Path) -> Path:
    """A run folder means its best checkpoint; a folder with samsp.json is used as it is."""
    if (path / CONFIG_NAME).is_file():
        return path
    for sub in ("best", "last"):
        if (path / sub / CONFIG_NAME).is_file():
            return path / sub
    if not path.exists():
        raise SamspError(f"{path}: model folder not found (give a run folder from `samsp train` or an export)")
    raise SamspError(f"{path}: no {CONFIG_NAME} here or in best/ or last/ (give a run or export folder)")


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise SamspError(f"expected an HxWx3 RGB image, got an array of shape {image.shape}")
    if image.dtype != np.uint8:
        raise SamspError(f"expected a uint8 image, got {image.dtype} (read files with samsp.data.read_image)")
    return image[:, :, :3]


def _to_prediction(out: Passes, i: int, frame: Frame, threshold: float) -> Prediction:
    probs = [torch.sigmoid(postprocess(logits[i], frame)).cpu().numpy() for logits in out.logits]
    box = None
    if out.boxes and not bool(out.fallback[i]):
        (h, w), (rh, rw) = frame.original_hw, frame.resized_hw
        scale = torch.tensor([w / rw, h / rh, w / rw, h / rh], device=out.boxes[-1].device)
        box = (out.boxes[-1][i] * scale).cpu().numpy()
    return Prediction(
        mask=probs[-1] > threshold,
        probability=probs[-1].astype(np.float32),
        pass_masks=[p > threshold for p in probs],
        box=box,
        score=float(out.scores[i]),
        fallback=bool(out.fallback[i]),
    )
