"""The paper's comparison and ablations on real data: LiteMedSAM on Kvasir-SEG (PraNet split), unseen CVC-ClinicDB.

Every fine-tuned row trains on the same seeded subset of the PraNet training ids for the same number of epochs
(one process, so the frozen encoder prefix is computed once and shared). Tests: the 100 PraNet Kvasir test ids and,
unseen, the 62 PraNet CVC-ClinicDB test ids of the 256x256 JPEG copy. Writes the "accuracy" and "ablations"
sections of BENCHMARKS.md, with curves as PNG, and every row's run folder (config, split ids) under --out.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import random
import shutil
import time
from pathlib import Path

import matplotlib
from common import ROOT, SHARED, markdown_table, write_section

from samsp import ModelConfig, SamSP, train
from samsp.data.named import pranet_split
from samsp.data.pairs import find_pairs
from samsp.data.splits import select, write_split
from samsp.evaluation.evaluate import evaluate, load_eval_set, predict_set, prefix_features

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

METRICS = ("mDice", "mIoU", "s_measure", "wf_measure", "mean_em", "mae")

ZERO_SHOT = (("none", "no prompt"), ("full_box", "whole-image box"), ("gt_box", "ground-truth box (oracle)"))

ROWS = {  # name -> train overrides; SAM-SP first, so a stopped run has the headline row
    "SAM-SP": [],
    "SAM-SP + BCE (weight 1; not in the paper's loss)": ["loss.bce=1.0"],
    "fine-tuned, one no-prompt pass (SAMed-style LoRA)": ["model.self_prompt=false"],
    "SAM-SP without self-distillation": ["loss.distill=false"],
    "SAM-SP, frozen encoder": ["model.strategy=frozen"],
    "SAM-SP, full fine-tuning of the last stage": ["model.strategy=full", "optim.lr=1e-4"],
    "SAM-SP, alpha = 0.5": ["loss.alpha=0.5"],
    "SAM-SP, alpha = 2": ["loss.alpha=2.0"],
}


def metric_row(summary: dict) -> list[float]:
    return [summary["mDice"], summary["mIoU"], *(summary["mean"][m] for m in METRICS[2:])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train-size", type=int, default=120)
    parser.add_argument("--val-size", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench-accuracy"))
    parser.add_argument("--rows", nargs="*", help="subset of row names (default: all)")
    parser.add_argument(
        "--section",
        default="accuracy",
        help="BENCHMARKS.md section to write; any other than 'accuracy' skips the iterations ablation",
    )
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--report-only", action="store_true", help="rebuild the tables from --out, run nothing")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    started = time.perf_counter()
    out = Path(args.out).resolve()
    if args.report_only:
        report(out, args, None)
        return
    kvasir = SHARED / "kvasir-seg"
    pairs = find_pairs(kvasir)
    train_ids, test_ids = pranet_split("kvasir-seg")
    pool = select(pairs, train_ids, "PraNet train ids")
    picked = random.Random(0).sample(pool, args.train_size + args.val_size)
    write_split(out / "train_ids.txt", sorted(picked[: args.train_size], key=lambda p: p.id))
    write_split(out / "val_ids.txt", sorted(picked[args.train_size :], key=lambda p: p.id))

    zero = SamSP(ModelConfig(strategy="frozen"))
    probe = SamSP(ModelConfig(adapt_stages=1))  # the shared frozen prefix: stages before the last one
    shared = probe.prefix_stages
    cvc_pairs = find_pairs(SHARED / "cvc-clinicdb-256")
    tests = {
        "Kvasir": load_eval_set(select(pairs, test_ids, "PraNet test ids"), probe),
        "CVC-ClinicDB (unseen)": load_eval_set(select(cvc_pairs, pranet_split("cvc")[1], "CVC test ids"), probe),
    }
    feats = {name: prefix_features(probe, data) for name, data in tests.items()}  # fp32, as the library predicts

    def score(
        model: SamSP, prompt: str = "none", iterations: int | None = None, tag: str = "", only=None, precision="fp32"
    ) -> None:
        """Evaluate on each test set; the summaries land in out/eval/{tag}-{test}/ for `report`."""
        for name, data in tests.items():
            if only and name not in only:
                continue
            reuse = model.prefix_stages >= shared and precision == "fp32"  # bf16: the whole encoder under autocast
            probs = predict_set(
                model,
                data,
                prompt,
                feats[name] if reuse else None,
                shared if reuse else 0,
                iterations=iterations,
                precision=precision,
            )
            evaluate(model, data, out / "eval" / f"{tag}-{name.split()[0]}", tag, probs=probs)

    def done(tag: str) -> bool:  # rows already evaluated are kept, so a stopped benchmark resumes
        return all(_summary(out, tag, t) for t in ("Kvasir", "CVC-ClinicDB"))

    for prompt, _ in ZERO_SHOT:
        if not done(f"zeroshot-{prompt}"):
            score(zero, prompt, tag=f"zeroshot-{prompt}")
    for i, (name, extra) in enumerate(ROWS.items()):
        if (args.rows and name not in args.rows) or done(f"row{i}"):
            continue
        shutil.rmtree(out / f"row{i}", ignore_errors=True)  # a row stopped mid-training starts again
        run = train(
            data=str(kvasir),
            out=out / f"row{i}",
            overrides=[
                f"data.train_ids={out / 'train_ids.txt'}",
                f"data.val_ids={out / 'val_ids.txt'}",
                f"optim.epochs={args.epochs}",
                "loss.dice_first_pass=false",  # the paper's loss: this table reproduces the paper's comparison
                *extra,
            ],
        )
        model = SamSP.from_pretrained(run)
        score(model, tag=f"row{i}")
        if name == "SAM-SP":
            score(model, tag="bf16", precision="bf16")
        if name == "SAM-SP" and args.section == "accuracy":
            for k in range(5):
                score(model, iterations=k, tag=f"iters{k}", only=["Kvasir"])
    report(out, args, (time.perf_counter() - started) / 60)


def _summary(out: Path, tag: str, test: str) -> dict | None:
    path = out / "eval" / f"{tag}-{test}" / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _train_minutes(run: Path) -> float | None:
    path = run / "metrics.csv"
    if not path.is_file():
        return None
    with path.open() as handle:
        return sum(float(r["seconds"]) for r in csv.DictReader(handle)) / 60


def report(out: Path, args: argparse.Namespace, total_minutes: float | None) -> None:
    """Build the tables from the summaries on disk, so a partial or earlier run can be reported again."""
    named = [(f"zero-shot LiteMedSAM, {label}", f"zeroshot-{p}") for p, label in ZERO_SHOT]
    named += [(name, f"row{i}") for i, name in enumerate(ROWS)]
    header = ["row", "Kvasir mDice", "Kvasir mIoU", "Kvasir S / wF / mE / MAE", "CVC mDice", "CVC mIoU"]
    rows, minutes, missing = [], [], []
    for name, tag in named:
        k, c = _summary(out, tag, "Kvasir"), _summary(out, tag, "CVC-ClinicDB")
        if k is None or c is None:
            missing.append(name)
            continue
        k, c = metric_row(k), metric_row(c)
        rows.append([name, k[0], k[1], " / ".join(f"{v:.3f}" for v in k[2:]), c[0], c[1]])
        if tag.startswith("row") and (m := _train_minutes(out / tag)) is not None:
            minutes.append(f"{name}: {m:.1f}")
    rows += [
        ["PraNet (quoted from the literature, not run)", 0.898, "", "", "", ""],
        ["Polyp-PVT (quoted from the literature, not run)", 0.917, "", "", "", ""],
    ]
    title = (
        "## Accuracy: the paper's comparison (LiteMedSAM backbone, no prompt unless the row says so)"
        if args.section == "accuracy"
        else f"## Accuracy with {args.train_size} training images (LiteMedSAM backbone, no prompt unless stated)"
    )
    lines = [
        title,
        "",
        f"Training: {args.train_size} seeded PraNet Kvasir training images (+{args.val_size} for validation), "
        f"{args.epochs} epochs for every fine-tuned row, CPU defaults otherwise (LoRA rank 4 on the last TinyViT "
        "stage, bf16 on this CPU). Evaluation in fp32, as `samsp evaluate` does. "
        "Test: 100 PraNet Kvasir test images; 62 PraNet CVC-ClinicDB test images of the 256x256 "
        "JPEG copy, never trained on (compare CVC numbers only within this table)."
        + (f" Wall time of the whole benchmark: {total_minutes:.0f} min." if total_minutes else ""),
        "",
        markdown_table(header, rows),
        "",
        "Training minutes per row (the machine was shared, so these vary): " + "; ".join(minutes) + ".",
        f"Per-row run folders (config, split ids, curves) under `{out.relative_to(ROOT)}/`.",
    ]
    fp32, bf16 = f"row{list(ROWS).index('SAM-SP')}", "bf16"
    if all(_summary(out, t, d) for t in (fp32, bf16) for d in ("Kvasir", "CVC-ClinicDB")):
        pairs = [(_summary(out, fp32, d)["mDice"], _summary(out, bf16, d)["mDice"]) for d in ("Kvasir", "CVC-ClinicDB")]
        lines.append(
            "The SAM-SP row predicted under bf16 autocast (`--precision bf16`, the whole model): Kvasir mDice "
            f"{pairs[0][1]:.3f} (fp32 {pairs[0][0]:.3f}), CVC {pairs[1][1]:.3f} (fp32 {pairs[1][0]:.3f})."
        )
    if missing:
        lines.append("Not run yet (the benchmark was stopped before them): " + "; ".join(missing) + ".")
    accuracy = "\n".join(lines)
    print(accuracy)
    curve = [(k, _summary(out, f"iters{k}", "Kvasir")) for k in range(5)]
    curve = [[k, s["mDice"], s["mIoU"]] for k, s in curve if s is not None]
    if not args.no_write:
        write_section(args.section, accuracy)
    if curve and not args.no_write and args.section == "accuracy":
        fig, ax = plt.subplots(figsize=(4.5, 3))
        for col, label in ((1, "mDice"), (2, "mIoU")):
            ax.plot([r[0] for r in curve], [r[col] for r in curve], marker="o", label=label)
        ax.set_xlabel("self-prompting iterations at inference")
        ax.set_ylabel("Kvasir test")
        ax.legend()
        fig.tight_layout()
        fig.savefig(ROOT / "benchmarks" / "iterations.png", dpi=100)
        ablation = "\n".join(
            [
                "## Ablation: self-prompting iterations at inference (the SAM-SP row's model, trained with 1)",
                "",
                markdown_table(["iterations", "Kvasir mDice", "Kvasir mIoU"], curve),
                "",
                "![iterations](benchmarks/iterations.png)",
                "",
                "Training strategies and alpha are rows of the accuracy table above (same data and epochs).",
            ]
        )
        print(ablation)
        write_section("ablations", ablation)


if __name__ == "__main__":
    main()
