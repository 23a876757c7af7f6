"""Where the time goes: prompt-free inference split by stage, training speed per strategy, FLOPs vs the machine's peak.

All timings in one run (ratios hold on a noisy shared machine). Real Kvasir-SEG images from ../shared/data.
Per-strategy epochs run `samsp train` in a child process each, so each one's peak memory is its own.
Writes the "cost" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import csv
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import SHARED, best_of, markdown_table, matmul_peak, write_section
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from samsp import ModelConfig, SamSP
from samsp.config import LossConfig
from samsp.data.io import read_pair
from samsp.data.pairs import find_pairs
from samsp.data.prepared import PreparedSet, collate
from samsp.data.splits import write_split
from samsp.inference.preprocess import postprocess, preprocess
from samsp.modeling.losses import samsp_loss


@torch.no_grad()
def inference_breakdown(model: SamSP, images: list[np.ndarray], repeats: int, autocast: bool) -> dict:
    ctx = torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast)
    image = images[0]
    t_pre = best_of(lambda: preprocess(image, model.backbone), repeats)
    x, frame = preprocess(image, model.backbone)
    x = x[None]
    with ctx:
        t_enc = best_of(lambda: model.run_encoder(x), repeats)
        emb = model.run_encoder(x)
        t_pass0 = best_of(lambda: model.decode(emb, None), repeats)
        logits0, _ = model.decode(emb, None)
        box = torch.tensor([[[40.0, 50.0, 200.0, 180.0]]])
        t_pass1 = best_of(lambda: model.decode(emb, box), repeats)
        t_sp_total = best_of(lambda: model.decoder_passes(emb), repeats)
    t_post = best_of(lambda: postprocess(logits0[0], frame), repeats)
    precision = "bf16" if autocast else "fp32"  # predict() sets its own precision
    t_one = best_of(lambda: model.predict(image, precision=precision), repeats)
    rates = {}
    for batch in (1, 2, 4, 8):
        chunk = (images * 8)[:batch]
        seconds = best_of(lambda chunk=chunk, batch=batch: model.predict_batch(chunk, batch, precision=precision), 1)
        rates[batch] = batch / seconds
    with FlopCounterMode(display=False) as counter:
        model.decoder_passes(model.run_encoder(x))
    return {
        "preprocess": t_pre,
        "encoder": t_enc,
        "decoder pass 0 (no prompt)": t_pass0,
        "decoder pass 1 (box)": t_pass1,
        "all passes incl. box derivation": t_sp_total,
        "postprocess": t_post,
        "predict() end to end": t_one,
        "rates": rates,
        "flops": counter.get_total_flops(),
    }


def training_speed(strategy: str, adapt: int | None, data: PreparedSet, batch_size: int, autocast: bool) -> float:
    model = SamSP(ModelConfig(strategy=strategy, adapt_stages=adapt))
    model.train()
    batch = collate([data.item(i) for i in range(batch_size)])
    ctx = torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast)
    with ctx:
        features = model.encode_prefix(batch["image"]) if model.prefix_stages else None
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step():
        inputs = {"features": features} if features is not None else {"images": batch["image"]}
        with ctx:
            out = model(**inputs, valid_hw=batch["valid_hw"])
            loss, _ = samsp_loss(out.logits, batch["mask"], LossConfig())
        loss.backward()
        opt.step()
        opt.zero_grad()

    return batch_size / best_of(step, 1)


STRATEGIES = (  # label, model overrides for `samsp train`
    ("LoRA, last stage (CPU default)", ["model.strategy=lora", "model.adapt_stages=1"]),
    ("frozen encoder", ["model.strategy=frozen"]),
    ("full fine-tuning, last stage", ["model.strategy=full", "model.adapt_stages=1"]),
    ("LoRA, every stage", ["model.strategy=lora", "model.adapt_stages=null"]),
)


def epoch_cost(pairs: list, overrides: list[str], work: Path, epochs: int = 2) -> dict:
    """Run `samsp train` in a child process; its caching time, last epoch's time and peak resident memory."""
    n_val = max(2, len(pairs) // 6)
    write_split(work / "train.txt", pairs[n_val:])
    write_split(work / "val.txt", pairs[:n_val])
    cmd = [str(Path(sys.executable).with_name("samsp")), "train", "--data", str(SHARED / "kvasir-seg")]
    cmd += ["--out", str(work / "run")]
    for item in (f"data.train_ids={work / 'train.txt'}", f"data.val_ids={work / 'val.txt'}", f"optim.epochs={epochs}"):
        cmd += ["--set", item]
    for item in overrides:
        cmd += ["--set", item]
    with open(work / "stdout.txt", "w") as log:
        child = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        peak_kib = 0
        while child.poll() is None:  # ru_maxrss would carry this process's own peak across fork + exec
            peak_kib = max(peak_kib, _vm_hwm_kib(child.pid))
            time.sleep(0.2)
        status = child.returncode
    text = (work / "stdout.txt").read_text()
    if status != 0:
        raise RuntimeError(f"samsp train failed ({cmd}):\n{text[-2000:]}")
    with (work / "run" / "metrics.csv").open() as handle:
        last = list(csv.DictReader(handle))[-1]
    cached = re.search(r"view\(s\) in (\d+) s", text)
    return {
        "train_images": len(pairs) - n_val,
        "val_images": n_val,
        "cache_s": float(cached.group(1)) if cached else 0.0,
        "epoch_s": float(last["seconds"]),
        "peak_rss_gib": peak_kib / 2**20,
    }


def _vm_hwm_kib(pid: int) -> int:
    """The process's peak resident set so far (VmHWM, reset by exec), in KiB; 0 once it has gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def training_step_phases(data: PreparedSet, batch_size: int, repeats: int = 3) -> tuple[dict, list]:
    """The default CPU training step (LoRA on the last stage, cached prefix, bf16) timed by phase, then profiled."""
    model = SamSP(ModelConfig(adapt_stages=1))
    batch = collate([data.item(i) for i in range(batch_size)])
    ctx = torch.autocast("cpu", dtype=torch.bfloat16)
    with ctx:
        features = model.encode_prefix(batch["image"])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    phases: dict[str, list[float]] = {}

    def timed(name, fn):
        start = time.perf_counter()
        result = fn()
        phases.setdefault(name, []).append(time.perf_counter() - start)
        return result

    def step():
        with ctx:
            emb = timed("encoder: adapted stage + neck", lambda: model.run_encoder(features, model.prefix_stages))
            out = timed("decoder: both passes + box", lambda: model.decoder_passes(emb, batch["valid_hw"]))
            loss, _ = timed("loss", lambda: samsp_loss(out.logits, batch["mask"], LossConfig()))
        timed("backward", loss.backward)
        timed("optimizer step", lambda: (opt.step(), opt.zero_grad()))

    step()
    phases.clear()
    for _ in range(repeats):
        step()
    phase_ms = {k: 1000 * min(v) / batch_size for k, v in phases.items()}
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return phase_ms, top_ops(prof)


@torch.no_grad()
def inference_profile(model: SamSP, image: np.ndarray) -> list:
    model.predict(image)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        model.predict(image)
    return top_ops(prof)


def top_ops(prof, n: int = 8) -> list:
    """The operators with the most self time (time not spent in sub-operators), as a share of the total."""
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return [[e.key, round(e.self_cpu_time_total / 1000, 1), f"{e.self_cpu_time_total / total:.0%}"] for e in events[:n]]


def training_memory(pairs: list, no_write: bool) -> None:
    """Peak resident memory of a whole `samsp train` process per strategy (one epoch, CPU defaults)."""
    rows = []
    for label, overrides in STRATEGIES:
        with tempfile.TemporaryDirectory() as work:
            cost = epoch_cost(pairs, overrides, Path(work), epochs=1)
        rows.append([label, round(cost["peak_rss_gib"], 2)])
        print(label, cost)
    body = "\n".join(
        [
            "## Training memory per strategy (LiteMedSAM, CPU)",
            "",
            f"Peak resident memory (VmHWM) of a whole `samsp train` process: {len(pairs)} Kvasir-SEG images, one "
            "epoch, batch 4, CPU defaults (bf16 here). It includes Python, torch, the model, the decoded images and "
            "the cached prefix; memory does not depend on the machine's load, so this ran beside other work.",
            "",
            markdown_table(["strategy", "peak RSS GiB"], rows),
        ]
    )
    print(body)
    if not no_write:
        write_section("training-memory", body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epoch-images", type=int, default=48, help="images per `samsp train` epoch run")
    parser.add_argument(
        "--memory-only",
        action="store_true",
        help="only the peak memory of `samsp train` per strategy (independent of machine load)",
    )
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    all_pairs = find_pairs(SHARED / "kvasir-seg")
    epoch_pairs = all_pairs[8 : 8 + args.epoch_images]  # disjoint from the 8 inference images
    if args.memory_only:
        training_memory(epoch_pairs, args.no_write)
        return
    pairs = all_pairs[:8]
    images = [read_pair(p.image, p.mask)[0] for p in pairs]
    model = SamSP(ModelConfig(strategy="frozen")).eval().requires_grad_(False)  # inference only

    peak32, peak16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    results = {}
    for autocast in (False, True):
        results[autocast] = inference_breakdown(model, images, args.repeats, autocast)
    infer_ops = inference_profile(model, images[0])
    rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

    rows = []
    for key in (
        "preprocess",
        "encoder",
        "decoder pass 0 (no prompt)",
        "decoder pass 1 (box)",
        "all passes incl. box derivation",
        "postprocess",
        "predict() end to end",
    ):
        rows.append([key, round(results[False][key] * 1000), round(results[True][key] * 1000)])
    r32, r16 = results[False], results[True]
    overhead = [(r["all passes incl. box derivation"]) / r["decoder pass 0 (no prompt)"] for r in (r32, r16)]
    single = [r["encoder"] + r["decoder pass 0 (no prompt)"] for r in (r32, r16)]
    whole = [r["encoder"] + r["all passes incl. box derivation"] for r in (r32, r16)]
    flops = r32["flops"]
    rate_rows = [[b, round(r32["rates"][b], 2), round(r16["rates"][b], 2)] for b in r32["rates"]]

    data = PreparedSet(pairs[:4], model.backbone)
    train_rows = []
    for label, strategy, adapt in (
        ("LoRA, last stage (CPU default)", "lora", 1),
        ("frozen encoder", "frozen", 0),
        ("full fine-tuning, last stage", "full", 1),
        ("LoRA, every stage", "lora", None),
    ):
        speeds = [training_speed(strategy, adapt, data, 4, ac) for ac in (False, True)]
        train_rows.append([label, round(speeds[0], 2), round(speeds[1], 2)])
        print(label, speeds)
    phase_ms, train_ops = training_step_phases(data, 4)
    phase_rows = [[k, round(v), f"{v / sum(phase_ms.values()):.0%}"] for k, v in phase_ms.items()]

    epoch_rows = []
    for label, overrides in STRATEGIES:
        with tempfile.TemporaryDirectory() as work:
            cost = epoch_cost(epoch_pairs, overrides, Path(work))
        per_image = cost["epoch_s"] / (cost["train_images"] + cost["val_images"] / 3)
        epoch_rows.append(
            [
                label,
                round(cost["cache_s"]),
                round(cost["epoch_s"]),
                round(per_image * 900 / 60, 1),
                round(cost["peak_rss_gib"], 2),
            ]
        )
        print(label, cost)
    n_train, n_val = cost["train_images"], cost["val_images"]

    body = "\n".join(
        [
            "## Cost (LiteMedSAM, 256 px input, Kvasir-SEG images, CPU)",
            "",
            "Prompt-free inference, one image, milliseconds (best of repeats):",
            "",
            markdown_table(["stage", "fp32 ms", "bf16 autocast ms"], rows),
            "",
            f"- Self-prompting passes cost {overhead[0]:.2f}x (fp32) / {overhead[1]:.2f}x (bf16) a single no-prompt "
            f"decoder pass; with the encoder, SAM-SP inference costs {whole[0] / single[0]:.2f}x (fp32) / "
            f"{whole[1] / single[1]:.2f}x (bf16) a one-pass model: the encoder dominates.",
            f"- Model FLOPs per image (encoder + both passes): {flops / 1e9:.1f} GFLOP.",
            f"- Machine matrix-multiply peak measured here: {peak32 / 1e9:.0f} GFLOP/s fp32, "
            f"{peak16 / 1e9:.0f} GFLOP/s bf16. Inference reaches {flops / whole[0] / peak32:.0%} of the fp32 peak and "
            f"{flops / whole[1] / peak16:.0%} of the bf16 peak. The profile below says where the rest goes.",
            f"- Peak resident memory of this benchmark process: {rss_gib:.1f} GiB.",
            "",
            "Images per second through `predict_batch` (preprocessing to postprocessing):",
            "",
            markdown_table(["batch", "fp32 img/s", "bf16 img/s"], rate_rows),
            "",
            "Training, images per second (batch 4, two self-prompting passes, loss and optimiser step; the frozen "
            "prefix cached, as the trainer does):",
            "",
            markdown_table(["strategy", "fp32 img/s", "bf16 img/s"], train_rows),
            "",
            f"Epochs as a user runs them: `samsp train` in a child process per strategy on {args.epoch_images} "
            f"Kvasir-SEG images ({n_train} train, {n_val} validation), 2 "
            "epochs, CPU defaults (bf16 here). Caching is the one-off encoding of the frozen prefix; the epoch time "
            "(the second epoch, validation included) is scaled to the 900 PraNet training images; peak memory is "
            "the child's whole resident set (Python, torch, model, data, cache):",
            "",
            markdown_table(["strategy", "caching s", "epoch s", "min per 900-image epoch", "peak RSS GiB"], epoch_rows),
            "",
            "Where a default training step's time goes (LoRA on the last stage, cached prefix, bf16, batch 4; "
            "ms per image, best of 3):",
            "",
            markdown_table(["phase", "ms per image", "share"], phase_rows),
            "",
            "Top operators by self time in that step (torch.profiler, one step of 4 images):",
            "",
            markdown_table(["operator", "ms", "share"], train_ops),
            "",
            "Top operators by self time in `predict()` of one image in fp32 (torch.profiler):",
            "",
            markdown_table(["operator", "ms", "share"], infer_ops),
        ]
    )
    print(body)
    if not args.no_write:
        write_section("cost", body)


if __name__ == "__main__":
    main()
