"""Which blobs of the prompt-free mask the self-prompt box is drawn around, screened on trained models.

Today the box covers every foreground pixel of pass 0, so one false-positive blob widens it. This script decodes pass
0 once per image, draws the box under each rule below from the mask's connected components (8-connectivity, scipy),
decodes the prompted pass with it, and scores every rule per image against the as-trained box ("all"), with paired
95% bootstrap intervals. Two rules also drop small blobs from the final mask. Nothing is retrained.

    python benchmarks/box_components.py --model runs/protocol/ROW-s0 --data runs/protocol/pairs.csv \
        --ids runs/protocol/val_ids.txt --out runs/components/protocol-val
    python benchmarks/box_components.py --model runs/demo/run/last --data ../shared/data/kvasir-seg \
        --ids runs/held_out_ids.txt --out runs/components/demo

Each `--out` gets per_image.csv (one Dice column per rule) and summary.json; `--pool OUT...` prints the paired
comparison over several such folders (each image's Dice averaged over the folders holding it), and with `--section`
writes it to BENCHMARKS.md.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from common import embedded_batches, logits_dice, model_screen
from scipy import ndimage

from samsp import SamSP
from samsp.evaluation.evaluate import EvalSet
from samsp.modeling.prompts import boxes_from_masks, full_boxes, valid_region

EIGHT = np.ones((3, 3), dtype=bool)
RATIO = 0.2  # "small" blob: area below this fraction of the image's largest blob
RULES = {  # name -> (which pass-0 blobs give the box, which blobs of the final mask are kept)
    "all": ("all", "all"),
    "largest": ("largest", "all"),
    "most confident": ("confident", "all"),
    f">= {RATIO} x largest": ("ratio", "all"),
    f">= {RATIO} x largest, final too": ("ratio", "ratio"),
    "all, final largest only": ("all", "largest"),
}


def kept_blobs(mask: np.ndarray, logits: np.ndarray, rule: str) -> np.ndarray:
    """The pixels of `mask` (H, W bool) in the blobs `rule` keeps: all, largest, confident (the blob holding the
    highest logit) or ratio (blobs of at least RATIO x the largest's area). An empty mask stays empty."""
    if rule == "all" or not mask.any():
        return mask
    labels, n = ndimage.label(mask, structure=EIGHT)
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    if rule == "largest":
        return labels == 1 + int(areas.argmax())
    if rule == "confident":
        return labels == labels.flat[int(np.where(mask, logits, -np.inf).argmax())]
    if rule == "ratio":
        return np.isin(labels, 1 + np.flatnonzero(areas >= RATIO * areas.max()))
    raise ValueError(rule)


@torch.no_grad()
def score_rules(model: SamSP, data: EvalSet, batch_size: int = 8) -> dict[str, list[float]]:
    """Per-image Dice of the prompted pass under each rule of RULES (the model's one self-prompting iteration)."""
    if model.config.inference_iterations != 1 or not model.config.self_prompt:
        sys.exit("this screen compares the box of one self-prompting iteration; the model runs another number")
    size = model.backbone.img_size
    cut = model.config.threshold_logit
    dice: dict[str, list[float]] = {name: [] for name in RULES}
    for batch, valid, emb, fused in embedded_batches(model, data, batch_size):
        trained = model.decoder_passes(emb, valid, 1, fused)
        pass0 = trained.logits[0]
        inside = valid_region(valid, size)
        mask = ((pass0 > cut) & inside).numpy()
        for name, (box_rule, final_rule) in RULES.items():
            chosen = np.stack([kept_blobs(m, p, box_rule) for m, p in zip(mask, pass0.numpy(), strict=True)])
            box, empty = boxes_from_masks(torch.from_numpy(chosen))
            box = torch.where(empty[:, None], full_boxes(valid), box)
            logits, _ = model.decode(emb, box[:, None, :], fused)
            logits = torch.where(empty[:, None, None], trained.logits[-1], logits)  # no blob: as trained
            if name == "all" and not torch.allclose(logits, trained.logits[-1], atol=1e-4):
                sys.exit("the 'all' rule does not reproduce the model's own prompted pass")
            for i, k in enumerate(batch):
                final = logits[i]
                if final_rule != "all":
                    m = (final > cut) & inside[i]
                    keep = torch.from_numpy(kept_blobs(m.numpy(), final.numpy(), final_rule))
                    final = torch.where(m & ~keep, torch.full_like(final, -20.0), final)
                dice[name].append(logits_dice(final, data.frames[k], data.gts[k]))
    return dice


def main() -> None:
    model_screen(__doc__, "Which pass-0 blobs give the self-prompt box", score_rules, "all", "rule")


if __name__ == "__main__":
    main()
