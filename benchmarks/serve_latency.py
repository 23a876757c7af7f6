"""`samsp serve` on a CPU: start-up time and the latency of one upload at a time, with the frozen encoder prefix in
PyTorch and compiled by OpenVINO (`--prefix-engine torch` / `auto`), both servers started in one run.

    python benchmarks/serve_latency.py --images 16

LiteMedSAM with LoRA on its last encoder stage (the CPU recipe with fixed epochs; the other 4 of 6 stages are the
frozen prefix to compile), saved untrained (speed does not depend on the weights). Each server is its own
`samsp serve` process on 127.0.0.1; start-up is the time until /api/health answers (loading the model, and for
OpenVINO compiling the prefix); then the PraNet Kvasir-SEG test images are posted one at a time (after one warm-up
request), and each request's wall time is recorded, decoding and encoding the answer included.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from common import SHARED, markdown_table, write_section

from samsp import ModelConfig, SamSP
from samsp.data.named import pranet_split
from samsp.data.pairs import find_pairs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def measure(model_dir: Path, prefix_engine: str, uploads: list[Path]) -> list:
    """Start a server, time its start-up and each upload; one table row."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "samsp.cli", "serve", "--model", str(model_dir), "--port", str(port)]
    command += ["--prefix-engine", prefix_engine]
    started = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            while True:
                if server.poll() is not None:
                    log.seek(0)
                    sys.exit(f"samsp serve stopped: {log.read().decode()[-2000:]}")
                try:
                    if httpx.get(f"{url}/api/health", timeout=5).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            startup = time.perf_counter() - started
            engine = httpx.get(f"{url}/api/info", timeout=30).json()["engine"]["prefix_engine"]
            seconds = []
            for i, path in enumerate([uploads[0], *uploads]):  # the first is a warm-up
                t = time.perf_counter()
                answer = httpx.post(f"{url}/api/predict", files={"file": (path.name, path.read_bytes())}, timeout=300)
                answer.raise_for_status()
                if i:
                    seconds.append(time.perf_counter() - t)
        finally:
            server.terminate()
            server.wait(60)
    p50, p95 = np.percentile(seconds, [50, 95])
    return [f"`--prefix-engine {prefix_engine}` (ran: {engine})", f"{startup:.1f}", f"{p50:.2f}", f"{p95:.2f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16, help="Kvasir-SEG test images, posted one at a time")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    kvasir = {p.id: p for p in find_pairs(SHARED / "kvasir-seg")}
    uploads = [kvasir[i].image for i in pranet_split("kvasir-seg")[1][: args.images]]
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        model_dir = SamSP(ModelConfig(adapt_stages=1)).save_pretrained(Path(tmp) / "litemedsam")
        rows = [measure(model_dir, engine, uploads) for engine in ("torch", "auto")]
    ratio = float(rows[0][2]) / float(rows[1][2])
    body = "\n".join(
        [
            "## Serving one upload at a time (`samsp serve`, CPU)",
            "",
            f"LiteMedSAM with LoRA on its last encoder stage (4 of 6 stages frozen: the prefix), fp32, "
            f"{args.images} PraNet Kvasir-SEG test images (about 600x530) posted one at a time after one warm-up, "
            f"{os.cpu_count()} CPU threads; both servers in one run. Start-up: until /api/health answers.",
            "",
            markdown_table(["server", "start-up s", "latency p50 s", "latency p95 s"], rows),
            "",
            f"Median latency, PyTorch prefix over compiled prefix: {ratio:.2f}x.",
        ]
    )
    print(body)
    if not args.no_write:
        write_section("serve-latency", body)


if __name__ == "__main__":
    main()
