"""Faults a cluster has: kill -9, preemption signals, corrupt checkpoints, a full disk; and logs sent to a file."""

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import child_env, kill_when_busy, make_dataset
from safetensors.torch import load_file

from samsp import Trainer, train
from samsp.errors import SamspError

FAST = [
    "model.backbone=tiny",
    "optim.batch_size=2",
    "data.val_fraction=0.25",
    "runtime.threads=1",
    "runtime.mixed_precision=no",
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data"), n=8)


def weights(run: Path) -> dict:
    return load_file(str(run / "last" / "weights.safetensors"))


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "samsp.cli", *args]


def training_started(run: Path) -> bool:
    log = run / "train.log"
    return log.is_file() and "trainable parameters" in log.read_text()


def wait_for_training(run: Path, child: subprocess.Popen, timeout: float = 120) -> bool:
    """Until the child logs that training starts (True), or it ends first (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and child.poll() is None:
        if training_started(run):
            return True
        time.sleep(0.05)
    return False


def train_until_interrupted(dataset: Path, out: Path, settings: list[str], monkeypatch, at_step: int) -> None:
    """Train until the `at_step`-th training step, which raises KeyboardInterrupt before it runs."""
    real_step, calls = Trainer.train_step, {"n": 0}

    def die_at_step(self, batch):
        calls["n"] += 1
        if calls["n"] == at_step:
            raise KeyboardInterrupt
        return real_step(self, batch)

    monkeypatch.setattr(Trainer, "train_step", die_at_step)
    with pytest.raises(KeyboardInterrupt):
        train(data=str(dataset), out=out, overrides=settings)
    monkeypatch.setattr(Trainer, "train_step", real_step)


@pytest.mark.parametrize("extra", [[], ["optim.ema=0.9"]], ids=["trained-weights", "moving-average"])
def test_a_mid_epoch_checkpoint_resumes_to_the_same_weights(dataset, tmp_path, monkeypatch, extra):
    settings = [*FAST, "optim.epochs=2", "runtime.checkpoint_every_steps=1", *extra]
    straight = train(data=str(dataset), out=tmp_path / "straight", overrides=settings)
    # epoch 2, step 2 (3 steps per epoch): after the state saved at step 1 of epoch 2
    train_until_interrupted(dataset, tmp_path / "cut", settings, monkeypatch, at_step=5)
    state = torch.load(tmp_path / "cut" / "last" / "training_state.pt", weights_only=True)
    assert (state["epoch"], state["step"]) == (1, 1)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    torn = tmp_path / "cut" / "last" / f".training_state.pt.tmp-{int(dead.stdout)}"  # a writer killed mid-save
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # another rank, still at work
    live = tmp_path / "cut" / "last" / f".rank1.safetensors.tmp-{writer.pid}"
    torn.write_bytes(b"half a checkpoint")
    live.write_bytes(b"being written")
    try:
        resumed = train(resume=tmp_path / "cut")
    finally:
        writer.kill()
        writer.wait()
    a, b = weights(straight), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a), "a resumed run must equal a straight one bit for bit"
    assert not torn.exists() and live.exists(), "the dead writer's temporary goes, the live one's stays"


def test_a_last_epoch_cut_short_by_max_steps_anneals_and_resumes_to_the_same_weights(dataset, tmp_path, monkeypatch):
    """3 steps per epoch, 5 in all: the second epoch stops after 2 steps, where the schedule reaches zero; a run cut
    inside that partial epoch resumes to the straight run's weights."""
    settings = [*FAST, "optim.epochs=2", "optim.max_steps=5", "runtime.checkpoint_every_steps=1"]
    straight = train(data=str(dataset), out=tmp_path / "straight", overrides=settings)
    rows = (straight / "metrics.csv").read_text().splitlines()
    header, last = rows[0].split(","), rows[-1].split(",")
    assert len(rows) == 3 and float(last[header.index("lr")]) == 0.0  # 2 epochs, the learning rate annealed to 0
    state = torch.load(straight / "last" / "training_state.pt", weights_only=True)
    assert state["scheduler"]["last_epoch"] == 5
    # epoch 2, step 2: after the state saved at step 1 of epoch 2
    train_until_interrupted(dataset, tmp_path / "cut", settings, monkeypatch, at_step=5)
    resumed = train(resume=tmp_path / "cut")
    a, b = weights(straight), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a), "a resumed run must equal a straight one bit for bit"
    assert (resumed / "metrics.csv").read_text().count("\n") == 3


def test_kill_9_at_ten_random_moments_then_resume_gives_the_uninterrupted_weights(dataset, tmp_path):
    settings = [*FAST, "optim.epochs=3", "runtime.checkpoint_every_steps=1"]
    args = ["train", "--data", str(dataset)] + [a for s in settings for a in ("--set", s)]
    reference = tmp_path / "reference"
    subprocess.run(cli(*args, "--out", str(reference)), env=child_env(), check=True, capture_output=True)
    run, rng, kills = tmp_path / "killed", random.Random(7), 0
    while kills < 10:
        resumable = (run / "last" / "training_state.pt").is_file()
        command = cli("train", "--resume", str(run)) if resumable else cli(*args, "--out", str(run))
        child = subprocess.Popen(command, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if not kill_when_busy(child, lambda: training_started(run), rng.uniform(0.0, 1.5)):
            break  # it finished before the next kill
        kills += 1
        if (run / "last" / "training_state.pt").is_file():  # never a torn checkpoint, whenever the kill came
            torch.load(run / "last" / "training_state.pt", weights_only=True)
    assert kills >= 5, f"only {kills} kills landed inside training"
    resumable = (run / "last" / "training_state.pt").is_file()  # on a slow machine every kill may precede step 1
    command = cli("train", "--resume", str(run)) if resumable else cli(*args, "--out", str(run))
    done = subprocess.run(command, env=child_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    a, b = weights(reference), weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a), "killed and resumed runs must end with the same weights"
    assert not list(run.rglob("*.tmp-*")) and not list(run.rglob("*.part"))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_preemption_signals_save_a_resumable_checkpoint_and_exit_cleanly(dataset, tmp_path, sig):
    run = tmp_path / "run"
    settings = [*FAST, "optim.epochs=40", "runtime.checkpoint_every_min=0"]
    args = ["train", "--data", str(dataset), "--out", str(run)] + [a for s in settings for a in ("--set", s)]
    child = subprocess.Popen(cli(*args), env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert wait_for_training(run, child)
    time.sleep(1.0)
    child.send_signal(sig)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 128 + sig.value
    assert f"stopped by {sig.name}" in err and "samsp train --resume" in err and "Traceback" not in err
    state = torch.load(run / "last" / "training_state.pt", weights_only=True)
    assert state["epoch"] < 40


def test_a_corrupt_training_state_is_one_line_naming_the_file(dataset, tmp_path, capsys):
    from samsp.cli import main

    run = train(data=str(dataset), out=tmp_path / "run", overrides=[*FAST, "optim.epochs=1"])
    state = run / "last" / "training_state.pt"
    state.write_bytes(state.read_bytes()[:100])  # truncated
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"samsp: error: {state}: cannot be read") and "\n" not in err


def test_a_full_disk_while_checkpointing_is_one_error_and_keeps_the_previous_checkpoint(dataset, tmp_path, monkeypatch):
    import errno

    from samsp.training import checkpoints

    run = tmp_path / "run"
    real_save, calls = torch.save, {"n": 0}

    def save_until_the_disk_fills(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the second epoch's state
            raise OSError(errno.ENOSPC, "No space left on device", str(f))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoints.torch, "save", save_until_the_disk_fills)
    with pytest.raises(SamspError, match="could not write the checkpoint .No space left on device.; the previous"):
        train(data=str(dataset), out=run, overrides=[*FAST, "optim.epochs=2", "runtime.checkpoint_every_min=0"])
    state = torch.load(run / "last" / "training_state.pt", weights_only=True)
    assert state["epoch"] == 1 and not list(run.rglob("*.tmp-*"))


def test_progress_sent_to_a_file_is_plain_lines(dataset, tmp_path):
    run = tmp_path / "run"
    settings = [*FAST, "optim.epochs=2"]
    args = ["train", "--data", str(dataset), "--out", str(run)] + [a for s in settings for a in ("--set", s)]
    with (tmp_path / "stdout.log").open("w") as out:
        subprocess.run(cli(*args), env=child_env(), stdout=out, stderr=subprocess.STDOUT, check=True)
    text = (tmp_path / "stdout.log").read_text()
    assert "\r" not in text and "epoch 2/2" in text
    assert "\r" not in (run / "train.log").read_text()
