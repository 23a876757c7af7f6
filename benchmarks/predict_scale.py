"""`samsp predict` at scale: images/s with one and two processes, and memory over a 20,000-image run.

    python benchmarks/predict_scale.py --images 64 --archive 20000

1. Throughput (LiteMedSAM, Kvasir-SEG test images, masks and overlays written): the in-process `Predictor` with the
   frozen prefix in PyTorch and in OpenVINO, with and without test-time flips (decoding and writing excluded),
   `samsp predict` in one process, and `samsp predict` under torchrun with two processes (one thread each), all in
   one run on this machine.
2. Memory: `samsp predict --no-overlay` over an archive of ARCHIVE images (CVC-ClinicDB frames linked under new
   names) with the tiny backbone, so the pipeline, not the network, is what runs; the resident memory of the process
   is sampled every second from start to end.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from common import SHARED, markdown_table, write_section

from samsp import ModelConfig, Predictor, SamSP
from samsp.data.io import read_image
from samsp.data.named import pranet_split
from samsp.data.pairs import find_pairs


def rss_mib(pid: int) -> float:
    """Resident memory of a process and its children (MiB), from /proc."""
    total = 0.0
    for p in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            pass
    return total


def _children(pid: int) -> list[int]:
    try:
        kids = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return kids + [g for k in kids for g in _children(k)]


def run_sampled(command: list[str], env: dict) -> tuple[float, list[tuple[float, float]]]:
    """Run a command; return its wall time and (seconds, RSS MiB) samples taken every second."""
    started = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    samples: list[tuple[float, float]] = []

    def sample() -> None:
        while child.poll() is None:
            samples.append((time.perf_counter() - started, rss_mib(child.pid)))
            time.sleep(1.0)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    _, err = child.communicate()
    watcher.join()
    if child.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{err[-3000:]}")
    return time.perf_counter() - started, samples


def predict_cli(model: Path, inputs: Path, out: Path, *extra: str, processes: int = 1) -> list[str]:
    args = ["-m", "samsp.cli", "predict", "--model", str(model), str(inputs), "--out", str(out), *extra]
    if processes == 1:
        return [sys.executable, *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), *args]


def throughput(work: Path, n: int) -> list[list]:
    kvasir = {p.id: p for p in find_pairs(SHARED / "kvasir-seg")}
    test_ids = pranet_split("kvasir-seg")[1][:n]
    folder = work / "kvasir"
    folder.mkdir()
    for i in test_ids:
        (folder / kvasir[i].image.name).symlink_to(kvasir[i].image)
    torch.manual_seed(0)
    # the shape the CPU default trains: neck and decoder, the encoder body frozen (a prefix to compile)
    model_dir = SamSP(ModelConfig(strategy="full", adapt_stages=0)).save_pretrained(work / "litemedsam")
    model = SamSP.from_pretrained(model_dir)
    images = [read_image(p) for p in sorted(folder.iterdir())]
    rows = []
    for flips in (False, True):  # test-time flips encode three views of each image
        for engine in ("torch", "openvino"):  # what computes the frozen prefix (`samsp predict` chooses by count)
            predictor = Predictor(model, flips=flips, prefix_engine=engine)  # compiles the graph outside the timing
            predictor.predict_batch(images[:4])  # warm-up
            started = time.perf_counter()
            predictor.predict_batch(images)
            loop_s = time.perf_counter() - started
            how = f"`Predictor.predict_batch`, batches of 4, frozen prefix in {engine}"
            how += f"{', test-time flips' if flips else ''}, in process (no decoding or writing)"
            rows.append([how, 1, f"{n / loop_s:.2f}", "", ""])
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for processes in (1, 2):
        threads = str(max(1, (os.cpu_count() or 2) // processes))
        wall, samples = run_sampled(
            predict_cli(model_dir, folder, work / f"out{processes}", processes=processes),
            {**env, "OMP_NUM_THREADS": threads},
        )
        peak = max(m for _, m in samples) if samples else float("nan")
        rows.append(
            [
                f"`samsp predict`, {processes} process(es) x {threads} thread(s)",
                processes,
                f"{n / wall:.2f}",
                f"{wall:.0f}",
                f"{peak:.0f}",
            ]
        )
    return rows


def archive(work: Path, n: int) -> tuple[list[list], str]:
    frames = sorted((SHARED / "cvc-clinicdb-256" / "images").iterdir())
    folder = work / "archive"
    folder.mkdir()
    for i in range(n):
        source = frames[i % len(frames)]
        (folder / f"frame_{i:06d}{source.suffix}").symlink_to(source)
    torch.manual_seed(0)
    model_dir = SamSP(ModelConfig(backbone="tiny")).save_pretrained(work / "tiny")
    wall, samples = run_sampled(
        predict_cli(model_dir, folder, work / "archive-out", "--no-overlay"), {**os.environ, "OMP_NUM_THREADS": "2"}
    )
    written = len(list((work / "archive-out" / "masks").iterdir()))
    rows_csv = len((work / "archive-out" / "predictions.csv").read_text().splitlines()) - 1
    marks = []
    for fraction in (0.1, 0.25, 0.5, 0.75, 1.0):
        t, m = samples[min(len(samples) - 1, int(fraction * (len(samples) - 1)))]
        marks.append([f"{fraction:.0%} of the run ({t:.0f} s)", f"{m:.0f}"])
    marks.append(["peak", f"{max(m for _, m in samples):.0f}"])
    note = f"{written} masks and {rows_csv} CSV rows written in {wall / 60:.1f} min ({n / wall:.0f} images/s)"
    return marks, note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64, help="Kvasir-SEG test images for the throughput rows")
    parser.add_argument("--archive", type=int, default=20000, help="images in the memory run (0: no memory run)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        speed = throughput(work, args.images)
        memory, note = archive(work, args.archive) if args.archive else ([], "")
    body = "\n".join(
        [
            "## Prediction at scale (`samsp predict`, CPU)",
            "",
            f"Throughput: LiteMedSAM as the CPU default trains it (neck and decoder; the encoder body frozen) on "
            f"{args.images} PraNet Kvasir-SEG test images (about 600x530), fp32, masks and "
            "overlays written, one run; wall time includes starting Python and loading the model (and, for "
            "`samsp predict` given 40 images or more on a CPU, compiling the frozen prefix for OpenVINO).",
            "",
            markdown_table(["how", "processes", "images/s", "wall s", "peak RSS MiB"], speed),
        ]
        + (
            [
                "",
                f"Memory over an archive of {args.archive} images (CVC-ClinicDB 256x256 frames linked under new "
                f"names), tiny backbone, masks only, one process: {note}. Resident memory (MiB, process and children) "
                "sampled every second:",
                "",
                markdown_table(["when", "RSS MiB"], memory),
            ]
            if memory
            else []
        )
    )
    print(body)
    if not args.no_write:
        write_section("predict-scale", body)


if __name__ == "__main__":
    main()
