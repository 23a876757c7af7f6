"""The probability threshold of a trained model (`model.threshold`, 0.5 by default), screened on validation images.

The threshold decides two things: which pass-0 pixels the self-prompt box is drawn around, and which pixels of the
final pass make the mask that `samsp predict` writes (and `samsp evaluate` scores). This script encodes each image
once, runs the decoder passes at every threshold below, and scores each one per image against 0.5, with paired 95%
bootstrap intervals; the "mask only" columns keep the box at 0.5 and move only the mask's threshold, to show which of
the two a change comes from. Nothing is retrained; choose on validation ids, never on a test set.

    python benchmarks/mask_threshold.py --model runs/protocol/ROW-s0 --data runs/protocol/pairs.csv \
        --ids runs/protocol/val_ids.txt --out runs/threshold/s0
    python benchmarks/mask_threshold.py --pool runs/threshold/s0 runs/threshold/s1 --section mask-threshold

Each `--out` gets per_image.csv (one Dice column per variant) and summary.json; `--pool OUT...` prints the paired
comparison over several such folders (each image's Dice averaged over the folders holding it), and with `--section`
writes it to BENCHMARKS.md.
"""

from __future__ import annotations

import dataclasses
import sys

import torch
from common import embedded_batches, logits_probability, model_screen

from samsp import SamSP
from samsp.evaluation.evaluate import EvalSet
from samsp.evaluation.metrics import image_metrics

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
BASE = 0.5  # the default, and the box's threshold in the "mask only" columns


@torch.no_grad()
def score_thresholds(model: SamSP, data: EvalSet, batch_size: int = 8) -> dict[str, list[float]]:
    """Per-image Dice with `model.threshold` at each of THRESHOLDS (box and mask), then with only the mask's moved."""
    trained = model.config
    if trained.threshold != BASE:
        sys.exit(f"this screen compares thresholds against {BASE}; the model was saved with {trained.threshold}")
    both: dict[float, list[float]] = {t: [] for t in THRESHOLDS}
    mask_only: dict[float, list[float]] = {t: [] for t in THRESHOLDS if t != BASE}
    try:
        for batch, valid, emb, fused in embedded_batches(model, data, batch_size):
            for t in THRESHOLDS:
                model.config = dataclasses.replace(trained, threshold=t)
                final = model.decoder_passes(emb, valid, fused=fused).logits[-1]
                probs = [(logits_probability(final[i], data.frames[k]), data.gts[k]) for i, k in enumerate(batch)]
                both[t] += [image_metrics(prob, gt, t)["dice"] for prob, gt in probs]
                if t == BASE:  # the box at BASE: score its final pass at every other mask threshold too
                    for u, dice in mask_only.items():
                        dice += [image_metrics(prob, gt, u)["dice"] for prob, gt in probs]
    finally:
        model.config = trained
    return {
        **{f"{t}": d for t, d in both.items()},
        **{f"{u} on the mask only (box at {BASE})": d for u, d in mask_only.items()},
    }


def main() -> None:
    model_screen(__doc__, "The probability threshold (model.threshold)", score_thresholds, f"{BASE}", "threshold")


if __name__ == "__main__":
    main()
