"""The main job on the embedded default: fine-tune LiteMedSAM with SAM-SP on Kvasir-SEG, compare with zero-shot.

Trains on a seeded subset of the PraNet training ids (320 by default: on 300 held-out training images, two seeds,
320 scored 0.014 above 160 and level with 480 at the same 7-minute CPU budget; BENCHMARKS.md, main job), tests the
final model (the run's last/, where the learning-rate schedule ends) on the 100 PraNet test ids with no prompt, and
prints the zero-shot rows beside it: no prompt, a box around the whole image, and the ground-truth box (an oracle
that reads the label; an upper reference, not a competitor). The final model, not the best-validation one, because
the 20 validation images resolve differences of about 0.03 while the epochs of a run differ by about 0.01 on them:
the "best" epoch was chosen by noise, like nnU-Net, which also predicts with its final checkpoint.
"""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path

from .config import ModelConfig
from .data.named import pranet_split
from .data.pairs import Pair, find_pairs
from .data.sources import dataset_root
from .data.splits import select, write_split
from .evaluation.evaluate import evaluate, load_eval_set, predict_set, prefix_features
from .files import write_text_atomic
from .modeling.sam_sp import SamSP
from .training.batches import forget_prefix_features
from .training.trainer import train

log = logging.getLogger("samsp")


def run_demo(
    data: str | Path | None = None,
    out: str | Path = "runs/kvasir-demo",
    train_size: int = 320,
    val_size: int = 20,
    minutes: float = 7.0,
    seed: int = 0,
    overrides: list[str] | None = None,
) -> dict:
    """Train and compare; returns the table's rows (also written to results.json and results.md in `out`)."""
    started = time.perf_counter()
    root = dataset_root(data if data is not None else "kvasir-seg")
    out = Path(out)
    test = demo_split(root, out, train_size, val_size, seed)
    run_dir = train(
        data=str(root),
        out=out / "run",
        overrides=[
            f"data.train_ids={out / 'demo_train_ids.txt'}",
            f"data.val_ids={out / 'demo_val_ids.txt'}",
            f"optim.time_budget_min={minutes}",
            f"runtime.seed={seed}",
            *(overrides or []),
        ],
    )
    forget_prefix_features()  # nothing trains again in this run: the training features' memory goes to scoring
    # the final model, where the schedule ends: 20 validation images cannot tell epochs apart (BENCHMARKS.md, main job)
    rows = compare(SamSP.from_pretrained(run_dir / "last"), test, out / "eval")
    result = {
        "train_images": train_size,
        "val_images": val_size,
        "test_images": len(test),
        "checkpoint": "last",
        "wall_minutes": round((time.perf_counter() - started) / 60, 1),
        "rows": rows,
        "run": str(run_dir),
    }
    write_text_atomic(out / "results.json", json.dumps(result, indent=2))
    write_text_atomic(out / "results.md", format_rows(result))
    return result


def demo_split(root: Path, out: Path, train_size: int, val_size: int, seed: int) -> list[Pair]:
    """Write a seeded sample of the PraNet training ids (train and validation id lists); return the test pairs."""
    pairs = find_pairs(root)
    picked = training_draw(pairs, train_size + val_size, seed)
    write_split(out / "demo_train_ids.txt", sorted(picked[:train_size], key=lambda p: p.id))
    write_split(out / "demo_val_ids.txt", sorted(picked[train_size:], key=lambda p: p.id))
    return select(pairs, pranet_split("kvasir-seg")[1], "PraNet test ids")


def training_draw(pairs: list[Pair], count: int, seed: int) -> list[Pair]:
    """The demo's seeded draw of `count` PraNet training pairs (all of them at most), in draw order."""
    pool = sorted(select(pairs, pranet_split("kvasir-seg")[0], "PraNet train ids"), key=lambda p: p.id)
    return random.Random(seed).sample(pool, min(len(pool), count))


def compare(trained: SamSP, test: list[Pair], out: Path) -> list[dict]:
    """The fine-tuned model with no prompt beside the zero-shot rows; one evaluation folder per row."""
    zero_shot = SamSP(
        ModelConfig(backbone=trained.config.backbone, input_size=trained.config.input_size, strategy="frozen")
    )
    log.info("evaluating on the %d PraNet test images", len(test))
    data_set = load_eval_set(test, trained)
    shared = trained.prefix_stages  # the frozen prefix is the same weights in both models: encode it once
    features = prefix_features(trained, data_set)
    rows = []
    for name, model, prompt in (
        ("zero-shot LiteMedSAM, no prompt", zero_shot, "none"),
        ("zero-shot LiteMedSAM, whole-image box", zero_shot, "full_box"),
        ("zero-shot LiteMedSAM, ground-truth box (oracle)", zero_shot, "gt_box"),
        ("SAM-SP fine-tuned, no prompt", trained, "none"),
    ):
        probs = predict_set(model, data_set, prompt=prompt, features=features, start_stage=shared)
        folder = out / name.split(",")[0].replace(" ", "_") / prompt
        summary = evaluate(model, data_set, folder, title=name, probs=probs)
        rows.append({"row": name, "prompt": prompt, "mDice": summary["mDice"], "mIoU": summary["mIoU"]})
    return rows


def format_rows(result: dict) -> str:
    """The demo's result as a Markdown table."""
    lines = [
        f"Kvasir-SEG PraNet test ({result['test_images']} images); SAM-SP trained on {result['train_images']} "
        f"PraNet training images, its final model scored; {result['wall_minutes']} min in all",
        "",
        "| model | prompt at test time | mDice | mIoU |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['row']} | {r['prompt']} | {r['mDice']:.3f} | {r['mIoU']:.3f} |" for r in result["rows"]]
    return "\n".join(lines) + "\n"
