"""Training across processes on the CPU (gloo), launched as on a cluster: torchrun and accelerate launch.

Two processes with batch 1 each see, step by step, the same images as one process with batch 2 (each epoch's
shuffled order is dealt out by rank), and their gradients are averaged, so the weights must agree with the
one-process run up to float summation order.
"""

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import child_env, make_dataset
from safetensors.torch import load_file

from samsp import train

SETTINGS = [
    "model.backbone=tiny",
    "data.val_fraction=0.25",
    "runtime.threads=1",
    "runtime.mixed_precision=no",
    "optim.epochs=6",
]
# max |difference| of any weight: gradients are summed across processes in another order. An AVX2 CPU (no AVX-512)
# measured 3.5e-5 after 36 steps, an AVX-512 one less than 2e-5; a wrong global batch or gradient scale moves
# weights by the order of the learning rate (3e-4) per step
TOLERANCE = 1e-4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LAUNCHERS = {
    "torchrun": lambda: [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
    "accelerate launch": lambda: [
        sys.executable,
        *("-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"),
        *("--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port())),
    ],
}


def env() -> dict:
    return child_env(MASTER_ADDR="127.0.0.1")


def two_processes(launcher: str, *args: str, cli: tuple[str, ...] = ("-m", "samsp.cli")) -> list[str]:
    return [*LAUNCHERS[launcher](), *cli, "train", *args]


def reporting_cli(folder: Path, prelude: str = "") -> tuple[str]:
    """samsp's command line as a script that prints, once `main` returns, whether the process group is still up: a
    gloo group left to the interpreter's exit can abort the process (pytorch/pytorch#190489)."""
    script = folder / "reporting_cli.py"
    script.write_text(
        f"import os, sys\n{prelude}from samsp.cli import main\ncode = main()\nimport torch.distributed as dist\n"
        "print('process group: ' + ('still up' if dist.is_initialized() else 'ended'))\nsys.exit(code)\n"
    )
    return (str(script),)


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    settings = [*SETTINGS, "optim.batch_size=1", *extra]
    return ["--data", str(data), "--out", str(out), *(a for s in settings for a in ("--set", s))]


def max_difference(a: Path, b: Path) -> float:
    wa, wb = load_file(str(a / "last" / "weights.safetensors")), load_file(str(b / "last" / "weights.safetensors"))
    assert wa.keys() == wb.keys()
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data"), n=8)


@pytest.fixture(scope="module")
def one_process(dataset, tmp_path_factory):
    """The reference: one process, batch 2."""
    return train(
        data=str(dataset), out=tmp_path_factory.mktemp("ref") / "run", overrides=[*SETTINGS, "optim.batch_size=2"]
    )


@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_two_processes_train_like_one_with_the_same_global_batch(launcher, dataset, one_process, tmp_path):
    run = tmp_path / "run"
    done = subprocess.run(
        two_processes(launcher, *train_args(dataset, run)), env=env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    log = (run / "train.log").read_text()
    assert "2 processes (MULTI_CPU): global batch 2" in log
    for epoch in range(1, 7):  # rank 0 alone logs: every epoch once
        assert log.count(f"epoch {epoch}/6 ") == 1
    assert max_difference(one_process, run) < TOLERANCE
    ours = (run / "metrics.csv").read_text().splitlines()
    reference = (one_process / "metrics.csv").read_text().splitlines()
    assert len(ours) == len(reference) == 7
    # validation is split between the processes and summed: the same Dice as one process scoring all of it
    col = ours[0].split(",").index("val_dice")
    for a, b in zip(ours[1:], reference[1:], strict=True):
        assert abs(float(a.split(",")[col]) - float(b.split(",")[col])) < 1e-4
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in one_process.iterdir())


def test_a_preempted_two_process_run_resumes_under_two_processes(dataset, one_process, tmp_path):
    run = tmp_path / "run"
    cli = reporting_cli(tmp_path)
    command = two_processes("torchrun", *train_args(dataset, run, "runtime.checkpoint_every_steps=1"), cli=cli)
    child = subprocess.Popen(command, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and child.poll() is None:
        if (run / "train.log").is_file() and "epoch 2/6" in (run / "train.log").read_text():
            break
        time.sleep(0.05)
    assert child.poll() is None, "the run ended before the signal"
    child.send_signal(signal.SIGTERM)  # torchrun passes it on to every process, as SLURM's scancel does
    out, err = child.communicate(timeout=120)
    assert err.count("samsp: stopped by SIGTERM") == 2, err[-3000:]  # both processes stop after the same step
    assert out.count("process group: ended") == 2
    assert "Connection closed by peer" not in err
    state = torch.load(run / "last" / "training_state.pt", weights_only=True)
    assert 2 <= state["epoch"] < 6
    resumed = subprocess.run(
        two_processes("torchrun", "--resume", str(run)), env=env(), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed after epoch" in (run / "train.log").read_text()
    assert max_difference(one_process, run) < TOLERANCE


def test_processes_that_time_their_steps_differently_follow_one_budget_plan(dataset, tmp_path):
    """Each process times its own steps; were each to plan from its own clock, one would stop training while the
    other waits for it in a collective. Scripted: rank 0 times 1 s per step, rank 1 2 s; 3 steps per process and
    epoch, a 5.5 s budget: rank 0's plan is 4 steps, rank 1's would be 2. Both must follow rank 0's."""
    slow_rank = "from samsp.training.trainer import Trainer\n"
    slow_rank += "Trainer.step_seconds = lambda self, batches: 1.0 + int(os.environ['RANK'])\n"
    run = tmp_path / "run"
    budget = ["optim.epochs=auto", f"optim.time_budget_min={5.5 / 60}"]
    command = two_processes("torchrun", *train_args(dataset, run, *budget), cli=reporting_cli(tmp_path, slow_rank))
    done = subprocess.run(command, env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("process group: ended") == 2  # each process left the group before exiting
    assert "1.33 epochs (4 steps, 3 per epoch) fit the" in (run / "train.log").read_text()
    assert len((run / "metrics.csv").read_text().splitlines()) == 3  # the header and 2 epochs, the second of 1 step
