"""Per-image Dice of one evaluation minus another's on the same images, with a 95% bootstrap interval.

Each argument is a folder holding `per_image.csv` (what `samsp evaluate` writes) or a `samsp demo` output folder
(its fine-tuned row is read). Example, from the repository root:
    python benchmarks/paired.py runs/demo-neck runs/demo-auto
With `--also ROW BASE` (repeatable: the same comparison with another training seed), each image's Dice is averaged
over the rows and over the bases before the difference. With `--ids FILE` only the images listed there (one id per
line) are compared: one source of a mixed validation split, say.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from common import paired_interval, read_per_image_dice

from samsp.data.splits import read_id_list

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
    parser.add_argument(
        "--also",
        nargs=2,
        action="append",
        default=[],
        type=Path,
        metavar=("ROW", "BASE"),
        help="another seed's row and base: each image's Dice is averaged over the seeds",
    )
    parser.add_argument("--ids", type=Path, help="compare only the images listed in this file (one id per line)")
    args = parser.parse_args()
    pairs = [(args.row, args.base), *args.also]
    folders = [folder for pair in pairs for folder in pair]
    scores = {folder: per_image_dice(folder) for folder in folders}
    ids = sorted(scores[args.base])
    for folder in folders:
        if sorted(scores[folder]) != ids:
            sys.exit(f"{folder} and {args.base} scored different images: a paired difference needs the same ones")
    if args.ids:
        wanted = set(read_id_list(args.ids))
        if missing := sorted(wanted - set(ids)):
            sys.exit(f"{args.ids}: {len(missing)} ids were not scored, e.g. {missing[0]}")
        ids = [key for key in ids if key in wanted]
    row = np.array([[scores[r][key] for key in ids] for r, _ in pairs]).mean(axis=0)
    base = np.array([[scores[b][key] for key in ids] for _, b in pairs]).mean(axis=0)
    diff = row - base
    mean, low, high = paired_interval(diff)
    seeds = f", each image averaged over {len(pairs)} seeds" if args.also else ""
    listed = f" listed in {args.ids}" if args.ids else ""
    print(
        f"{args.row} minus {args.base}{seeds}: {mean:+.3f} [{low:+.3f}, {high:+.3f}] mDice over {diff.size} images"
        f"{listed} "
        f"(row {row.mean():.3f}, base {base.mean():.3f}), better on {(diff > 0).sum()}, worse on {(diff < 0).sum()}"
    )


if __name__ == "__main__":
    main()
