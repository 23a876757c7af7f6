"""The trainer on the tiny backbone and synthetic data: outputs, determinism, exact resume, atomic files."""

import json

import pytest
import torch
from helpers import make_dataset
from safetensors.torch import load_file

from samsp import SamSP, Trainer, train
from samsp.config import load_config
from samsp.errors import SamspError
from samsp.training.averaging import WeightAverage

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
    from samsp import Trainer

    real_save = Trainer.save_checkpoint

    def save_then_die(self, improved):
        real_save(self, improved)
        raise KeyboardInterrupt  # killed right after epoch 1 was saved

    monkeypatch.setattr(Trainer, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(data=str(dataset), out=tmp_path / "cut", overrides=[*FAST, "optim.epochs=3"])
    monkeypatch.setattr(Trainer, "save_checkpoint", real_save)
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
    assert config.optim.lr == pytest.approx(1e-4) and config.loss.alpha == pytest.approx(0.5)
    from samsp.training.hardware import resolve_auto

    resolved, _ = resolve_auto(config, torch.device("cpu"))
    assert resolved.runtime.mixed_precision == "no"


def test_a_gpu_given_a_time_budget_plans_its_epochs_and_without_one_trains_30(tmp_path):
    """On a GPU, `optim.time_budget_min` set with epochs auto leaves the epochs to the trainer's measured plan (as
    on a CPU); with no budget a GPU trains the fixed 30. No GPU is needed: the choice reads only the device type."""
    from samsp.config import load_config
    from samsp.training.hardware import GPU_EPOCHS, resolve_auto

    gpu = torch.device("cuda")
    budgeted, notes = resolve_auto(load_config(None, ["optim.time_budget_min=3", "runtime.mixed_precision=no"]), gpu)
    assert budgeted.optim.epochs == "auto" and budgeted.optim.time_budget_min == 3
    assert not any("epochs" in note for note in notes)
    unbudgeted, notes = resolve_auto(load_config(None, ["runtime.mixed_precision=no"]), gpu)
    assert unbudgeted.optim.epochs == GPU_EPOCHS and unbudgeted.optim.time_budget_min is None
    assert f"GPU: {GPU_EPOCHS} epochs" in notes


def test_one_slowed_round_does_not_decide_the_cpu_mixed_precision(monkeypatch):
    """Regression: a single timing of each dtype, taken while another process held the CPU, read 1.0x on a CPU where
    bf16 is 1.8x as fast, and a protocol row trained in fp32. A scripted clock: fp32 rounds take 2 s, bf16 rounds
    1 s except the first, which another process slowed to 2 s."""
    import itertools
    import types

    from samsp.training import hardware

    durations = itertools.cycle([2, 2, 2, 1, 2, 1, 2, 1, 2, 1])  # fp32 and bf16 alternate, round by round
    ticks = []

    def clock() -> float:
        if len(ticks) % 2 == 1:  # a stop: the start plus this round's duration
            ticks.append(ticks[-1] + next(durations))
        else:
            ticks.append(100.0 * len(ticks))
        return ticks[-1]

    monkeypatch.setattr(hardware, "time", types.SimpleNamespace(perf_counter=clock))
    assert hardware.cpu_bf16_speedup(n=8, repeats=1, rounds=5) == pytest.approx(2.0)
    _, note = hardware._pick_mixed_precision(hardware.TrainConfig().runtime, torch.device("cpu"))
    assert note.endswith("mixed precision = bf16")


@pytest.mark.parametrize(("speedup", "warned"), [(0.013, True), (1.8, False)])
def test_bf16_asked_for_on_a_cpu_without_bf16_units_is_logged_as_a_warning(
    dataset, tmp_path, monkeypatch, speedup, warned
):
    """Regression: an AVX2 CPU multiplies bf16 matrices at 0.013x the fp32 speed, and a protocol row pinned to bf16
    cached 0.03 images/s against 0.5 in fp32. The measured speed-up is scripted here."""
    from samsp import Trainer
    from samsp.config import TrainConfig, apply_overrides
    from samsp.training import hardware

    monkeypatch.setattr(hardware, "cpu_bf16_speedup", lambda: speedup)
    overrides = [*FAST, f"data.path={dataset}", "runtime.mixed_precision=bf16"]
    trainer = Trainer(apply_overrides(TrainConfig(), overrides), tmp_path / "run")
    trainer.setup()
    log = (tmp_path / "run" / "train.log").read_text()
    assert ("warning: bf16 was asked for, but this CPU computes a bf16 matrix multiply at 0.013x" in log) == warned
    assert trainer.config.runtime.mixed_precision == "bf16"  # a warning, not a silent change of what was asked


@pytest.mark.parametrize(
    ("overrides", "strategy", "adapt_stages"),
    [
        ([], "full", 0),  # the CPU default: a time budget, epochs and adaptation left to samsp
        (["optim.time_budget_min=7"], "full", 0),  # the main job's budget
        (["optim.epochs=3"], "lora", 2),  # fixed epochs: LoRA on the last stages (2 for SAM ViT, 1 for LiteMedSAM)
        (["model.adapt_stages=1"], "lora", 1),  # adaptation asked for: kept
        (["model.train_neck=true"], "lora", 2),  # LoRA with the neck asked for: kept
        (["model.strategy=full"], "full", 2),  # full fine-tuning of the last stages asked for: kept
    ],
)
def test_a_cpu_budget_trains_the_neck_unless_the_adaptation_is_set(overrides, strategy, adapt_stages):
    """On a CPU under a time budget the encoder body is frozen and cached whole and its neck trains with the decoder:
    on 300 held-out Kvasir-SEG training images it scored higher than LoRA on the last stage in both seeds, with steps
    about twice as fast (BENCHMARKS.md, main job). A GPU adapts every stage."""
    from samsp.config import load_config
    from samsp.training.hardware import resolve_auto

    config = load_config(None, ["model.backbone=tiny", "runtime.mixed_precision=no", *overrides])
    resolved, notes = resolve_auto(config, torch.device("cpu"))
    assert (resolved.model.strategy, resolved.model.adapt_stages) == (strategy, adapt_stages)
    noted = any(n.startswith("CPU with a time budget: training the encoder's neck") for n in notes)
    assert noted == (adapt_stages == 0)
    on_gpu, _ = resolve_auto(config, torch.device("cuda"))
    if not overrides:
        assert (on_gpu.model.strategy, on_gpu.model.adapt_stages) == ("lora", None)


def test_the_cpu_adaptation_note_says_whether_the_frozen_prefix_is_cached():
    """The log line that names the adapted stages must not claim a cache that `runtime.cache=false` turned off."""
    from samsp.config import load_config
    from samsp.training.hardware import resolve_auto

    for cache, said in [("auto", "is computed once per image and cached"), ("false", "runs every step")]:
        config = load_config(
            None, ["model.backbone=tiny", "runtime.mixed_precision=no", "optim.epochs=2", f"runtime.cache={cache}"]
        )
        _, notes = resolve_auto(config, torch.device("cpu"))
        adapting = [n for n in notes if n.startswith("CPU: adapting the last")]
        assert len(adapting) == 1 and said in adapting[0], notes


def test_a_budgeted_cpu_run_records_and_logs_its_neck_recipe(dataset, tmp_path):
    run = train(data=str(dataset), out=tmp_path / "run", overrides=[*FAST, "optim.time_budget_min=1e-4"])
    recorded = load_config(run / "config.yaml").model
    assert (recorded.strategy, recorded.adapt_stages) == ("full", 0)
    log_text = (run / "train.log").read_text()
    assert "defaults chose: CPU with a time budget: training the encoder's neck and the decoder" in log_text
    assert "trained encoder stages neck" in log_text
    explicit = train(
        data=str(dataset),
        out=tmp_path / "kept",
        overrides=[*FAST, "optim.time_budget_min=1e-4", "model.adapt_stages=1"],
    )
    assert load_config(explicit / "config.yaml").model.strategy == "lora"  # set explicitly: kept


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
    optim = yaml.safe_load((run / "config.yaml").read_text())["optim"]
    rows = (run / "metrics.csv").read_text().splitlines()[1:]
    assert isinstance(optim["epochs"], int) and len(rows) == optim["epochs"] >= 1
    assert optim["max_steps"] is None or (optim["epochs"] - 1) * 2 < optim["max_steps"] < optim["epochs"] * 2
    assert "fit the 0.15-minute budget" in (run / "train.log").read_text()


def test_steps_fit_fills_a_budget_with_whole_epochs_then_part_of_one():
    from samsp.training.schedule import steps_fit

    # epochs of 30 one-second steps, each followed by a 10 s validation: two whole epochs take 80 s
    assert steps_fit(100, 1.0, 10, 30, 1000) == 70  # 2 epochs, then 10 steps and a validation in the last 20 s
    assert steps_fit(85, 1.0, 10, 30, 1000) == 60  # no time for a validation after another step
    assert steps_fit(5, 1.0, 10, 30, 1000) == 0
    assert steps_fit(1e9, 1.0, 10, 30, 90) == 90  # the cap


def test_max_steps_set_by_hand_ends_the_run_at_that_step_whatever_the_epochs(dataset, tmp_path):
    import yaml

    run = train(data=str(dataset), out=tmp_path / "run", overrides=[*FAST, "optim.epochs=5", "optim.max_steps=3"])
    optim = yaml.safe_load((run / "config.yaml").read_text())["optim"]
    assert (optim["epochs"], optim["max_steps"]) == (2, 3)  # 2 steps per epoch: one whole epoch and one step
    assert len((run / "metrics.csv").read_text().splitlines()) == 3


def test_a_budget_that_fits_an_epoch_and_a_half_plans_a_partial_last_epoch(dataset, tmp_path, monkeypatch):
    """Whole-epoch plans wasted up to an epoch of the budget (a 7-minute main job fitted 2 epochs of 129-165 s and
    trained 304 s). Steps timed at 1 s (scripted), 2 steps per epoch, validation 1/6 s: 3.4 s fit 3 steps."""
    from samsp import Trainer

    monkeypatch.setattr(Trainer, "step_seconds", lambda self, batches: 1.0)
    run = train(
        data=str(dataset),
        out=tmp_path / "run",
        overrides=[*FAST, "optim.epochs=auto", f"optim.time_budget_min={3.4 / 60}"],
    )
    assert "1.50 epochs (3 steps, 2 per epoch) fit the" in (run / "train.log").read_text()


def test_prefix_features_are_reused_across_runs_in_a_process_but_kept_bounded(tmp_path, monkeypatch):
    from samsp.training import batches as batches_module

    monkeypatch.setattr(batches_module, "_PREFIX_MEMO", type(batches_module._PREFIX_MEMO)())
    encoded = []
    real_encode = batches_module.Batches._encode
    monkeypatch.setattr(batches_module.Batches, "_encode", lambda self, *a: encoded.append(1) or real_encode(self, *a))
    sets = [make_dataset(tmp_path / f"d{i}", n=4, seed=i) for i in range(3)]
    for i, data in enumerate(sets):
        train(data=str(data), out=tmp_path / f"run{i}", overrides=[*FAST, "optim.epochs=1"])
    assert len(encoded) == 6  # training and validation set of each dataset
    assert len(batches_module._PREFIX_MEMO) == 2  # only the latest run's two sets are kept
    train(data=str(sets[-1]), out=tmp_path / "again", overrides=[*FAST, "optim.epochs=1"])
    assert len(encoded) == 6  # the latest dataset was not encoded again
    batches_module.forget_prefix_features()  # what a benchmark does before scoring, to free their memory
    assert not batches_module._PREFIX_MEMO
    train(data=str(sets[-1]), out=tmp_path / "after", overrides=[*FAST, "optim.epochs=1"])
    assert len(encoded) == 8


def test_a_cache_dir_keeps_the_prefix_features_for_later_processes(dataset, tmp_path, monkeypatch):
    from samsp.training import batches as batches_module

    store = tmp_path / "features"
    overrides = [*FAST, "optim.epochs=1", f"runtime.cache_dir={store}"]
    encoded = []
    real_encode = batches_module.Batches._encode
    monkeypatch.setattr(batches_module.Batches, "_encode", lambda self, *a: encoded.append(1) or real_encode(self, *a))

    def run(name: str) -> dict:
        monkeypatch.setattr(batches_module, "_PREFIX_MEMO", type(batches_module._PREFIX_MEMO)())  # a new process
        return load_file(
            str(train(data=str(dataset), out=tmp_path / name, overrides=overrides) / "last" / "weights.safetensors")
        )

    first = run("a")
    files = sorted(store.glob("*.safetensors"))
    assert len(encoded) == 2 and len(files) == 2  # training and validation sets, each in its own file
    assert not list(store.glob(".*"))  # no temporary file left behind
    second = run("b")
    assert len(encoded) == 2  # read from disk, not encoded again
    assert all(torch.equal(first[k], second[k]) for k in first)  # and trains exactly as before
    files[0].write_bytes(b"not a safetensors file")
    third = run("c")
    assert len(encoded) == 3  # encoded again, not a failure, and the log says why
    assert f"{files[0]}: cannot be read" in (tmp_path / "c" / "train.log").read_text()
    assert all(torch.equal(first[k], third[k]) for k in first)
    overrides.append("runtime.cache_dtype=bfloat16")
    run("d")
    assert len(encoded) == 5 and len(list(store.glob("*.safetensors"))) == 4  # another setting, other files


def test_the_feature_file_is_written_image_by_image_and_reads_back_as_their_stack(tmp_path, monkeypatch):
    """Regression: the features were stacked before writing, which doubled the peak memory (an OOM kill with 1230
    LiteMedSAM images at 384 px). The file is still plain safetensors: the library reads the stacked tensors."""
    from safetensors.torch import load_file

    from samsp.training import feature_store

    g = torch.Generator().manual_seed(0)
    features = [[torch.randn(16, 8, generator=g).to(torch.bfloat16) for _ in range(2)] for _ in range(3)]
    items = [[{"mask": torch.rand(12, 12, generator=g) > 0.5, "valid_hw": torch.tensor([12, 9])}] * 2 for _ in range(3)]
    path = tmp_path / "features.safetensors"
    with monkeypatch.context() as m:
        m.setattr(torch, "stack", lambda *a, **k: pytest.fail("save stacked the tensors in memory"))
        feature_store.save(path, features, items)
    stored = load_file(path)
    assert torch.equal(stored["features"], torch.stack([f for fv in features for f in fv]))
    assert torch.equal(stored["masks"], torch.stack([it["mask"] for iv in items for it in iv]))
    read_features, read_items = feature_store.load(path, n_images=3, views=2)
    assert all(
        torch.equal(a, b) for fa, fb in zip(read_features, features, strict=True) for a, b in zip(fa, fb, strict=True)
    )
    assert torch.equal(read_items[2][1]["valid_hw"], torch.tensor([12, 9]))


def test_a_full_disk_while_keeping_the_features_costs_the_reuse_not_the_run(dataset, tmp_path, monkeypatch):
    import errno

    from samsp.training import batches as batches_module
    from samsp.training import feature_store

    monkeypatch.setattr(batches_module, "_PREFIX_MEMO", type(batches_module._PREFIX_MEMO)())  # encoded, so saved
    real_write = feature_store.write_stacked

    def write_half_then_fill_the_disk(file, named):
        real_write(file, {name: rows[: len(rows) // 2] for name, rows in named.items()})
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(feature_store, "write_stacked", write_half_then_fill_the_disk)
    store = tmp_path / "features"
    run = train(
        data=str(dataset), out=tmp_path / "run", overrides=[*FAST, "optim.epochs=1", f"runtime.cache_dir={store}"]
    )
    assert (run / "last" / "weights.safetensors").is_file()
    assert not list(store.iterdir())  # no file, whole or half-written
    assert (
        "cannot be written ([Errno 28] No space left on device); the features stay in memory only"
        in (run / "train.log").read_text()
    )


def test_a_cache_that_would_not_fit_the_free_memory_is_one_error_before_encoding(dataset, tmp_path, monkeypatch):
    import psutil

    from samsp.training import batches as batches_module

    def new_process() -> None:
        monkeypatch.setattr(batches_module, "_PREFIX_MEMO", type(batches_module._PREFIX_MEMO)())

    store = tmp_path / "features"
    overrides = [*FAST, "optim.epochs=1", f"runtime.cache_dir={store}"]
    new_process()
    with monkeypatch.context() as m, pytest.raises(SamspError) as raised:
        m.setattr(psutil, "virtual_memory", lambda: type("Memory", (), {"available": 1000})())
        train(data=str(dataset), out=tmp_path / "run", overrides=overrides)
    message = str(raised.value)
    assert message.startswith("caching the frozen encoder prefix needs about 0.0 GB (6 x (") and "\n" not in message
    assert "float32), but 0.0 GB of memory is free: set runtime.cache_dtype=bfloat16" in message
    assert not store.is_dir() or not list(store.iterdir())
    new_process()
    train(data=str(dataset), out=tmp_path / "fits", overrides=overrides)  # stores the features
    assert len(list(store.glob("*.safetensors"))) == 2
    new_process()
    with (
        monkeypatch.context() as m,
        pytest.raises(SamspError, match=rf"needs about 0.0 GB \({store}/[0-9a-f]+\.safetensors\), but"),
    ):
        m.setattr(psutil, "virtual_memory", lambda: type("Memory", (), {"available": 1000})())
        train(data=str(dataset), out=tmp_path / "later", overrides=overrides)  # reading them would not fit either


def test_features_kept_from_earlier_trainings_give_way_when_new_ones_would_not_fit(tmp_path, monkeypatch):
    """A sweep's kept features (the memo) are dropped, not the new run, when memory runs short; a cache that does not
    fit even then is still the one-line error."""
    import psutil

    from samsp.training import batches as batches_module

    memo = type(batches_module._PREFIX_MEMO)()
    monkeypatch.setattr(batches_module, "_PREFIX_MEMO", memo)
    first, second = make_dataset(tmp_path / "first", n=4, seed=1), make_dataset(tmp_path / "second", n=4, seed=2)
    train(data=str(first), out=tmp_path / "a", overrides=[*FAST, "optim.epochs=1"])
    assert len(memo) == 2
    kept = set(memo)
    # memory as if the two kept sets filled it: short while both are held, plenty once they are gone
    monkeypatch.setattr(
        psutil, "virtual_memory", lambda: type("Memory", (), {"available": 1000 if len(memo) >= 2 else 10**12})()
    )
    run = train(data=str(second), out=tmp_path / "b", overrides=[*FAST, "optim.epochs=1"])
    assert (run / "last" / "weights.safetensors").is_file()
    assert len(memo) == 2 and not kept & set(memo)  # the second dataset's sets, the first's gone
    assert "dropped the prefix features kept from earlier trainings" in (run / "train.log").read_text()
    monkeypatch.setattr(psutil, "virtual_memory", lambda: type("Memory", (), {"available": 1000})())
    with pytest.raises(SamspError, match=r"^caching the frozen encoder prefix needs about .* of memory is free"):
        train(data=str(first), out=tmp_path / "c", overrides=[*FAST, "optim.epochs=1"])
    assert not memo


def test_run_files_are_written_through_the_atomic_writer(dataset, tmp_path, monkeypatch):
    import os

    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(
        os, "replace", lambda src, dst: replaced.append(os.path.basename(dst)) or real_replace(src, dst)
    )
    run = train(data=str(dataset), out=tmp_path / "run", overrides=[*FAST, "optim.epochs=1"])
    for name in ("config.yaml", "environment.json", "train.txt", "val.txt", "metrics.csv", "weights.safetensors"):
        assert name in replaced, name
    assert not list(run.rglob("*.tmp-*"))


def test_the_pranet_config_trains_on_pranet_training_ids_only(shared_data, tmp_path):
    from pathlib import Path

    from samsp.data import pranet_split

    config = Path(__file__).resolve().parents[1] / "configs" / "kvasir_pranet.yaml"
    run = train(
        data=str(shared_data / "kvasir-seg"),
        out=tmp_path / "pranet",
        config_path=config,
        overrides=[*FAST, "optim.epochs=1", "data.limit=8", "data.val_fraction=0.02"],
    )
    train_ids, test_ids = pranet_split("kvasir-seg")
    used = set((run / "splits" / "train.txt").read_text().split()) | set(
        (run / "splits" / "val.txt").read_text().split()
    )
    assert used and used <= set(train_ids) and not used & set(test_ids)


def test_a_run_saved_before_newer_model_settings_existed_still_resumes(dataset, tmp_path):
    import yaml

    run = train(data=str(dataset), out=tmp_path / "old", overrides=[*FAST, "optim.epochs=1"])
    state_file = run / "last" / "training_state.pt"
    state = torch.load(state_file, weights_only=True)
    old = json.loads(state["model_config"])
    del old["box_opening"], old["box_jitter"]  # as a run from an earlier samsp wrote it
    state["model_config"] = json.dumps(old)
    torch.save(state, state_file)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["optim"]["epochs"] = 2
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    resumed = train(resume=run)
    assert len((resumed / "metrics.csv").read_text().splitlines()) == 3


@pytest.mark.parametrize("box_decoder", [False, True])
def test_the_pretrained_heads_learn_at_their_own_scaled_rate(box_decoder):
    from samsp.config import ModelConfig, OptimConfig
    from samsp.training.schedule import make_optimizer

    torch.manual_seed(0)
    model = SamSP(ModelConfig(backbone="tiny", adapt_stages=1, box_decoder=box_decoder))
    optimizer, _ = make_optimizer(model, OptimConfig(lr=1e-3, decoder_lr_scale=0.0, warmup=0.0), 10)
    assert sorted(group["lr"] for group in optimizer.param_groups) == [0.0, 1e-3]
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    size = model.backbone.img_size
    model(torch.rand(2, 3, size, size)).logits[-1].float().mean().backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)  # decoder_lr_scale=0 keeps SAM's heads as they were
    with pytest.raises(SamspError, match="optim.decoder_lr_scale must be >= 0"):
        OptimConfig(decoder_lr_scale=-1)


def test_the_fusion_head_learns_at_the_encoders_rate_not_the_heads_scaled_one():
    from samsp.config import ModelConfig, OptimConfig
    from samsp.training.schedule import make_optimizer

    torch.manual_seed(0)
    model = SamSP(ModelConfig(backbone="tiny", adapt_stages=1, fusion_stage="blocks.0"))
    optimizer, _ = make_optimizer(model, OptimConfig(lr=1e-3, decoder_lr_scale=0.0, warmup=0.0), 10)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    size = model.backbone.img_size
    model(torch.rand(2, 3, size, size)).logits[-1].float().mean().backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])}
    assert any(n.startswith("early_fusion.") for n in changed) and any("lora_" in n for n in changed)
    assert not any(n.startswith(("mask_decoder.", "prompt_encoder.")) for n in changed)


def test_a_run_with_early_fusion_caches_the_fused_stage_and_saves_its_head(dataset, tmp_path):
    fusion = ["model.adapt_stages=1", "model.fusion_stage=patch_embed", "runtime.cache=true"]
    run = train(data=str(dataset), out=tmp_path / "run", overrides=[*FAST, "optim.epochs=1", *fusion])
    model = SamSP.from_pretrained(run)
    assert model.prefix_stages == 1 and model.early_fusion is not None
    assert any(name.startswith("early_fusion.") for name in model.trainable_state_dict())
    assert "cached the frozen encoder prefix (1 of 4 stages)" in (run / "train.log").read_text()


def test_a_run_with_the_ground_truth_box_pass_trains_and_records_its_loss(dataset, tmp_path):
    run = train(data=str(dataset), out=tmp_path / "run", overrides=[*FAST, "optim.epochs=1", "loss.gt_box=1.0"])
    header, row = (run / "metrics.csv").read_text().splitlines()[:2]
    value = dict(zip(header.split(","), row.split(","), strict=True))["dice_gt_box"]
    assert 0 < float(value) < 1
    assert SamSP.from_pretrained(run).config.backbone == "tiny"


def test_a_run_with_the_focal_term_trains_and_records_it(dataset, tmp_path):
    run = train(data=str(dataset), out=tmp_path / "run", overrides=[*FAST, "optim.epochs=1", "loss.focal=20"])
    header, row = (run / "metrics.csv").read_text().splitlines()[:2]
    value = dict(zip(header.split(","), row.split(","), strict=True))["focal"]
    assert 0 < float(value) < 1
    assert "focal: 20.0" in (run / "config.yaml").read_text()


def test_the_moving_average_follows_each_step_and_lends_its_weights_only_inside_the_block():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    model.bias.requires_grad_(False)  # frozen weights are not averaged
    average = WeightAverage(model, decay=0.75)
    expected = model.weight.detach().clone()
    for _ in range(3):
        with torch.no_grad():
            model.weight.add_(torch.randn(2, 3))
        average.update()
        expected = 0.75 * expected + 0.25 * model.weight.detach()
    trained = model.weight.detach().clone()
    assert average.names == ["weight"]
    with average.swapped_in():
        assert torch.allclose(model.weight, expected)
    assert torch.equal(model.weight, trained)
    copy = WeightAverage(model, decay=0.75)
    copy.load_state_dict(average.state_dict())
    assert torch.equal(copy.averages[0], average.averages[0])


def test_a_run_with_a_moving_average_validates_and_saves_the_averaged_weights(dataset, tmp_path):
    run = train(data=str(dataset), out=tmp_path / "run", overrides=[*FAST, "optim.epochs=2", "optim.ema=0.5"])
    state = torch.load(run / "last" / "training_state.pt", weights_only=True)
    saved = load_file(str(run / "last" / "weights.safetensors"))
    assert saved.keys() == state["average"].keys() == state["model"].keys()
    assert all(torch.equal(saved[k], state["average"][k]) for k in saved)  # last/ holds the averages
    assert any(not torch.equal(saved[k], state["model"][k]) for k in saved)  # which are not the trained weights
    model = SamSP.from_pretrained(run / "last")
    trainer = Trainer(load_config(run / "config.yaml"), tmp_path / "scratch")
    trainer.setup()
    trainer.cache()
    trainer.core = model  # the saved model, scored as the trainer scores validation
    trainer.average = None
    rows = (run / "metrics.csv").read_text().splitlines()
    logged = float(rows[-1].split(",")[rows[0].split(",").index("val_dice")])
    assert trainer.validate() == pytest.approx(logged, abs=1e-6)
