"""Where the time goes: prompt-free inference split by stage, training speed per strategy, FLOPs vs the machine's peak.

All timings in one run (ratios hold on a noisy shared machine). Real Kvasir-SEG images from ../shared/data.
Writes the "cost" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch
from common import SHARED, markdown_table, write_section
from torch.utils.flop_counter import FlopCounterMode

from samsp import ModelConfig, SamSP
from samsp.data.io import read_pair
from samsp.data.pairs import find_pairs
from samsp.data.prepared import PreparedSet, collate
from samsp.losses import LossConfig, samsp_loss
from samsp.preprocess import postprocess, preprocess


def best_of(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_peak(dtype: torch.dtype, n: int = 2048) -> float:
    """The machine's measured matrix-multiply rate (FLOP/s), the practical ceiling for this model."""
    a = torch.randn(n, n, dtype=dtype)
    seconds = best_of(lambda: a @ a, 3)
    return 2 * n**3 / seconds


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
        t_sp_total = best_of(lambda: model.self_prompt(emb), repeats)
    t_post = best_of(lambda: postprocess(logits0[0], frame), repeats)
    with ctx:
        t_one = best_of(lambda: model.predict(image), repeats)
    rates = {}
    for batch in (1, 2, 4, 8):
        chunk = (images * 8)[:batch]
        with ctx:
            seconds = best_of(lambda chunk=chunk, batch=batch: model.predict_batch(chunk, batch), 1)
        rates[batch] = batch / seconds
    with FlopCounterMode(display=False) as counter:
        model.self_prompt(model.run_encoder(x))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    pairs = find_pairs(SHARED / "kvasir-seg")[:8]
    images = [read_pair(p.image, p.mask)[0] for p in pairs]
    model = SamSP(ModelConfig(strategy="frozen")).eval().requires_grad_(False)  # inference only

    peak32, peak16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    results = {}
    for autocast in (False, True):
        results[autocast] = inference_breakdown(model, images, args.repeats, autocast)
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
            f"{flops / whole[1] / peak16:.0%} of the bf16 peak (where the rest goes is not yet profiled).",
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
        ]
    )
    print(body)
    if not args.no_write:
        write_section("cost", body)


if __name__ == "__main__":
    main()
