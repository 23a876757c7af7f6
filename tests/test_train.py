"""The trainer on the tiny backbone and synthetic data: outputs, determinism, exact resume, atomic files."""

import json

import pytest
import torch
from helpers import make_dataset
from safetensors.torch import load_file

from samsp import SamSP
from samsp.errors import SamspError
from samsp.train import train

FAST = [
    "model.backbone=tiny",
    "optim.batch_size=4",
    "data.val_fraction=0.25",
    "runtime.threads=1",
    "runtime.mixed_precision=no",  # "auto" measures the CPU; tests must not depend on timing
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data"), n=8)


def test_a_run_writes_everything_a_user_needs(dataset, tmp_path):
    run = train(data=str(dataset), out=tmp_path / "run", overrides=[*FAST, "optim.epochs=2"])
    for name in (
        "config.yaml",
        "environment.json",
        "metrics.csv",
        "curves.png",
        "train.log",
        "splits/train.txt",
        "splits/val.txt",
        "best/samsp.json",
        "best/weights.safetensors",
        "last/training_state.pt",
    ):
        assert (run / name).is_file(), name
    env = json.loads((run / "environment.json").read_text())
    assert {"torch", "peft", "git_revision", "device"} <= set(env)
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,") and "val_dice" in rows[0] and len(rows) == 3
    assert len((run / "splits/val.txt").read_text().split()) == 2
    # only what was trained is in the checkpoint: LoRA, prompt encoder, mask decoder
    keys = load_file(str(run / "best" / "weights.safetensors")).keys()
    enc = [k for k in keys if k.startswith("image_encoder.")]
    assert enc and all("lora_" in k for k in enc)
    assert any(k.startswith("mask_decoder.") for k in keys)
    model = SamSP.from_pretrained(run)
    assert model.config.backbone == "tiny"


def test_two_identical_runs_give_identical_weights(dataset, tmp_path):
    a = train(data=str(dataset), out=tmp_path / "a", overrides=[*FAST, "optim.epochs=2"])
    b = train(data=str(dataset), out=tmp_path / "b", overrides=[*FAST, "optim.epochs=2"])
    wa = load_file(str(a / "last" / "weights.safetensors"))
    wb = load_file(str(b / "last" / "weights.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_after_an_interrupted_run_matches_a_straight_run(dataset, tmp_path, monkeypatch):
    straight = train(data=str(dataset), out=tmp_path / "straight", overrides=[*FAST, "optim.epochs=3"])
    import samsp.train as trainer

    real_save = trainer._save_state
    calls = {"n": 0}

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt  # killed right after epoch 1 was saved

    monkeypatch.setattr(trainer, "_save_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(data=str(dataset), out=tmp_path / "cut", overrides=[*FAST, "optim.epochs=3"])
    monkeypatch.setattr(trainer, "_save_state", real_save)
    resumed = train(resume=tmp_path / "cut")
    a = load_file(str(straight / "last" / "weights.safetensors"))
    b = load_file(str(resumed / "last" / "weights.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    rows = (resumed / "metrics.csv").read_text().splitlines()
    assert len(rows) == 4  # header + 3 epochs, none repeated
    assert not list(resumed.rglob("*.tmp-*")), "temporary files left behind"


def test_refuses_to_overwrite_a_run_and_to_resume_nothing(dataset, tmp_path):
    run = train(data=str(dataset), out=tmp_path / "run", overrides=[*FAST, "optim.epochs=1"])
    with pytest.raises(SamspError, match="already holds a run"):
        train(data=str(dataset), out=run, overrides=[*FAST, "optim.epochs=1"])
    with pytest.raises(SamspError, match="nothing to resume"):
        train(resume=tmp_path / "empty")


def test_unknown_settings_are_errors(dataset, tmp_path):
    with pytest.raises(SamspError, match="unknown setting 'optim.lrate'"):
        train(data=str(dataset), out=tmp_path / "x", overrides=["optim.lrate=1"])


def test_numbers_in_scientific_notation_and_bare_no_are_read_as_meant(tmp_path):
    from samsp.config import load_config

    (tmp_path / "c.yaml").write_text("optim:\n  lr: 1e-4\nruntime:\n  mixed_precision: no\n")
    config = load_config(tmp_path / "c.yaml", ["loss.alpha=5e-1"])
    assert config["optim"]["lr"] == pytest.approx(1e-4) and config["loss"]["alpha"] == pytest.approx(0.5)
    from samsp.train import resolve_auto

    resolve_auto(config, torch.device("cpu"))
    assert config["runtime"]["mixed_precision"] == "no"


def test_augmented_batches_are_the_same_with_or_without_loader_workers(dataset, tmp_path):
    runs = []
    for workers in (0, 2):
        runs.append(
            train(
                data=str(dataset),
                out=tmp_path / f"w{workers}",
                overrides=[*FAST, "optim.epochs=1", "runtime.cache=false", f"runtime.workers={workers}"],
            )
        )
    a, b = (load_file(str(r / "last" / "weights.safetensors")) for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_time_budget_plans_the_epochs_and_the_run_agrees_with_its_config(dataset, tmp_path):
    import yaml

    run = train(
        data=str(dataset),
        out=tmp_path / "budget",
        overrides=[*FAST, "optim.epochs=auto", "optim.time_budget_min=0.15"],
    )
    epochs = yaml.safe_load((run / "config.yaml").read_text())["optim"]["epochs"]
    rows = (run / "metrics.csv").read_text().splitlines()[1:]
    assert isinstance(epochs, int) and len(rows) == epochs >= 1
    assert "epochs fit the" in (run / "train.log").read_text()


def test_prefix_features_are_reused_across_runs_in_a_process_but_kept_bounded(tmp_path, monkeypatch):
    from samsp import train as train_module

    monkeypatch.setattr(train_module, "_PREFIX_MEMO", type(train_module._PREFIX_MEMO)())
    encoded = []
    real_encode = train_module.Batches._encode
    monkeypatch.setattr(train_module.Batches, "_encode", lambda self, *a: encoded.append(1) or real_encode(self, *a))
    sets = [make_dataset(tmp_path / f"d{i}", n=4, seed=i) for i in range(3)]
    for i, data in enumerate(sets):
        train(data=str(data), out=tmp_path / f"run{i}", overrides=[*FAST, "optim.epochs=1"])
    assert len(encoded) == 6  # training and validation set of each dataset
    assert len(train_module._PREFIX_MEMO) == 2  # only the latest run's two sets are kept
    train(data=str(sets[-1]), out=tmp_path / "again", overrides=[*FAST, "optim.epochs=1"])
    assert len(encoded) == 6  # the latest dataset was not encoded again
