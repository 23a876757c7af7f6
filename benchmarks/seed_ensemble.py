"""Two or more trained seeds of one recipe used as one model, screened on labelled images. Nothing is retrained.

Seeds of one recipe fail on different images (on the standard protocol a few whole-image failures decide each
mean), so combining them may remove failures that one model keeps. Columns of per_image.csv:

- one column per model (its own prompt-free Dice, as `samsp evaluate` gives it);
- "mean of singles": each image's Dice averaged over the models, what one run gives on average (the reference);
- "mean of N seeds": the Dice of the models' mean probability map (inference costs N times one model's);
- "weight soup": one model whose weights are the models' mean, each with its LoRA merged first (costs one model's).

    python benchmarks/seed_ensemble.py --models runs/protocol/ROW-s0/best runs/protocol/ROW-s1/best \
        --data runs/protocol/pairs.csv --ids runs/protocol/val_ids.txt --out runs/ensemble/val
    python benchmarks/seed_ensemble.py --pool runs/ensemble/val --section NAME

`--pool` prints the paired comparison against "mean of singles" (95% bootstrap intervals over the images) and, with
`--section`, writes it to BENCHMARKS.md.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from common import report_screen, screen_pairs, screen_parser, write_screen

from samsp import SamSP
from samsp.evaluation.evaluate import load_eval_set, predict_set
from samsp.evaluation.metrics import image_metrics

SINGLES = "mean of singles"
SOUP = "weight soup"


def weight_soup(models: list[SamSP]) -> SamSP:
    """One model whose every floating-point weight is the mean of the models' (LoRA merged into each first)."""
    merged = [m.merged() for m in models]
    states = [m.state_dict() for m in merged]
    names = [k for k, v in states[0].items() if v.is_floating_point()]
    mismatched = [k for k in states[0] if any(k not in s or s[k].shape != states[0][k].shape for s in states[1:])]
    if mismatched:
        raise SystemExit(f"the models differ in architecture (first weight that differs: {mismatched[0]})")
    soup = merged[0]
    soup.load_state_dict({**states[0], **{k: torch.stack([s[k] for s in states]).mean(0) for k in names}})
    return soup.eval()


def score(models: dict[str, SamSP], pairs: list) -> tuple[list[str], dict[str, list[float]]]:
    """Per-image Dice of every column (see the module docstring)."""
    first = next(iter(models.values()))
    data = load_eval_set(pairs, first)
    probs = {}
    for name, model in models.items():
        logging.info("predicting with %s", name)
        probs[name] = predict_set(model.eval(), data)
    logging.info("predicting with the weight soup")
    soup = predict_set(weight_soup(list(models.values())), data)

    def dice(maps: list[np.ndarray]) -> list[float]:
        return [image_metrics(p, g)["dice"] for p, g in zip(maps, data.gts, strict=True)]

    out = {name: dice(p) for name, p in probs.items()}
    out[SINGLES] = list(np.mean([out[name] for name in models], axis=0))
    ensemble = [np.mean(maps, axis=0) for maps in zip(*probs.values(), strict=True)]
    out[f"mean of {len(models)} seeds"] = dice(ensemble)
    out[SOUP] = dice(soup)
    return data.ids, out


def main() -> None:
    parser = screen_parser(__doc__, "Two seeds as one model")
    parser.add_argument("--models", type=Path, nargs="*", help="two or more trained model folders of one recipe")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if not args.pool:
        if not args.models or len(args.models) < 2:
            parser.error("give two or more --models")
        models = {f"seed model {k}": SamSP.from_pretrained(path) for k, path in enumerate(args.models)}
        ids, dice = score(models, screen_pairs(args))
        write_screen(args.out, ids, dice, args.models)
    report_screen(args.pool or [args.out], SINGLES, "model", args.section, args.title)


if __name__ == "__main__":
    main()
