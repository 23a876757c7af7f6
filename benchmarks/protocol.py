"""The polyp field's standard protocol (PraNet): train on the Kvasir-SEG and CVC-ClinicDB PraNet training ids together,
choose settings on a validation split carved from those training ids, and test each final configuration once on the
100 Kvasir and 62 ClinicDB PraNet test images (our ClinicDB copy is the 256x256 JPEG one, see ../shared/data).

    python benchmarks/protocol.py --rows "SAM-SP" --epochs 4 --test --diagnose "SAM-SP"

Each row trains with its overrides (same data, epochs and seed) and is scored on the validation split; `--test` also
scores it on both test sets; `--diagnose ROW` splits that row's test error into "wrong box" and "wrong delineation"
(per image: pass-0 box IoU with the ground-truth box, final Dice with its own box and with the ground-truth box given
to the same fine-tuned decoder, empty first passes, several polyps, false-positive blobs that widen the box) and
draws the worst cases. Results land in the BENCHMARKS.md section `--section` (default "protocol"), its diagnosis in
"<section>-diagnosis" and its inference settings in "<section>-inference". The tables split validation by source too
(Kvasir images, ClinicDB frames: with `--val-by-sequence` the latter are frames of videos training never saw), in the
means and in the paired differences.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import random
import shutil
import time
from pathlib import Path

import matplotlib
import numpy as np
import torch
from common import ROOT, SHARED, logits_dice, markdown_table, paired_interval, read_per_image_dice, write_section
from scipy import ndimage

from samsp import SamSP, train
from samsp.config import load_config
from samsp.data.named import cvc_sequence, pranet_split
from samsp.data.pairs import Pair, find_pairs
from samsp.data.splits import select, write_split
from samsp.evaluation.evaluate import EvalSet, evaluate, load_eval_set, predict_set
from samsp.evaluation.metrics import image_metrics
from samsp.inference.preprocess import mask_in_frame, postprocess
from samsp.modeling.prompts import boxes_from_masks, full_boxes, valid_region
from samsp.training.batches import forget_prefix_features
from samsp.training.checkpoints import state_path
from samsp.training.hardware import pick_device

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PAPER_LOSS = ["loss.dice_first_pass=false"]  # Dice on the last pass + self-distillation, as the paper has it
PASS0_DICE = ["loss.dice_first_pass=true"]  # samsp's default recipe since it won the comparison below on validation
NECK_ONLY = [*PASS0_DICE, "model.strategy=full", "model.adapt_stages=0"]  # encoder body frozen, its neck trains
AUGMENTED = [*PASS0_DICE, "runtime.cache=false"]  # data.augment on every image every epoch, nothing cached
ROWS = {  # name -> train overrides; every row: same data, epochs and seed
    "SAM-SP": PAPER_LOSS,
    "SAMed-style one pass": ["model.self_prompt=false"],
    # training levers, one change each against "SAM-SP"; the prefix cache stores the bf16 values autocast computes,
    # so a bfloat16 cache holds the same numbers as the float32 one in half the memory
    "SAM-SP, 2 cached views (one augmented)": [*PAPER_LOSS, "data.cache_views=2", "runtime.cache_dtype=bfloat16"],
    "SAM-SP + pass-0 Dice": PASS0_DICE,
    "SAM-SP + box jitter 0.1": [*PAPER_LOSS, "model.box_jitter=0.1"],
    # levers on top of the default recipe (SAM-SP + pass-0 Dice)
    "SAM-SP + pass-0 Dice + decoder LR 0.1x": [*PASS0_DICE, "optim.decoder_lr_scale=0.1"],
    "SAM-SP + pass-0 Dice + box jitter 0.1": [*PASS0_DICE, "model.box_jitter=0.1"],
    # fine-tuning costs the decoder its box-following skill (diagnosis): one more pass trains on the label's box
    "SAM-SP + pass-0 Dice + ground-truth box pass": [*PASS0_DICE, "loss.gt_box=1.0"],
    # pass 0 picks the wrong structure (diagnosis): more of the encoder adapts; the prefix cache then stops earlier
    "SAM-SP + pass-0 Dice + 2 adapted stages": [*PASS0_DICE, "model.adapt_stages=2"],
    # two stages gained most on unseen videos: three is every TinyViT stage with attention (layers.0 is convolutional,
    # LoRA's targets are not in it), so the GPU row's adapters on a CPU; the prefix cache keeps patch_embed + layers.0
    "SAM-SP + pass-0 Dice + 3 adapted stages": [*PASS0_DICE, "model.adapt_stages=3"],
    # more capacity in the one adapted stage: LoRA on TinyViT's MLP (fc1, fc2) too, 40960 LoRA weights against 15360
    "SAM-SP + pass-0 Dice + LoRA on the MLP too": [
        *PASS0_DICE,
        "model.lora_targets=attn.qkv,attn.proj,mlp.fc1,mlp.fc2",
    ],
    # the recipes' failures are shared across seeds and recipes (wrong structure found): the adapted stage trains in
    # full (with the neck, as strategy full has it) instead of through LoRA adapters; same cached prefix
    "SAM-SP + pass-0 Dice + last stage trained in full": [*PASS0_DICE, "model.strategy=full", "model.adapt_stages=1"],
    # the adapted stage moves further in the same epochs: LoRA's learning rate 1e-3 (SAMed-like adapters learn faster
    # than the pretrained decoder should), the prompt encoder and decoder kept at 3e-4 (decoder_lr_scale 0.3)
    "SAM-SP + pass-0 Dice + LoRA LR 1e-3": [*PASS0_DICE, "optim.lr=0.001", "optim.decoder_lr_scale=0.3"],
    # a cached run trains on the same un-augmented features every epoch, and the model does not transfer to other
    # framings (zoom-pass screen); the GPU rows, which scale with epochs, augment every image: nothing is cached, the
    # frozen prefix is computed per batch (by the compiled graph on a CPU), so data.augment reaches every epoch
    "SAM-SP + pass-0 Dice + images augmented on the fly": AUGMENTED,
    # augmented epochs may keep gaining where cached ones stop (the GPU rows gained from 4 to 15 epochs): the epochs an
    # augmented run fits in most of the 2-hour CPU budget, against the cached recipe's 3 (its own optim.epochs wins)
    "SAM-SP + pass-0 Dice + images augmented on the fly, 6 epochs": [*AUGMENTED, "optim.epochs=6"],
    # pass 0 delineates worse than the pretrained decoder given a box (diagnosis): HQ-SAM's early-feature fusion, a
    # frozen stage's output added to the decoder's mask features (model.fusion_stage). layers.2 is the last-stage
    # recipe's cached prefix output (no new cache, no extra encoder work); layers.1 is Light HQ-SAM's TinyViT choice
    # (the prefix then stops a stage earlier, as with 2 adapted stages)
    "SAM-SP + pass-0 Dice + layers.2 fused into the decoder": [*PASS0_DICE, "model.fusion_stage=layers.2"],
    "SAM-SP + pass-0 Dice + layers.1 fused into the decoder": [*PASS0_DICE, "model.fusion_stage=layers.1"],
    # two thirds of the validation gap is in the outlines of polyps pass 0 finds (per-blob screen): the box pass also
    # gets pass 0's logits as SAM's dense mask prompt (model.mask_prompt), the input SAM's interactive passes refine
    "SAM-SP + pass-0 Dice + pass-0 logits as a mask prompt too": [*PASS0_DICE, "model.mask_prompt=true"],
    # SAMed trains its LoRA and decoder with AdamW weight decay 0.1 (its trainer.py); ours is 0.01
    "SAM-SP + pass-0 Dice + weight decay 0.1": [*PASS0_DICE, "optim.weight_decay=0.1"],
    # dropout on the LoRA adapters' input (peft's lora_dropout), ours 0
    "SAM-SP + pass-0 Dice + LoRA dropout 0.1": [*PASS0_DICE, "model.lora_dropout=0.1"],
    # two thirds of the validation gap is in outlines (per-blob screen): the polyp models' own loss (PraNet, Polyp-PVT),
    # BCE + IoU weighted towards the label's outline, added to the Dice terms
    "SAM-SP + pass-0 Dice + structure loss": [*PASS0_DICE, "loss.structure=1.0"],
    # the weights' moving average (optim.ema) validated and saved instead of the last step's: 0.995 averages over about
    # the last 200 of the recipe's 924 steps
    "SAM-SP + pass-0 Dice + weight average 0.995": [*PASS0_DICE, "optim.ema=0.995"],
    # issue 9's candidate never run on the LoRA recipe: train with 2 self-prompting iterations (each box pass's box
    # from the pass before), so the box passes learn from boxes of both qualities; predicts with 2 as well
    "SAM-SP + pass-0 Dice + 2 training iterations": [*PASS0_DICE, "model.iterations=2"],
    # the config's recipe (two stages) trained with 2 self-prompting iterations, predicting with 1 (the screen on the
    # last stage scored the same with 1 as with 2)
    "SAM-SP + pass-0 Dice + 2 adapted stages + 2 training iterations": [
        *PASS0_DICE,
        "model.adapt_stages=2",
        "model.iterations=2",
        "model.infer_iterations=1",
    ],
    # the learning rate held after the warm-up instead of the cosine decay to zero (issue 9's "schedule" lever)
    "SAM-SP + pass-0 Dice + constant LR": [*PASS0_DICE, "optim.schedule=constant"],
    # SAM's own mask loss: focal and Dice in a 20:1 ratio (focal alpha 0.25, gamma 2) on every Dice-supervised pass
    "SAM-SP + pass-0 Dice + focal term 20": [*PASS0_DICE, "loss.focal=20.0"],
    # a finer input (TinyViT's weights load at any multiple of 32): small polyps cover more embedding cells
    "SAM-SP + pass-0 Dice + 384 px input": [*PASS0_DICE, "model.input_size=384"],
    # the same on the CPU fallback: layers.3 is its cached prefix's output (the whole frozen body); layers.1 stops
    # its prefix two stages earlier
    "SAM-SP + pass-0 Dice, neck only + layers.3 fused into the decoder": [*NECK_ONLY, "model.fusion_stage=layers.3"],
    "SAM-SP + pass-0 Dice, neck only + layers.1 fused into the decoder": [*NECK_ONLY, "model.fusion_stage=layers.1"],
    "SAM-SP + pass-0 Dice, every stage adapted (GPU)": [*PASS0_DICE, "model.adapt_stages=null"],
    "SAMed-style one pass, every stage adapted (GPU)": ["model.self_prompt=false", "model.adapt_stages=null"],
    # the encoder body frozen and cached whole, its neck trains with the decoder: what a CPU trains under a time budget
    # (--minutes) when a row leaves the adaptation to samsp, so a LoRA row under --minutes on a CPU needs
    # --set model.adapt_stages=1
    "SAM-SP + pass-0 Dice, neck only": NECK_ONLY,
    # levers on top of the CPU fallback, one change each against "SAM-SP + pass-0 Dice, neck only"
    "SAM-SP + pass-0 Dice, neck only + decoder LR 0.1x": [*NECK_ONLY, "optim.decoder_lr_scale=0.1"],
    "SAM-SP + pass-0 Dice, neck only + box jitter 0.1": [*NECK_ONLY, "model.box_jitter=0.1"],
    "SAM-SP + pass-0 Dice, neck only + 2 training iterations": [*NECK_ONLY, "model.iterations=2"],
    "SAM-SP + pass-0 Dice, neck only + ground-truth box pass": [*NECK_ONLY, "loss.gt_box=1.0"],
    "SAM-SP + pass-0 Dice, neck only + ground-truth box pass, weight 0.25": [*NECK_ONLY, "loss.gt_box=0.25"],
    # a cached run trains with no augmentation: its cached features mirrored with the mask (data.cached_flips)
    "SAM-SP + pass-0 Dice, neck only + cached flips 0.5": [*NECK_ONLY, "data.cached_flips=0.5"],
    # the ground-truth box pass kept box-following but broke pass 0, both passes sharing one decoder (diagnosis):
    # the box-prompted passes get their own decoder (model.box_decoder), alone and with the ground-truth box pass
    "SAM-SP + pass-0 Dice, neck only + box decoder": [*NECK_ONLY, "model.box_decoder=true"],
    "SAM-SP + pass-0 Dice, neck only + box decoder + ground-truth box pass": [
        *NECK_ONLY,
        "model.box_decoder=true",
        "loss.gt_box=1.0",
    ],
    "SAM-SP + pass-0 Dice + box decoder": [*PASS0_DICE, "model.box_decoder=true"],
    "SAM-SP + pass-0 Dice + box decoder + ground-truth box pass": [
        *PASS0_DICE,
        "model.box_decoder=true",
        "loss.gt_box=1.0",
    ],
}
ANCHORS = [  # prompt-free mean Dice published under this protocol (Kvasir, ClinicDB), quoted from anchors.md
    ("PraNet", 0.898, 0.899),
    ("HarDNet-MSEG", 0.912, 0.932),
    ("Polyp-PVT", 0.917, 0.937),
    ("ASPS (SAM-based, prompt-free)", 0.920, 0.951),
]
TESTS = ("Kvasir", "ClinicDB")
SOURCES = {"kvasir-seg": "Kvasir", "cvc-clinicdb-256": "ClinicDB"}  # dataset folder -> the name of its test set
INFERENCE_LEVERS = {  # settings of a trained model, chosen on validation: name -> predict_set options / model settings
    "as trained (1 self-prompting iteration)": {},
    "no self-prompting pass (pass 0 only)": {"iterations": 0},
    "2 self-prompting iterations": {"iterations": 2},
    "test-time flips": {"flips": True},
    "test-time flips, 2 iterations": {"flips": True, "iterations": 2},
    "opening radius 2 before the box": {"model": {"box_opening": 2}},
    "opening radius 4 before the box": {"model": {"box_opening": 4}},
}


def protocol_pairs(
    out: Path, val_fraction: float, seed: int, limit: int | None, by_sequence: bool = False
) -> dict[str, list[Pair]]:
    """Training, validation and test pairs; writes pairs.csv, train_ids.txt and val_ids.txt into `out`.

    Validation is `val_fraction` of the training ids drawn per image, or with `by_sequence` that fraction of each
    source: Kvasir images one by one, ClinicDB frames by whole video sequence (no validation frame has a neighbour in
    training, as frames of a new video would not)."""
    kvasir = find_pairs(SHARED / "kvasir-seg")
    cvc = find_pairs(SHARED / "cvc-clinicdb-256")
    k_train, k_test = pranet_split("kvasir-seg")
    c_train, c_test = pranet_split("cvc")
    c_train = [i for i in c_train if i in {p.id for p in cvc}]  # our copy lacks 3 training frames
    k_pool = select(kvasir, k_train, "Kvasir PraNet train ids")
    c_pool = select(cvc, c_train, "ClinicDB PraNet train ids")
    pool = sorted(k_pool + c_pool, key=lambda p: p.id)
    if by_sequence:
        val = sequence_held_out(k_pool, c_pool, val_fraction, seed)
        held = {p.id for p in val}
        train_pairs = [p for p in pool if p.id not in held]
        random.Random(seed).shuffle(train_pairs)  # so that --limit takes a random subset, as below
    else:
        order = list(range(len(pool)))
        random.Random(seed).shuffle(order)
        n_val = round(len(pool) * val_fraction)
        val = sorted((pool[i] for i in order[:n_val]), key=lambda p: p.id)
        train_pairs = [pool[i] for i in order[n_val:]]
    if limit:
        train_pairs = train_pairs[:limit]
    train_pairs.sort(key=lambda p: p.id)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "pairs.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "mask"])
        writer.writerows([str(p.image), str(p.mask)] for p in pool)
    write_split(out / "train_ids.txt", train_pairs)
    write_split(out / "val_ids.txt", val)
    return {
        "train": train_pairs,
        "val": val,
        "Kvasir": select(kvasir, k_test, "Kvasir PraNet test ids"),
        "ClinicDB": select(cvc, c_test, "ClinicDB PraNet test ids"),
    }


def sequence_held_out(kvasir: list[Pair], cvc: list[Pair], fraction: float, seed: int) -> list[Pair]:
    """`fraction` of the Kvasir images drawn one by one, and whole ClinicDB video sequences drawn until they hold
    at least `fraction` of the ClinicDB frames; sorted by id."""
    rng = random.Random(seed)
    kvasir = sorted(kvasir, key=lambda p: p.id)
    held = rng.sample(kvasir, round(len(kvasir) * fraction))
    sequences: dict[int, list[Pair]] = {}
    for pair in cvc:
        sequences.setdefault(cvc_sequence(pair.id), []).append(pair)
    order = sorted(sequences)
    rng.shuffle(order)
    need, taken = round(len(cvc) * fraction), 0
    for number in order:
        if taken >= need:
            break
        held += sequences[number]
        taken += len(sequences[number])
    return sorted(held, key=lambda p: p.id)


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def summary(out: Path, tag: str, test: str) -> dict | None:
    path = out / "eval" / tag / test / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else None


@torch.no_grad()
def diagnose(
    model: SamSP, data: EvalSet, pretrained: SamSP, batch_size: int = 4
) -> tuple[list[dict], list[np.ndarray], list[dict]]:
    """Per image: where the prompt-free error comes from. Returns rows, final probabilities, and drawing material.

    `pretrained` is the backbone before fine-tuning: given the ground-truth box and the model's own box, it shows
    how much box-following skill the fine-tuned decoder kept and how good the model's box is for a decoder that
    follows boxes."""
    model.eval()
    pretrained.eval()
    rows, probs, drawings = [], [], []
    size = model.backbone.img_size
    for start in range(0, len(data.ids), batch_size):
        stop = min(start + batch_size, len(data.ids))
        images = torch.stack(data.inputs[start:stop]).to(model.device)
        emb, fused = model.embed(images)
        valid = torch.tensor([f.resized_hw for f in data.frames[start:stop]], device=model.device)
        out = model.decoder_passes(emb, valid, fused=fused)
        gt_box = data.gt_boxes[start:stop]
        gt_prompt = gt_box[:, None, :].to(model.device)
        oracle, _ = model.decode(emb, gt_prompt, fused)
        pretrained_emb = pretrained.run_encoder(images)
        if out.boxes:
            pass0_box, empty = out.boxes[0], torch.isnan(out.boxes[0]).any(1)
        else:  # a one-pass model: the box its mask would give
            pass0_box, empty = boxes_from_masks((out.logits[0] > 0) & valid_region(valid, size))
        pass0_box = torch.where(empty[:, None], full_boxes(valid), pass0_box)
        pretrained_gt, _ = pretrained.decode(pretrained_emb, gt_prompt)
        pretrained_own, _ = pretrained.decode(pretrained_emb, pass0_box[:, None])
        pass0 = (out.logits[0] > 0).cpu()
        own_box = out.boxes[0].cpu() if out.boxes else pass0_box.cpu()
        for i, k in enumerate(range(start, stop)):
            frame, gt = data.frames[k], data.gts[k]
            final = torch.sigmoid(postprocess(out.logits[-1][i], frame)).numpy()
            h, w = frame.resized_hw
            small_gt = mask_in_frame(gt, size).numpy()
            blobs, n_blobs = ndimage.label(pass0[i, :h, :w].numpy())
            fp_blobs = sum(1 for b in range(1, n_blobs + 1) if not small_gt[:h, :w][blobs == b].any())
            gt_parts = ndimage.label(gt)[1]
            rows.append(
                {
                    "id": data.ids[k],
                    "dice": image_metrics(final, gt)["dice"],
                    "dice_pass0": logits_dice(out.logits[0][i], frame, gt),
                    "dice_gt_box": logits_dice(oracle[i], frame, gt),
                    "dice_pretrained_gt_box": logits_dice(pretrained_gt[i], frame, gt),
                    "dice_pretrained_own_box": logits_dice(pretrained_own[i], frame, gt),
                    "box_iou": _box_iou(own_box[i], gt_box[i]),
                    "empty_pass0": bool(out.fallback[i]),
                    "gt_polyps": int(gt_parts),
                    "fp_blobs": int(fp_blobs),
                }
            )
            probs.append(final)
            drawings.append({"box": own_box[i].numpy(), "gt_box": gt_box[i].numpy(), "frame": frame})
    return rows, probs, drawings


def _box_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    if torch.isnan(a).any():
        return 0.0
    ix = max(0.0, float(min(a[2], b[2]) - max(a[0], b[0]) + 1))
    iy = max(0.0, float(min(a[3], b[3]) - max(a[1], b[1]) + 1))
    inter = ix * iy
    area = lambda r: float((r[2] - r[0] + 1) * (r[3] - r[1] + 1))  # noqa: E731
    return inter / max(area(a) + area(b) - inter, 1e-9)


def decomposition(rows: list[dict]) -> list[list]:
    """The gap to a perfect Dice, split by what a perfect box would recover."""
    dice = np.array([r["dice"] for r in rows])
    oracle = np.array([r["dice_gt_box"] for r in rows])
    iou = np.array([r["box_iou"] for r in rows])
    good = iou >= 0.8
    table = [
        ["mean Dice, own box (prompt-free)", float(dice.mean())],
        ["mean Dice, pass 0 (no prompt)", _mean(rows, "dice_pass0")],
        ["mean Dice, ground-truth box given to the same fine-tuned decoder", float(oracle.mean())],
        ["gap: wrong box (GT-box Dice - own-box Dice)", float(oracle.mean() - dice.mean())],
        ["gap: wrong delineation (1 - GT-box Dice)", float(1 - oracle.mean())],
    ]
    if "dice_pretrained_gt_box" in rows[0]:  # diagnoses written before these columns existed lack them
        table += [
            [
                "mean Dice, ground-truth box given to the pretrained (not fine-tuned) model",
                _mean(rows, "dice_pretrained_gt_box"),
            ],
            ["mean Dice, the model's own box given to the pretrained model", _mean(rows, "dice_pretrained_own_box")],
        ]
    table += [
        ["images with pass-0 box IoU >= 0.8 / their mean Dice", f"{int(good.sum())} / {dice[good].mean():.3f}"],
        [
            "images with pass-0 box IoU < 0.8 / their mean Dice (GT box: Dice)",
            f"{int((~good).sum())} / {dice[~good].mean():.3f} ({oracle[~good].mean():.3f})" if (~good).any() else "0",
        ],
        ["empty first passes", sum(r["empty_pass0"] for r in rows)],
        ["images with several polyps", sum(r["gt_polyps"] > 1 for r in rows)],
        ["images with a false-positive pass-0 blob (widens the box)", sum(r["fp_blobs"] > 0 for r in rows)],
        ["median pass-0 box IoU", float(np.median(iou))],
    ]
    return table


def _mean(rows: list[dict], key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


def worst_panel(data: EvalSet, rows: list[dict], probs: list[np.ndarray], drawings: list[dict], path: Path) -> None:
    """The eight lowest-Dice images: ground truth (cyan outline), prediction (green), own box (yellow), GT box (red)."""
    from samsp.data.io import read_image

    worst = sorted(range(len(rows)), key=lambda k: rows[k]["dice"])[:8]
    fig, axes = plt.subplots(2, 4, figsize=(14, 7))
    for ax, k in zip(axes.flat, worst, strict=False):
        frame = drawings[k]["frame"]
        (h, w), (rh, rw) = frame.original_hw, frame.resized_hw
        ax.imshow(read_image(data.images[k]))
        ax.imshow(np.ma.masked_where(probs[k] <= 0.5, probs[k] > 0.5), cmap="summer", alpha=0.45)
        ax.contour(data.gts[k], levels=[0.5], colors="cyan", linewidths=1)
        for key, color in (("box", "yellow"), ("gt_box", "red")):
            b = drawings[k][key]
            if not np.isnan(b).any():
                sx, sy = w / rw, h / rh
                ax.add_patch(
                    plt.Rectangle((b[0] * sx, b[1] * sy), (b[2] - b[0]) * sx, (b[3] - b[1]) * sy, fill=False, ec=color)
                )
        r = rows[k]
        ax.set_title(f"{r['id'][:12]} Dice {r['dice']:.2f} (GT box {r['dice_gt_box']:.2f})", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "runs" / "protocol"))
    parser.add_argument("--rows", nargs="*", help="row names (default: all)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument(
        "--minutes", type=float, help="train each row for this time budget (steps planned from measured speed)"
    )
    parser.add_argument(
        "--set", dest="extra", action="append", default=[], metavar="KEY=VALUE", help="a setting for every row"
    )
    parser.add_argument("--base", default="SAM-SP", help="the row the paired differences are taken against")
    parser.add_argument("--section", default="protocol", help="the BENCHMARKS.md section the table replaces")
    parser.add_argument(
        "--title",
        default="Standard protocol: Kvasir-SEG + CVC-ClinicDB PraNet training ids, PraNet test sets",
        help="the heading of that section",
    )
    parser.add_argument("--seeds", type=int, nargs="*", default=[0])
    parser.add_argument("--val-fraction", type=float, default=0.05)
    parser.add_argument(
        "--val-by-sequence",
        action="store_true",
        help="hold out whole ClinicDB video sequences (and the same fraction of Kvasir images) for validation",
    )
    parser.add_argument("--limit", type=int, help="train on this many of the training pairs (quick lever sweeps)")
    parser.add_argument("--test", action="store_true", help="also score each row on the two test sets")
    parser.add_argument(
        "--diagnose", nargs="*", default=[], help="rows whose error is decomposed (val; test with --test)"
    )
    parser.add_argument(
        "--inference-levers", action="store_true", help="score inference settings of the first row on validation"
    )
    parser.add_argument(
        "--test-setting",
        choices=list(INFERENCE_LEVERS),
        help="score each row on validation with this inference setting, and the best row with it on the test sets",
    )
    parser.add_argument("--test-limit", type=int, help="score only this many images of each test set (smoke runs)")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--report-only", action="store_true", help="rebuild the tables from --out, run nothing")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    out = Path(args.out).resolve()
    if args.report_only:
        report(out, args)
        return
    split = protocol_pairs(out, args.val_fraction, 0, args.limit, args.val_by_sequence)
    for test in TESTS:
        split[test] = split[test][: args.test_limit]
    logging.info("protocol: %d training, %d validation pairs", len(split["train"]), len(split["val"]))
    evalsets: dict[str, EvalSet] = {}
    for name in args.rows or list(ROWS):
        for seed in args.seeds:
            tag = f"{slug(name)}-s{seed}"
            run_dir = out / tag
            if not (run_dir / "done").exists() and state_path(run_dir).is_file():  # a row cut off by a stop
                started = time.perf_counter() - _epoch_seconds(run_dir)  # the epochs before the stop count too
                train(resume=run_dir)
                (run_dir / "done").write_text(f"{(time.perf_counter() - started) / 60:.1f}\n")
            if not (run_dir / "best").is_dir() or not (run_dir / "done").exists():
                shutil.rmtree(run_dir, ignore_errors=True)
                started = time.perf_counter()
                train(
                    out=run_dir,
                    overrides=[
                        f"data.csv={out / 'pairs.csv'}",
                        f"data.train_ids={out / 'train_ids.txt'}",
                        f"data.val_ids={out / 'val_ids.txt'}",
                        *budget_overrides(args),
                        f"runtime.seed={seed}",
                        f"runtime.cache_dir={out / 'features'}",  # a later row's process reads, not re-encodes
                        *ROWS[name],
                        *args.extra,
                    ],
                )
                (run_dir / "done").write_text(f"{(time.perf_counter() - started) / 60:.1f}\n")
            # scoring needs the memory the kept training features hold (a 384 px row was OOM-killed while scoring);
            # a later row reads them from runtime.cache_dir instead
            forget_prefix_features()
            model = SamSP.from_pretrained(run_dir).to(pick_device("auto"))  # its final model (last/), on a GPU if any
            diagnosing = name in args.diagnose and seed == args.seeds[0]
            pretrained = None  # the model before fine-tuning, built when a diagnosis first needs it
            for test in ("val", *(TESTS if args.test else ())):
                undiagnosed = diagnosing and not (out / "eval" / tag / test / "diagnosis.json").is_file()
                if summary(out, tag, test) and not undiagnosed:
                    continue
                data = eval_set(evalsets, split, test, model)
                if diagnosing:
                    if pretrained is None:
                        pretrained = SamSP(dataclasses.replace(model.config, strategy="frozen"))
                    rows, probs, drawings = diagnose(model, data, pretrained)
                    (out / "eval" / tag / test).mkdir(parents=True, exist_ok=True)
                    (out / "eval" / tag / test / "diagnosis.json").write_text(json.dumps(rows, indent=1))
                    worst_panel(data, rows, probs, drawings, out / "eval" / tag / test / "worst.png")
                else:
                    probs = predict_set(model, data)
                evaluate(model, data, out / "eval" / tag / test, f"{name} ({test})", probs=probs)
            if args.test_setting:
                score_setting(model, {"val": eval_set(evalsets, split, "val", model)}, out, tag, args.test_setting)
            if args.inference_levers and name == (args.rows or list(ROWS))[0] and seed == args.seeds[0]:
                data = eval_set(evalsets, split, "val", model)
                score_inference_levers(model, data, out, tag)  # before the next row trains
    if args.test_setting:
        test_chosen_row(out, args, split, evalsets)
    report(out, args)


def budget_overrides(args: argparse.Namespace) -> list[str]:
    """Fixed epochs, or a time budget that the trainer fills with as many steps as fit (on a CPU or a GPU)."""
    if args.minutes:
        return ["optim.epochs=auto", f"optim.time_budget_min={args.minutes:g}"]
    return [f"optim.epochs={args.epochs}"]


def _epoch_seconds(run_dir: Path) -> float:
    """Training seconds of the epochs a run finished (its metrics.csv), for a run resumed after a stop."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return 0.0
    with path.open() as f:
        return sum(float(row["seconds"]) for row in csv.DictReader(f))


def eval_set(evalsets: dict[str, EvalSet], split: dict, name: str, model: SamSP) -> EvalSet:
    """The split `name` decoded and preprocessed once per run of this script (every row has the same backbone)."""
    if name not in evalsets:
        evalsets[name] = load_eval_set(split[name], model)
    return evalsets[name]


def test_chosen_row(out: Path, args: argparse.Namespace, split: dict, evalsets: dict[str, EvalSet]) -> None:
    """With --test-setting: the row whose validation score with that setting is best is the final configuration;
    only it is scored on the test sets with the setting (every seed of it)."""
    lever = slug(args.test_setting)
    names = args.rows or list(ROWS)
    val = {n: np.mean([summary(out, f"{slug(n)}-s{s}", f"val-{lever}")["mDice"] for s in args.seeds]) for n in names}
    chosen = max(val, key=val.get)
    logging.info("chosen on validation with %s: %s (val mDice %.3f)", args.test_setting, chosen, val[chosen])
    for seed in args.seeds:
        model = SamSP.from_pretrained(out / f"{slug(chosen)}-s{seed}").to(pick_device("auto"))
        tests = {test: eval_set(evalsets, split, test, model) for test in TESTS}
        score_setting(model, tests, out, f"{slug(chosen)}-s{seed}", args.test_setting)


def with_setting(model: SamSP, lever: str) -> tuple[SamSP, dict]:
    """The model configured for an inference setting, and the options `evaluate` takes for it."""
    options = dict(INFERENCE_LEVERS[lever])
    model.config = dataclasses.replace(model.config, **options.pop("model", {}))
    return model, options


def score_setting(model: SamSP, evalsets: dict[str, EvalSet], out: Path, tag: str, lever: str) -> None:
    """Score a trained model with one inference setting on each of `evalsets` (summaries are kept)."""
    trained = model.config
    for test in evalsets:
        if not summary(out, tag, f"{test}-{slug(lever)}"):
            model, options = with_setting(model, lever)
            evaluate(model, evalsets[test], out / "eval" / tag / f"{test}-{slug(lever)}", lever, **options)
            model.config = trained


def score_inference_levers(model: SamSP, data: EvalSet, out: Path, tag: str) -> None:
    """Score each inference setting of a trained model on the validation split."""
    trained = model.config
    for lever in INFERENCE_LEVERS:
        if not summary(out, tag, f"val-{slug(lever)}"):
            model, options = with_setting(model, lever)
            evaluate(model, data, out / "eval" / tag / f"val-{slug(lever)}", lever, **options)
            model.config = trained


def report(out: Path, args: argparse.Namespace) -> None:
    names = args.rows or list(ROWS)
    by_source = val_ids_by_source(out)
    header = [
        "row",
        "seeds",
        "val mDice",
        *(f"val, {source} images ({len(ids)})" for source, ids in by_source.items()),
        "Kvasir mDice",
        "Kvasir mIoU",
        "ClinicDB mDice",
        "ClinicDB mIoU",
        "train min (mixed precision)",
    ]
    table = []
    for name in names:
        tags = [f"{slug(name)}-s{s}" for s in args.seeds]
        cells = [name, ",".join(map(str, args.seeds))]
        for test, keys in (("val", ("mDice",)), ("Kvasir", ("mDice", "mIoU")), ("ClinicDB", ("mDice", "mIoU"))):
            for key in keys:
                values = [s[key] for t in tags if (s := summary(out, t, test))]
                cells.append(_mean_sd(values))
            if test == "val":
                for ids in by_source.values():
                    cells.append(_mean_sd([d.mean() for t in tags if (d := per_image_dice(out, t, "val", ids)).size]))
        trained = [t for t in tags if (out / t / "done").exists()]
        minutes = [float((out / t / "done").read_text()) for t in trained]
        precisions = sorted({load_config(out / t / "config.yaml").runtime.mixed_precision for t in trained})
        cells.append(f"{np.mean(minutes):.1f} ({', '.join(precisions)})" if minutes else "")
        table.append(cells)
        if args.test_setting:
            cells = [f"{name}, {args.test_setting}", cells[1]]
            for test, keys in (("val", ("mDice",)), ("Kvasir", ("mDice", "mIoU")), ("ClinicDB", ("mDice", "mIoU"))):
                scored = [s for t in tags if (s := summary(out, t, f"{test}-{slug(args.test_setting)}"))]
                cells += [_mean_sd([s[key] for s in scored]) for key in keys]
                if test == "val":
                    cells += [""] * len(by_source)
            if cells[2]:  # scored with the setting at least on validation
                table.append([*cells, ""])
    table += [[f"{n} (published, not run)", "", "", *[""] * len(by_source), k, "", c, "", ""] for n, k, c in ANCHORS]
    training = (
        f"A {args.minutes:g}-minute budget per row"
        if args.minutes
        else f"{args.epochs} epoch{'s' * (args.epochs != 1)}"
    )
    own = [f"{n}: {o.split('=', 1)[1]}" for n in names for o in ROWS[n] if o.startswith("optim.epochs=")]
    if own:  # a row's own optim.epochs comes after the budget's overrides, so it wins
        training += f" ({'; '.join(own)} epochs, set by the row)"
    if args.extra:
        training += f" ({', '.join(args.extra)} for every row)"
    n_train = len((out / "train_ids.txt").read_text().split())
    n_val = len((out / "val_ids.txt").read_text().split())
    body = "\n".join(
        [
            f"## {args.title}",
            "",
            f"Training: {n_train} of the 1447 PraNet training images (900 Kvasir-SEG + 547 of our CVC-ClinicDB copy), "
            f"{n_val} carved off (seeded) for validation; every setting is chosen on that validation split, and the "
            f"test sets are scored once per final configuration. {training}, LiteMedSAM, the device's defaults "
            "otherwise. Test: the 100 Kvasir and 62 ClinicDB PraNet test images, prompt-free, fp32, at original size. "
            "Our ClinicDB copy is the third-party 256x256 JPEG one (aspect ratio lost, 3 training frames missing), so "
            "its numbers are close to, not equal to, the published protocol's.",
            "",
            markdown_table(header, table),
            "",
            paired_differences(out, names, args.seeds, args.base, by_source),
        ]
    )
    print(body)
    if not args.no_write:
        write_section(args.section, body, ran_on=runs_machine(out, names, args.seeds) if args.report_only else None)
    if args.diagnose:
        diagnosis_report(out, args)
    if args.inference_levers:
        levers_report(out, args)


def runs_machine(out: Path, names: list[str], seeds: list[int]) -> str | None:
    """Where the rows in `out` trained, from their environment.json files (device, GPU, torch, CPU threads)."""
    seen = set()
    for name in names:
        for seed in seeds:
            path = out / f"{slug(name)}-s{seed}" / "environment.json"
            if path.is_file():
                env = json.loads(path.read_text())
                device = env.get("gpu") or env.get("device", "?")
                seen.add(f"{device}, {env.get('cpu_threads', '?')} CPU threads, torch {env.get('torch', '?')}")
    return "trained and scored on " + "; ".join(sorted(seen)) if seen else None


def levers_report(out: Path, args: argparse.Namespace) -> None:
    name = (args.rows or list(ROWS))[0]
    tag = f"{slug(name)}-s{args.seeds[0]}"
    rows = []
    for lever in INFERENCE_LEVERS:
        s = summary(out, tag, f"val-{slug(lever)}")
        if s:
            rows.append([lever, s["mDice"], s["mIoU"]])
    body = "\n".join(
        [
            f"## Inference settings of the {name} model, on the validation split (never on test)",
            "",
            markdown_table(["setting", "val mDice", "val mIoU"], rows),
        ]
    )
    print(body)
    if not args.no_write:
        write_section(f"{args.section}-inference", body)  # protocol-inference for the main table


def diagnosis_report(out: Path, args: argparse.Namespace) -> None:
    parts = []
    for name in args.diagnose:
        tag = f"{slug(name)}-s{args.seeds[0]}"
        for test in ("val", *TESTS):
            path = out / "eval" / tag / test / "diagnosis.json"
            if not path.is_file():
                continue
            rows = json.loads(path.read_text())
            parts += [
                f"### {'validation' if test == 'val' else test + ' test'} ({len(rows)} images), {name}",
                "",
                markdown_table(["quantity", "value"], decomposition(rows)),
                "",
            ]
    body = "\n".join(
        [
            "## Where the prompt-free error is (standard protocol)",
            "",
            "Per image: the pass-0 box against the ground-truth box, the final Dice with the model's own box, "
            "and the Dice when the same fine-tuned decoder is given the ground-truth box. The gap to a perfect score "
            "splits into what a perfect box would recover (wrong box) and what remains with it (wrong delineation). "
            "The pretrained model (LiteMedSAM before fine-tuning) given the ground-truth box and the model's own "
            "pass-0 box shows how much box-following skill fine-tuning kept, and how good the model's box is for a "
            "decoder that follows boxes. "
            "The worst-case panels (`OUT/eval/<row>/<test>/worst.png`) stay in the run folder: they show dataset "
            "images, which are not ours to redistribute.",
            "",
            *parts,
        ]
    )
    print(body)
    if not args.no_write:
        write_section(f"{args.section}-diagnosis", body)  # protocol-diagnosis for the main table


def paired_differences(out: Path, names: list[str], seeds: list[int], base: str, by_source: dict[str, set[str]]) -> str:
    """Each row's per-image Dice minus the base row's on the same images, with a 95% bootstrap interval over the
    images: how large a difference these split sizes can tell from the luck of which images were drawn. With several
    seeds, one line per seed and one for each image's Dice averaged over the seeds (training noise averaged out).
    `by_source` (`val_ids_by_source`) gives each source's part of validation a column of its own."""
    if all(name == base for name in names):
        return ""  # the base is the only row: nothing to take a difference of
    columns = {"val": ("val", None), **{f"val, {s}": ("val", ids) for s, ids in by_source.items()}}
    columns |= {test: (test, None) for test in TESTS}  # column -> (scored set, the ids it keeps)
    tests = list(columns)
    reference = {test: _seed_dice(out, base, seeds, *columns[test]) for test in tests}
    if not any(d.size for dice in reference.values() for d in dice):
        return ""  # the base row was not run into this folder
    rows = []
    for name in names:
        if name == base:
            continue
        dice = {test: _seed_dice(out, name, seeds, *columns[test]) for test in tests}
        for k, label in enumerate([f"seed {s}" for s in seeds] + (["mean over seeds"] if len(seeds) > 1 else [])):
            cells = [f"{name}, {label}" if len(seeds) > 1 else name]
            for test in tests:
                row, base_dice = dice[test][k], reference[test][k]
                if row.size and row.size == base_dice.size:
                    mean, low, high = paired_interval(row - base_dice)
                    cells.append(f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]")
                else:
                    cells.append("")
            rows.append(cells)
    n = {test: max((d.size for d in reference[test]), default=0) for test in tests}
    header = [f"row minus {base}", *(f"{test} (n = {n[test]})" for test in tests)]
    return "\n".join(
        [
            f"Paired difference in per-image Dice against {base}, with a 95% bootstrap interval over the "
            "images (10000 resamples); an interval that contains 0 is a difference these images cannot tell from "
            "chance:",
            "",
            markdown_table(header, rows),
        ]
    )


def _seed_dice(out: Path, name: str, seeds: list[int], test: str, ids: set[str] | None = None) -> list[np.ndarray]:
    """Per-image Dice of each seed, then (for several seeds scored on the same images) their per-image mean."""
    per_seed = [per_image_dice(out, f"{slug(name)}-s{seed}", test, ids) for seed in seeds]
    if len(seeds) > 1:
        sizes = {d.size for d in per_seed}
        per_seed.append(np.mean(per_seed, axis=0) if len(sizes) == 1 and 0 not in sizes else np.array([]))
    return per_seed


def per_image_dice(out: Path, tag: str, test: str, ids: set[str] | None = None) -> np.ndarray:
    """Dice per image (of those in `ids` if given), ordered by image id; empty when the row was not scored on
    `test`."""
    path = out / "eval" / tag / test / "per_image.csv"
    if not path.is_file():
        return np.array([])
    dice = read_per_image_dice(path)
    return np.array([dice[key] for key in sorted(dice) if ids is None or key in ids])


def val_ids_by_source(out: Path) -> dict[str, set[str]]:
    """The validation ids of `out`'s split grouped by the dataset they come from (Kvasir, ClinicDB), read from its
    pairs.csv: a mixed validation mean can hide a gain on one source and a loss on the other."""
    val = set((out / "val_ids.txt").read_text().split())
    grouped: dict[str, set[str]] = {}
    with (out / "pairs.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            image = Path(row["image"])
            if image.stem in val:
                grouped.setdefault(SOURCES[image.parent.parent.name], set()).add(image.stem)
    return {source: grouped[source] for source in SOURCES.values() if source in grouped}


def _mean_sd(values: list[float]) -> str:
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"


if __name__ == "__main__":
    main()
