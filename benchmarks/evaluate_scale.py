"""`samsp evaluate` over a large labelled set: resident memory when the set is scored in parts (the default,
`PART_SIZE` images at a time, `--part-size`) and in one part (every image decoded and predicted before any is scored).

    python benchmarks/evaluate_scale.py --images 2000

The set is Kvasir-SEG's 1000 image/mask pairs (about 600x530) linked under new names until it holds IMAGES pairs;
the tiny backbone, so the pipeline (decoding, probability maps at original size, metrics), not the network, is what
runs. One process each, 2 threads; resident memory sampled every second. The two runs must score the same Dice.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch
from common import SHARED, markdown_table, write_section
from predict_scale import run_sampled

from samsp import ModelConfig, SamSP
from samsp.data.pairs import find_pairs
from samsp.evaluation.evaluate import PART_SIZE


def labelled_set(work: Path, n: int) -> Path:
    pairs = find_pairs(SHARED / "kvasir-seg")
    root = work / "set"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        pair = pairs[i % len(pairs)]
        (root / "images" / f"case_{i:06d}{pair.image.suffix}").symlink_to(pair.image)
        (root / "masks" / f"case_{i:06d}{pair.mask.suffix}").symlink_to(pair.mask)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000, help="labelled pairs scored")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    rows, dice = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = labelled_set(work, args.images)
        torch.manual_seed(0)
        model = SamSP(ModelConfig(backbone="tiny")).save_pretrained(work / "tiny")
        for label, part in ((f"in parts of {PART_SIZE} (default)", PART_SIZE), ("in one part", args.images)):
            out = work / f"eval-{part}"
            command = [sys.executable, "-m", "samsp.cli", "evaluate", "--model", str(model), "--part-size", str(part)]
            command += ["--data", str(data), "--out", str(out)]
            wall, samples = run_sampled(command, {**os.environ, "OMP_NUM_THREADS": "2"})
            dice.append(json.loads((out / "summary.json").read_text())["mDice"])
            peak = max(m for _, m in samples)
            rows.append([label, f"{wall / 60:.1f}", f"{peak:.0f}", f"{dice[-1]:.6f}"])
            print(rows[-1], flush=True)
    if abs(dice[0] - dice[1]) > 1e-6:
        raise SystemExit(f"the two runs scored different mDice: {dice}")
    body = "\n".join(
        [
            "## Evaluation at scale (`samsp evaluate`, CPU): memory in parts and in one part",
            "",
            f"{args.images} labelled pairs (Kvasir-SEG's 1000, about 600x530, linked under new names), tiny backbone "
            "(the pipeline, not the network), one process, 2 threads, resident memory (process and children) sampled "
            "every second. Same mDice in both runs (a random model, so the value itself means nothing).",
            "",
            markdown_table(["scored", "wall min", "peak RSS MiB", "mDice"], rows),
        ]
    )
    print(body)
    if not args.no_write:
        write_section("evaluate-scale", body)


if __name__ == "__main__":
    main()
