"""The model card: what a saved model is, what it was trained on and how well it did, for people and the Hub.

A card is read from a model folder's samsp.json (for checkpoints saved before samsp.json recorded the training
data, from the run folder around it); `save_pretrained` writes it as README.md beside the weights, `samsp serve`
shows it, and `samsp push` uploads it as the Hub repository's page.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..config import ModelConfig
from .backbones import BACKBONES

CARD_NAME = "README.md"
CHECKPOINT_DIRS = ("best", "last")


@dataclass(frozen=True)
class ModelCard:
    """The facts about a saved model that a user needs before trusting its masks."""

    name: str
    backbone: str
    input_size: int | None  # pixels of the square model input
    strategy: str  # how the image encoder was trained (lora, frozen, full)
    format: str  # "trainable": trained tensors only; "full": every weight (a merged export)
    iterations: int  # self-prompting passes after the no-prompt pass, at inference
    data: str | None = None  # the training data: a dataset name, or the name of its folder or CSV
    train_ids: str | None = None  # the id list the training images came from, if one was given
    train_images: int | None = None
    val_images: int | None = None
    val_dice: float | None = None  # prompt-free validation Dice of this checkpoint
    epoch: int | None = None
    samsp_version: str | None = None
    settings: dict = field(default_factory=dict)  # the ModelConfig, as saved


def model_name(directory: Path) -> str:
    """A readable name for a model folder: the run's name for its best/ or last/ checkpoint."""
    directory = Path(directory).resolve()
    return directory.parent.name if directory.name in CHECKPOINT_DIRS else directory.name


def training_data(run_dir: Path) -> dict:
    """What a run folder says it trained on (config.yaml and splits/): {} where it is not a run folder.

    Only names are kept (a dataset name, the last part of a folder or CSV path), never a full local path, so a
    card can be published without revealing where the data lives.
    """
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
        data = config["data"]
    except (OSError, UnicodeDecodeError, yaml.YAMLError, TypeError, KeyError):
        return {}
    if not isinstance(data, dict):
        return {}
    source = data.get("csv") or data.get("path")
    record = {"source": Path(str(source)).name if source else None}
    if data.get("train_ids"):
        record["train_ids"] = str(data["train_ids"]).rsplit("/", 1)[-1]
    for split in ("train", "val"):
        path = run_dir / "splits" / f"{split}.txt"
        if path.is_file():
            record[f"{split}_images"] = sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line)
    return record


def provenance(directory: Path, meta: dict) -> dict:
    """How the model in `directory` was trained (data, epoch, validation Dice), from its samsp.json `meta`.

    Checkpoints saved before samsp.json recorded the data take it from their run folder. A model derived from
    this one (an export) carries this record over.
    """
    directory = Path(directory)
    data = meta.get("data")
    if not data and directory.name in CHECKPOINT_DIRS:
        data = training_data(directory.parent)
    record = {"data": data, "epoch": meta.get("epoch"), "val_dice": meta.get("val_dice")}
    return {k: v for k, v in record.items() if v is not None and v != {}}


def card_from_meta(meta: dict, name: str) -> ModelCard:
    """The card of a parsed samsp.json (with its provenance)."""
    settings = dict(meta.get("trained_as") or meta["model"])  # an export records the settings it was trained with
    data = meta.get("data") or {}
    backbone = str(settings.get("backbone"))
    return ModelCard(
        name=name,
        backbone=backbone,
        input_size=settings.get("input_size") or (BACKBONES[backbone].img_size if backbone in BACKBONES else None),
        strategy=str(settings.get("strategy")) + (" + neck" if settings.get("train_neck") else ""),
        format=str(meta.get("format", "trainable")),
        iterations=ModelConfig(**settings).inference_iterations,
        data=data.get("source"),
        train_ids=data.get("train_ids"),
        train_images=data.get("train_images"),
        val_images=data.get("val_images"),
        val_dice=meta.get("val_dice"),
        epoch=meta.get("epoch"),
        samsp_version=meta.get("samsp_version"),
        settings=settings,
    )


def read_card(directory: Path, meta: dict, name: str | None = None) -> ModelCard:
    """The card of the model folder `directory` whose samsp.json is `meta` (`name`: default, the folder's)."""
    return card_from_meta({**meta, **provenance(directory, meta)}, name or model_name(directory))


def _trained_on(card: ModelCard) -> str:
    if card.data is None:
        return "not recorded"
    counts = ((card.train_images, "training"), (card.val_images, "validation"))
    parts = [f"{n} {what} images" for n, what in counts if n is not None]
    if card.train_ids:
        parts.append(f"ids from {card.train_ids}")
    return card.data + (f" ({', '.join(parts)})" if parts else "")


def card_rows(card: ModelCard) -> list[tuple[str, str]]:
    """The card as (label, value) rows: the table of README.md and of the web page."""
    size = f" ({card.input_size} px input)" if card.input_size else ""
    dice = "not recorded" if card.val_dice is None else f"{card.val_dice:.3f} (no prompt)"
    if card.val_dice is not None and card.epoch is not None:
        dice += f", epoch {card.epoch}"
    form = {
        "full": "every weight (merged export)",
        "onnx": "an ONNX graph of the whole pipeline, LoRA merged (samsp export --format onnx)",
    }.get(card.format, "trained tensors; the rest from the base model")
    passes = f"{card.iterations} after the no-prompt pass"
    if card.settings.get("box_decoder"):
        passes += ", in their own mask decoder"
    if card.settings.get("mask_prompt"):
        passes += ", each also given the previous pass's logits as a mask prompt"
    fusion = card.settings.get("fusion_stage")
    fused = [("early-feature fusion", f"{fusion}'s output added to the mask decoder's mask features")] if fusion else []
    return [
        ("backbone", f"{card.backbone}{size}"),
        ("encoder training", card.strategy),
        *fused,
        ("self-prompting passes", passes),
        ("trained on", _trained_on(card)),
        ("validation Dice", dice),
        ("weights", form),
        ("samsp version", card.samsp_version or "unknown"),
    ]


def card_markdown(card: ModelCard, reference: str | None = None) -> str:
    """README.md for a model folder or Hub repository; `reference` is how to load it (repo id or folder)."""
    ref = reference or "path/to/this/folder"
    table = "\n".join(f"| {label} | {value} |" for label, value in card_rows(card))
    return f"""---
library_name: samsp
pipeline_tag: image-segmentation
tags:
- segment-anything
- sam-sp
- image-segmentation
---

# {card.name}

A samsp model: the Segment Anything Model ({card.backbone}) fine-tuned with SAM-SP to segment images **with no
prompt**. It decodes once with no prompt, then again prompted by the box of its own first mask.

| | |
|---|---|
{table}

The validation Dice was measured on held-out images of the training data's own source; expect less on images
from other sources, and check the masks before relying on them.

## Use

```python
from samsp import SamSP
from samsp.data import read_image

model = SamSP.from_pretrained("{ref}")
prediction = model.predict(read_image("image.jpg"))  # .mask (HxW bool), .box, .score, .pass_masks
```

```bash
samsp predict --model {ref} images/ --out predictions/   # masks/*.png, overlays/, predictions.csv
samsp serve --model {ref}                                 # a web page and an HTTP API on http://127.0.0.1:8000
```

## Settings

```json
{json.dumps(card.settings, indent=2)}
```
"""
