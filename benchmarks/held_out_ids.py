"""Kvasir-SEG PraNet training ids that no `samsp demo` run trained or validated on: a validation set large enough to
choose the main job's recipe, so the 100 test ids stay for the figures the README quotes.

The demo draws its training and validation images with `samsp.demo.training_draw`; drawn over all 900 PraNet
training ids, the same seeded draw begins with the demo's images (for 86 or more of them), so this takes its tail
from `--skip` on, and checks that none of the given demo folders used one of them. Example, from the repository
root (then score each run with `samsp evaluate --ids`):
    python benchmarks/held_out_ids.py --data ../shared/data/kvasir-seg --out runs/held_out_ids.txt runs/demo-*
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from samsp.data.pairs import find_pairs
from samsp.demo import training_draw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("demos", nargs="*", type=Path, help="samsp demo output folders whose ids must not be used")
    parser.add_argument("--data", required=True, help="the Kvasir-SEG folder")
    parser.add_argument("--out", required=True, type=Path, help="the id list to write")
    parser.add_argument("--skip", type=int, default=600, help="permutation positions left to demo runs (600)")
    parser.add_argument("--seed", type=int, default=0, help="the demo's split seed (0)")
    args = parser.parse_args()
    pairs = find_pairs(args.data)
    held_out = {p.id for p in training_draw(pairs, len(pairs), args.seed)[args.skip :]}
    for demo in args.demos:
        for name in ("demo_train_ids.txt", "demo_val_ids.txt"):
            used = held_out & set((demo / name).read_text().split())
            if used:
                sys.exit(f"{demo / name}: {len(used)} of its ids are in the held-out set; raise --skip")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(f"{i}\n" for i in sorted(held_out)))
    print(f"wrote {len(held_out)} held-out PraNet training ids to {args.out}")


if __name__ == "__main__":
    main()
