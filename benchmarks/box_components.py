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

import argparse
import csv
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch
from common import logits_dice, markdown_table, paired_interval, write_section
from scipy import ndimage

from samsp import SamSP
from samsp.data.pairs import find_pairs
from samsp.data.splits import read_csv_pairs, read_id_list, select
from samsp.evaluation.evaluate import EvalSet, load_eval_set, prefix_features
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
HEADER = ["rule", "images", "mDice", "minus all: mean [95% interval]"]


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
    model.eval()
    size = model.backbone.img_size
    cut = model.config.threshold_logit
    features = prefix_features(model, data) if model.prefix_stages > 0 else data.inputs
    dice: dict[str, list[float]] = {name: [] for name in RULES}
    for start in range(0, len(data.ids), batch_size):
        stop = min(start + batch_size, len(data.ids))
        emb, fused = model.embed(torch.stack(features[start:stop]), model.prefix_stages)
        valid = torch.tensor([f.resized_hw for f in data.frames[start:stop]])
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
            for i, k in enumerate(range(start, stop)):
                final = logits[i]
                if final_rule != "all":
                    m = (final > cut) & inside[i]
                    keep = torch.from_numpy(kept_blobs(m.numpy(), final.numpy(), final_rule))
                    final = torch.where(m & ~keep, torch.full_like(final, -20.0), final)
                dice[name].append(logits_dice(final, data.frames[k], data.gts[k]))
        logging.info("%d/%d images", stop, len(data.ids))
    return dice


def read_scores(folder: Path) -> dict[str, dict[str, float]]:
    """Rule -> image id -> Dice, from a folder this script wrote."""
    with (folder / "per_image.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {name: {r["id"]: float(r[name]) for r in rows} for name in RULES}


def pooled(folders: list[Path]) -> list[list]:
    """Per rule: mean Dice and the paired difference from "all", each image averaged over the folders holding it."""
    scores = [read_scores(f) for f in folders]
    ids = sorted({i for s in scores for i in s["all"]})

    def averaged(name: str) -> np.ndarray:
        return np.array([np.mean([s[name][i] for s in scores if i in s[name]]) for i in ids])

    base = averaged("all")
    rows = []
    for name in RULES:
        values = averaged(name)
        mean, low, high = paired_interval(values - base)
        rows.append([name, len(ids), float(values.mean()), f"{mean:+.4f} [{low:+.4f}, {high:+.4f}]"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a trained model folder")
    parser.add_argument("--data", type=Path, help="a folder with images/ and masks/, or a pairs CSV")
    parser.add_argument("--ids", type=Path, help="the image ids to score (validation ids, never test)")
    parser.add_argument("--out", type=Path, help="where per_image.csv and summary.json go")
    parser.add_argument("--pool", type=Path, nargs="*", help="print the comparison pooled over these --out folders")
    parser.add_argument("--section", help="with --pool: the BENCHMARKS.md section the pooled table replaces")
    parser.add_argument("--title", default="Which pass-0 blobs give the self-prompt box", help="that section's heading")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.pool:
        rows = pooled(args.pool)
        table = markdown_table(HEADER, rows)
        print(table)
        if args.section:
            models = ", ".join(json.loads((f / "summary.json").read_text())["model"] for f in args.pool)
            write_section(args.section, f"## {args.title}\n\nModels: {models}.\n\n{table}")
        return
    pairs = read_csv_pairs(args.data) if args.data.suffix == ".csv" else find_pairs(args.data)
    pairs = select(pairs, read_id_list(args.ids), str(args.ids))
    model = SamSP.from_pretrained(args.model)
    data = load_eval_set(pairs, model)
    dice = score_rules(model, data)
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "per_image.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", *RULES])
        writer.writerows([i, *(f"{dice[name][k]:.6f}" for name in RULES)] for k, i in enumerate(data.ids))
    summary = {name: float(np.mean(values)) for name, values in dice.items()}
    (args.out / "summary.json").write_text(json.dumps({"model": str(args.model), "mDice": summary}, indent=1))
    print(markdown_table(HEADER, pooled([args.out])))


if __name__ == "__main__":
    main()
