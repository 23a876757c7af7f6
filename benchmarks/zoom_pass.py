"""A second, zoomed look at the self-prompt box, screened on trained models. Nothing is retrained.

The model sees every image at 256 px, so a small polyp spans a few encoder tokens and a large frame loses detail.
This script runs the model as trained, takes the box of its final mask at the image's original resolution, widens
it by a margin, crops the original image there and runs the whole encoder again on the crop (now 256 px across the
polyp). Variants, per margin:

- box: one decoder pass on the crop, prompted by the final mask's box in the crop's frame;
- passes: the model's own passes on the crop (no prompt, then the self-prompt box);
- mean: inside the crop, the mean of the full-frame and the "box" probabilities.

Outside the crop a zoomed variant predicts background. An image whose final mask is empty keeps its full-frame
prediction. A crop is at least a quarter of the image's longer side (a zoom of at most 4x). Every variant is scored
per image against the model as trained, with paired 95% bootstrap intervals. Two diagnostic columns give the
ground-truth box to the decoder at full frame and on a crop around it (margin 0.25).

    python benchmarks/zoom_pass.py --model runs/protocol/ROW-s0 --data runs/protocol/pairs.csv \
        --ids runs/protocol/val_ids.txt --out runs/zoom/protocol-val-s0
    python benchmarks/zoom_pass.py --pool runs/zoom/protocol-val-s0 runs/zoom/protocol-val-s1

Each `--out` gets per_image.csv (one Dice column per variant) and summary.json; `--pool OUT...` prints the
comparison pooled over several folders (each image's Dice averaged over the folders holding it), and with
`--section` writes it to BENCHMARKS.md.
"""

from __future__ import annotations

import numpy as np
import torch
from common import embedded_batches, logits_probability, model_screen

from samsp import SamSP
from samsp.data.io import read_image
from samsp.evaluation.evaluate import EvalSet
from samsp.evaluation.metrics import image_metrics
from samsp.inference.preprocess import Frame, preprocess

MARGINS = (0.25, 0.5)
MODES = ("box", "passes", "mean")
MIN_SIDE = 0.25  # a crop's side is at least this fraction of the image's longer side
TRAINED = "as trained"
GT_FULL, GT_ZOOM = "GT box, full frame (diagnostic)", "GT box, zoomed 0.25 (diagnostic)"
VARIANTS = [TRAINED, *(f"zoom {m}, {mode}" for m in MARGINS for mode in MODES), GT_FULL, GT_ZOOM]
Window = tuple[int, int, int, int]  # x0, y0, x1, y1 in original pixels, end exclusive


def tight_box(mask: np.ndarray) -> Window | None:
    """The smallest window holding every foreground pixel of `mask` (H, W bool); None when it is empty."""
    ys, xs = np.nonzero(mask)
    if not len(ys):
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def crop_window(box: Window, margin: float, hw: tuple[int, int]) -> Window:
    """`box` widened by `margin` x its side on each side, at least MIN_SIDE x the longer image side, inside the
    image (shifted, not cut, where it would cross an edge and the image is large enough)."""
    h, w = hw
    least = MIN_SIDE * max(h, w)
    sides = []
    for lo, hi, limit in ((box[0], box[2], w), (box[1], box[3], h)):
        side = min(max((hi - lo) * (1 + 2 * margin), least), limit)
        start = min(max((lo + hi - side) / 2, 0), limit - side)
        sides.append((int(round(start)), int(round(start + side))))
    (x0, x1), (y0, y1) = sides
    return x0, y0, x1, y1


def crop_frame_box(box: Window, window: Window, frame: Frame) -> torch.Tensor:
    """`box` (original pixels) in the input frame of the crop `window`, as the decoder's (1, 1, 4) prompt."""
    (ch, cw), (rh, rw) = frame.original_hw, frame.resized_hw
    sx, sy = rw / cw, rh / ch
    x0, y0, x1, y1 = box[0] - window[0], box[1] - window[1], box[2] - 1 - window[0], box[3] - 1 - window[1]
    return torch.tensor([[[x0 * sx, y0 * sy, x1 * sx, y1 * sy]]], dtype=torch.float32)


def pasted(crop_logits: torch.Tensor, frame: Frame, window: Window, hw: tuple[int, int]) -> np.ndarray:
    """A crop's input-frame logits (S, S) as a probability map of the whole image, background outside the crop."""
    prob = np.zeros(hw, dtype=np.float32)
    x0, y0, x1, y1 = window
    prob[y0:y1, x0:x1] = logits_probability(crop_logits, frame)
    return prob


class Zoom:
    """The model's decoder on one crop of the original image: its embeddings once, then any prompt."""

    def __init__(self, model: SamSP, image: np.ndarray, window: Window):
        x0, y0, x1, y1 = window
        x, self.frame = preprocess(np.ascontiguousarray(image[y0:y1, x0:x1]), model.backbone)
        self.model, self.window, self.hw = model, window, image.shape[:2]
        self.embeddings, self.fused = model.embed(x[None])

    def box(self, box: Window) -> np.ndarray:
        logits, _ = self.model.decode(self.embeddings, crop_frame_box(box, self.window, self.frame), self.fused)
        return pasted(logits[0], self.frame, self.window, self.hw)

    def passes(self) -> np.ndarray:
        valid = torch.tensor([self.frame.resized_hw])
        logits = self.model.decoder_passes(self.embeddings, valid, None, self.fused).logits[-1]
        return pasted(logits[0], self.frame, self.window, self.hw)


@torch.no_grad()
def score_variants(model: SamSP, data: EvalSet, batch_size: int = 8) -> dict[str, list[float]]:
    """Per-image Dice of every variant in VARIANTS."""
    dice: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for batch, valid, emb, fused in embedded_batches(model, data, batch_size):
        final = model.decoder_passes(emb, valid, None, fused).logits[-1]
        gt_full, _ = model.decode(emb, data.gt_boxes[batch.start : batch.stop, None, :], fused)
        for i, k in enumerate(batch):
            frame, gt = data.frames[k], data.gts[k]
            full = logits_probability(final[i], frame)
            image = read_image(data.images[k])
            scores = {TRAINED: full, GT_FULL: logits_probability(gt_full[i], frame)}
            gt_box = tight_box(gt)
            scores[GT_ZOOM] = Zoom(model, image, crop_window(gt_box, 0.25, gt.shape)).box(gt_box)
            box = tight_box(full > model.config.threshold)
            for margin in MARGINS:
                if box is None:  # nothing found: no box to zoom on, the prediction stays as it is
                    scores.update({f"zoom {margin}, {mode}": full for mode in MODES})
                    continue
                zoom = Zoom(model, image, crop_window(box, margin, gt.shape))
                boxed = zoom.box(box)
                x0, y0, x1, y1 = zoom.window
                mean = full.copy()
                mean[y0:y1, x0:x1] = (full[y0:y1, x0:x1] + boxed[y0:y1, x0:x1]) / 2
                scores[f"zoom {margin}, box"] = boxed
                scores[f"zoom {margin}, passes"] = zoom.passes()
                scores[f"zoom {margin}, mean"] = mean
            for name in VARIANTS:
                dice[name].append(image_metrics(scores[name], gt)["dice"])
    return dice


def main() -> None:
    model_screen(__doc__, "A zoomed second look at the self-prompt box", score_variants, TRAINED, "variant")


if __name__ == "__main__":
    main()
