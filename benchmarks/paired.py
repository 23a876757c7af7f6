"""Per-image Dice of one evaluation minus another's on the same images, with a 95% bootstrap interval.

Each argument is a folder holding `per_image.csv` (what `samsp evaluate` writes) or a `samsp demo` output folder
(its fine-tuned row is read). Example, from the repository root:
    python benchmarks/paired.py runs/demo-neck runs/demo-auto
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from common import paired_interval, read_per_image_dice

DEMO_ROW = Path("eval/SAM-SP_fine-tuned/none")


def per_image_dice(folder: Path) -> dict[str, float]:
    """Image id -> Dice from an evaluation folder or a demo folder."""
    path = folder / "per_image.csv"
    if not path.is_file():
        path = folder / DEMO_ROW / "per_image.csv"
    if not path.is_file():
        sys.exit(f"{folder}: no per_image.csv (an evaluation folder or a samsp demo folder is expected)")
    return read_per_image_dice(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("row", type=Path, help="the evaluation compared against the base")
    parser.add_argument("base", type=Path, help="the evaluation subtracted")
    args = parser.parse_args()
    row, base = per_image_dice(args.row), per_image_dice(args.base)
    if sorted(row) != sorted(base):
        sys.exit(f"{args.row} and {args.base} scored different images: a paired difference needs the same ones")
    diff = np.array([row[key] - base[key] for key in sorted(base)])
    mean, low, high = paired_interval(diff)
    print(
        f"{args.row} minus {args.base}: {mean:+.3f} [{low:+.3f}, {high:+.3f}] mDice over {diff.size} images, "
        f"better on {(diff > 0).sum()}, worse on {(diff < 0).sum()}"
    )


if __name__ == "__main__":
    main()
