"""Typed configuration: defaults in one place, values read by their field's type, one-line errors naming the key."""

import dataclasses

import pytest

from samsp import DataConfig, ModelConfig, TrainConfig, load_config
from samsp.config import apply_overrides, dump_config
from samsp.errors import SamspError


def test_defaults_live_in_the_dataclasses_and_round_trip_through_yaml(tmp_path):
    config = TrainConfig()
    assert config.model.adapt_stages == "auto" and ModelConfig().adapt_stages is None
    assert config.optim.lr == pytest.approx(3e-4) and config.data.augment is True
    (tmp_path / "c.yaml").write_text(dump_config(config))
    assert load_config(tmp_path / "c.yaml") == config


def test_overrides_are_parsed_by_the_field_type_not_as_yaml():
    config = apply_overrides(
        TrainConfig(),
        [
            "data.path=on",  # a folder called "on": YAML would read it as true
            "data.train_ids=no",
            "optim.lr=1e-4",
            "optim.epochs=3",
            "model.adapt_stages=null",
            "model.lora_targets=attn.qkv,mlp.lin1",
            "model.self_prompt=false",
            "runtime.cache=auto",
            "data.augment={hflip: 0.5}",
        ],
    )
    assert config.data.path == "on" and config.data.train_ids == "no"
    assert config.optim.lr == pytest.approx(1e-4) and config.optim.epochs == 3
    assert config.model.adapt_stages is None and config.model.lora_targets == ("attn.qkv", "mlp.lin1")
    assert config.model.self_prompt is False and config.runtime.cache == "auto"
    assert config.data.augment == {"hflip": 0.5}


def test_a_list_override_reads_yaml_flow_style_too():
    config = apply_overrides(TrainConfig(), ["model.lora_targets=[attn.qkv, 'mlp.lin1']"])
    assert config.model.lora_targets == ("attn.qkv", "mlp.lin1")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lrate=1", "unknown setting 'optim.lrate'; known: epochs"),
        ("optimizer.lr=1", "unknown setting 'optimizer.lr'"),
        ("optim.lr=fast", "setting optim.lr: expected a number, got 'fast'"),
        ("optim.epochs=2.5", "setting optim.epochs: expected an integer or one of auto, got '2.5'"),
        ("model.self_prompt=maybe", "setting model.self_prompt: expected true/false"),
        ("model.strategy=lorra", "setting model.strategy: expected one of lora, frozen, full"),
        ("runtime.mixed_precision=fp8", "setting runtime.mixed_precision"),
        ("optim.lr", "must look like section.key=value"),
        ("model.threshold=1.5", "model.threshold must be between 0 and 1"),
        ("loss.gt_box=-1", "loss.gt_box must be >= 0 and loss.gt_box_jitter in [0, 1)"),
        ("loss.structure=-0.5", "loss.bce, loss.structure and loss.focal must be >= 0"),
        ("loss.focal=-1", "loss.bce, loss.structure and loss.focal must be >= 0"),
        ("optim.ema=1", "optim.ema must be in [0, 1) (0 = no moving average)"),
    ],
)
def test_a_bad_override_is_one_line_naming_the_key(override, message):
    with pytest.raises(SamspError) as err:
        apply_overrides(TrainConfig(), [override])
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("optim:\n  lr: [1, 2]\n", "setting optim.lr: expected a number"),
        ("optim:\n  batch_size: true\n", "setting optim.batch_size: expected an integer"),
        ("modle:\n  backbone: tiny\n", "unknown setting 'modle'; known sections"),
        ("model: tiny\n", "setting model: expected a mapping"),
        ("- a\n- b\n", "a config must be a mapping"),
        ("optim: {lr: 1\n", "cannot read config"),
    ],
)
def test_a_bad_yaml_file_is_one_line_naming_the_file_and_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SamspError) as err:
        load_config(path)
    assert str(path) in str(err.value) and message in str(err.value) and "\n" not in str(err.value)


def test_yaml_bare_no_and_scientific_notation_are_read_as_meant(tmp_path):
    (tmp_path / "c.yaml").write_text("optim:\n  lr: 1e-4\nruntime:\n  mixed_precision: no\n")
    config = load_config(tmp_path / "c.yaml")
    assert config.optim.lr == pytest.approx(1e-4) and config.runtime.mixed_precision == "no"


def test_sections_are_frozen_and_replaced_not_mutated():
    data = DataConfig(path="x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.path = "y"
    assert dataclasses.replace(data, limit="8").limit == 8  # replace validates and reads by type too


def test_config_module_does_not_import_the_model():
    import ast
    import inspect

    import samsp.config

    tree = ast.parse(inspect.getsource(samsp.config))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {f"{'.' * n.level}{n.module}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not {m for m in imported if "torch" in m or "model" in m or "train" in m}, imported
