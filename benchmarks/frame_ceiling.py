"""How much Dice the model's input frame alone costs: each PraNet test mask taken into the 256 px frame and back.

The model predicts in its input frame (LiteMedSAM: the longest side resized to 256 px, padded) and samsp resizes its
output back to the image's size. A perfect prediction in that frame is therefore the ground truth resized into it
and back: as a binary mask (a prediction thresholded in the frame) or as the area-weighted fraction (a perfect
probability map). 1 minus their Dice is the part of the delineation gap (BENCHMARKS.md, where the prompt-free
error is) that no training can win back at this input size. From the repository root:
    python benchmarks/frame_ceiling.py
"""

from __future__ import annotations

import numpy as np
from common import SHARED, markdown_table, write_section

from samsp.data.io import read_mask
from samsp.data.named import pranet_split
from samsp.data.pairs import find_pairs
from samsp.data.splits import select
from samsp.evaluation.metrics import image_metrics
from samsp.inference.frame import Frame
from samsp.inference.preprocess import mask_fraction, mask_in_frame, pad_mask, postprocess
from samsp.modeling.backbones import get_backbone

TEST_SETS = (("Kvasir", "kvasir-seg", "kvasir-seg"), ("ClinicDB", "cvc-clinicdb-256", "cvc"))


def through_frame(mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The mask taken into the frame (`mask_in_frame`, and its area-weighted fraction before the threshold), then
    back to its size by `postprocess`: (as a perfect binary prediction, as a perfect probability map)."""
    fraction = mask_fraction(mask, size)
    frame = Frame(original_hw=mask.shape, resized_hw=tuple(fraction.shape))
    binary = postprocess(mask_in_frame(mask, size).float(), frame).clamp(0, 1).numpy()
    soft = postprocess(pad_mask(fraction, size), frame).clamp(0, 1).numpy()
    return binary, soft


def main() -> None:
    size = get_backbone("litemedsam").img_size
    rows = []
    for name, folder, split in TEST_SETS:
        pairs = select(find_pairs(SHARED / folder), pranet_split(split)[1], f"{name} PraNet test ids")
        binary, soft = [], []
        for pair in pairs:
            mask = read_mask(pair.mask)
            b, s = through_frame(mask, size)
            binary.append(image_metrics(b, mask)["dice"])
            soft.append(image_metrics(s, mask)["dice"])
        rows.append([name, len(pairs), float(np.mean(binary)), float(np.min(binary)), float(np.mean(soft))])
        print(
            f"{name}: {len(pairs)} images, binary {np.mean(binary):.4f} (min {np.min(binary):.3f}), soft "
            f"{np.mean(soft):.4f}"
        )
    table = markdown_table(
        ["test set", "images", "mDice, binary mask in the frame", "lowest image", "mDice, probability map"], rows
    )
    write_section(
        "frame-ceiling",
        f"## What the {size} px input frame alone costs (the ground truth through the frame and back)\n\n"
        "A perfect prediction in LiteMedSAM's input frame, resized back to the image as samsp's `postprocess` does: "
        "the Dice below 1 is the part of the delineation gap that no training wins back at this input size.\n\n"
        + table,
    )


if __name__ == "__main__":
    main()
