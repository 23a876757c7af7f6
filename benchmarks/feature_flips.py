"""How well a mirrored cached prefix stands in for encoding the mirrored image (`data.cached_flips`).

For PraNet training images of both datasets (seeded sample), LiteMedSAM's frozen prefix is computed for the image
and for its mirror image; the cached features, mirrored inside the valid region as the trainer does, are compared
with the mirror image's features: centred cosine (each channel's mean over the grid removed; the unflipped features'
cosine is the reference), and the Dice (over the unpadded frame) of the pretrained decoder given the mirrored
label's box on each. From the repository root:
    python benchmarks/feature_flips.py
"""

from __future__ import annotations

import argparse
import random

import numpy as np
import torch
from common import SHARED, markdown_table, write_section

from samsp import ModelConfig, SamSP
from samsp.data.named import pranet_split
from samsp.data.pairs import find_pairs
from samsp.data.prepared import PreparedSet
from samsp.data.splits import select
from samsp.inference.predictor import flip_valid
from samsp.modeling.prompts import boxes_from_masks
from samsp.training.feature_flips import flip_sample
from samsp.training.trainer import dice_at_input

DATASETS = (("Kvasir", "kvasir-seg", "kvasir-seg"), ("ClinicDB", "cvc-clinicdb-256", "cvc"))
PREFIXES = (  # the two cached recipes: (name, model settings)
    ("neck + decoder (5 stages cached)", {"strategy": "full", "adapt_stages": 0}),
    ("LoRA on the last stage (4 stages cached)", {"strategy": "lora", "adapt_stages": 1}),
)


def centred_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine of two token grids (L, C) after each channel's mean over the grid is removed."""
    a, b = (t - t.mean(0) for t in (a.flatten(0, -2), b.flatten(0, -2)))
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), 0))


@torch.no_grad()
def measure(model: SamSP, data: PreparedSet, horizontal: bool) -> dict[str, list[float]]:
    layout = model.features_layout(model.prefix_stages)
    out: dict[str, list[float]] = {k: [] for k in ("cos_standin", "cos_unflipped", "dice_true", "dice_standin")}
    for i in range(len(data)):
        item = data.item(i)
        image, mask, valid = item["image"][None], item["mask"], item["valid_hw"]
        features = model.encode_prefix(image)[0]
        target = model.encode_prefix(flip_valid(image, valid[None], -1 if horizontal else -2))[0]
        standin, flipped_mask = flip_sample(features, mask, valid, layout, horizontal, not horizontal)
        box = boxes_from_masks((flipped_mask > 0.5)[None])[0][:, None, :].float()
        out["cos_standin"].append(centred_cosine(standin, target))
        out["cos_unflipped"].append(centred_cosine(features, target))
        for key, f in (("dice_true", target), ("dice_standin", standin)):
            embeddings = model.run_encoder(f[None], model.prefix_stages)
            logits = model.decode(embeddings, box)[0]
            out[key].append(float(dice_at_input(logits, flipped_mask[None], valid[None])[0]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20, help="PraNet training images per dataset (seeded sample)")
    args = parser.parse_args()
    torch.manual_seed(0)
    pairs = []
    for _, folder, split in DATASETS:
        chosen = select(find_pairs(SHARED / folder), pranet_split(split)[0], f"{folder} PraNet training ids")
        pairs += random.Random(0).sample(chosen, args.images)
    rows = []
    for name, settings in PREFIXES:
        model = SamSP(ModelConfig(**settings)).eval()
        data = PreparedSet(pairs, model.backbone)
        for horizontal in (True, False):
            m = {k: float(np.mean(v)) for k, v in measure(model, data, horizontal).items()}
            flip = "horizontal" if horizontal else "vertical"
            rows.append([name, flip, m["cos_standin"], m["cos_unflipped"], m["dice_true"], m["dice_standin"]])
            print(" | ".join(str(v) if isinstance(v, str) else f"{v:.3f}" for v in rows[-1]), flush=True)
    table = markdown_table(
        [
            "cached prefix",
            "mirror",
            "centred cosine, stand-in",
            "centred cosine, unflipped",
            "box Dice, mirror image's features",
            "box Dice, stand-in",
        ],
        rows,
    )
    write_section(
        "feature-flips",
        "## Mirrored cached features as a stand-in for the mirrored image (`data.cached_flips`, LiteMedSAM)\n\n"
        f"{args.images} PraNet training images of each dataset (seeded sample), pretrained weights. Centred cosine: of "
        "the mirrored cached features (the stand-in), and of the unflipped ones, with the features of the mirrored "
        "image, each channel's mean over the grid removed. Box Dice: the pretrained decoder given the mirrored "
        "label's box, on the mirrored image's features and on the stand-in.\n\n" + table,
    )


if __name__ == "__main__":
    main()
