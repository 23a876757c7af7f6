"""The frozen encoder prefix compiled for OpenVINO: the features PyTorch computes, chosen only where it pays."""

import importlib.util
import logging

import pytest
import torch
from helpers import make_dataset

from samsp import ModelConfig, SamSP, train
from samsp.errors import SamspError
from samsp.inference import prefix_graph
from samsp.inference.onnx_runtimes import openvino_has_bf16
from samsp.inference.prefix_graph import (
    MIN_IMAGES,
    choose_prefix_engine,
    graph_precision,
    prefix_digest,
    prefix_encoder,
)

CPU = torch.device("cpu")
OV_BF16 = openvino_has_bf16()


def tiny(**kw) -> SamSP:
    torch.manual_seed(0)
    return SamSP(ModelConfig(backbone="tiny", **kw))


def test_the_openvino_prefix_computes_the_pytorch_features_for_any_batch_size():
    model = tiny(adapt_stages=1)  # SAM ViT: patch embedding (+ position) and the first block are the prefix
    assert model.prefix_stages == 2
    torch.manual_seed(1)
    images = torch.randn(3, 3, 128, 128)  # traced with 2 images
    expected = model.encode_prefix(images)
    got = prefix_encoder(model, "openvino")(images)
    assert got.shape == expected.shape and got.dtype == torch.float32
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)
    assert torch.allclose(prefix_encoder(model, "openvino")(images[:1]), expected[:1], atol=1e-4, rtol=1e-4)


def test_a_bf16_run_compiles_the_fp32_prefix(monkeypatch):
    """A training run under bf16 autocast (auto picks it where bf16 measures faster) that sets the OpenVINO engine
    compiles under autocast: the graph is still the fp32 one (autocast once broke the ONNX export)."""
    monkeypatch.setattr(prefix_graph, "_COMPILED", {})  # compile anew, under autocast
    model = tiny(adapt_stages=1)
    torch.manual_seed(1)
    images = torch.randn(2, 3, 128, 128)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = prefix_encoder(model, "openvino")(images)
    assert got.dtype == torch.float32
    assert torch.allclose(got, model.encode_prefix(images), atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not OV_BF16, reason="OpenVINO has no bf16 on this CPU")
def test_the_bf16_prefix_rounds_about_as_autocast_does(monkeypatch):
    """What a bf16 run caches: features within bf16 rounding of the fp32 ones, as PyTorch's autocast gives."""
    monkeypatch.setattr(prefix_graph, "_COMPILED", {})  # compile anew
    model = tiny(adapt_stages=1)
    torch.manual_seed(1)
    images = torch.randn(2, 3, 128, 128)
    exact = model.encode_prefix(images)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = model.encode_prefix(images).float()
    got = prefix_encoder(model, "openvino", "bf16")(images)

    def error(features: torch.Tensor) -> float:
        return float((features - exact).norm() / exact.norm())

    assert got.dtype == torch.float32 and got.shape == exact.shape
    assert 0 < error(got) < 2 * error(autocast) + 1e-3  # rounded (so bf16 ran), and no more than autocast rounds
    assert prefix_encoder(model, "openvino", "bf16") is not prefix_encoder(model, "openvino")


def test_openvino_refuses_a_precision_it_cannot_run():
    with pytest.raises(SamspError, match="OpenVINO runs the prefix in fp32 or bf16, not fp16"):
        prefix_encoder(tiny(adapt_stages=1), "openvino", "fp16")


def test_a_trained_model_reuses_the_graph_compiled_for_its_pretrained_weights(monkeypatch):
    """The demo encodes the training set with the pretrained model and the test set with the trained one: their
    prefixes are the same weights, so one export serves both; other frozen weights or depths are another graph."""
    pretrained, trained = tiny(strategy="full", adapt_stages=0), tiny(strategy="full", adapt_stages=0)
    with torch.no_grad():
        next(trained.image_encoder.neck.parameters()).add_(0.1)  # the neck trains under strategy full
    assert prefix_digest(pretrained) == prefix_digest(trained)
    compiled = prefix_encoder(pretrained, "openvino")
    monkeypatch.setattr(prefix_graph, "_compile", lambda *a: pytest.fail("compiled a second time"))
    assert prefix_encoder(trained, "openvino") is compiled
    deeper = tiny(adapt_stages=1)
    assert prefix_digest(deeper) != prefix_digest(pretrained)
    other = tiny(strategy="full", adapt_stages=0)
    with torch.no_grad():
        other.image_encoder.patch_embed.proj.weight.add_(1e-3)
    assert prefix_digest(other) != prefix_digest(pretrained)


def test_the_export_keeps_the_onnx_optimisers_info_lines_out_of_the_log(caplog, monkeypatch):
    """The CLI logs at INFO: the dynamo exporter's optimiser passes once added about 250 lines to a demo's output."""
    monkeypatch.setattr(prefix_graph, "_COMPILED", {})  # compile anew
    caplog.set_level(logging.INFO)  # the root logger, which the exporter's loggers reach
    prefix_encoder(tiny(adapt_stages=1), "openvino")
    assert len(prefix_graph._COMPILED) == 1
    assert [r.name for r in caplog.records if r.name != "samsp"] == []


def test_pytorch_encodes_when_nothing_is_frozen():
    model = tiny(adapt_stages=None)  # every stage adapted: no prefix, nothing to compile
    assert model.prefix_stages == 0
    assert prefix_encoder(model, "openvino") == model.encode_prefix


@pytest.mark.parametrize(
    ("setting", "device", "precision", "images", "engine", "why"),
    [
        ("auto", "cpu", "fp32", MIN_IMAGES, "openvino", "OpenVINO"),
        ("auto", "cuda", "fp32", 1000, "torch", "cuda"),
        ("auto", "cuda", "bf16", 1000, "torch", "cuda"),
        ("auto", "cpu", "fp16", 1000, "torch", "autocast"),
        ("auto", "cpu", "bf16", 1000, *(("openvino", "OpenVINO") if OV_BF16 else ("torch", "no bf16"))),
        ("auto", "cpu", "bf16", MIN_IMAGES - 1, "torch", "too few"),
        ("auto", "cpu", "fp32", MIN_IMAGES - 1, "torch", "too few"),
        ("torch", "cpu", "fp32", 1000, "torch", "(set)"),
        ("openvino", "cpu", "fp32", 1, "openvino", "(set)"),
    ],
)
def test_auto_compiles_the_prefix_only_for_a_cpu_run_with_enough_images(
    setting, device, precision, images, engine, why
):
    chosen, sentence = choose_prefix_engine(setting, torch.device(device), precision, images)
    assert chosen == engine and why in sentence


def test_auto_says_what_to_install_when_openvino_is_missing(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "openvino" else real(name))
    engine, why = choose_prefix_engine("auto", CPU, "fp32", 1000)
    assert engine == "torch" and "pip install 'samsp[onnx,openvino]'" in why


def test_an_unknown_engine_is_refused():
    with pytest.raises(SamspError, match="runtime.prefix_engine must be one of auto, torch, openvino"):
        choose_prefix_engine("tensorrt", CPU, "fp32", 1000)


def test_a_training_run_caches_the_prefix_with_the_engine_it_names(tmp_path, monkeypatch):
    """The log says which engine cached the prefix; the feature store keeps each engine's features apart (they
    agree only up to rounding), so a run never reads features another engine computed."""
    monkeypatch.setattr(prefix_graph, "_COMPILED", {})  # another test compiled these weights in this process
    data = make_dataset(tmp_path / "data", n=8)
    store = tmp_path / "features"
    common = ["model.backbone=tiny", "model.adapt_stages=1", "optim.epochs=1", f"runtime.cache_dir={store}"]
    fp32 = [*common, "runtime.mixed_precision=no"]
    run = train(data=str(data), out=tmp_path / "ov", overrides=[*fp32, "runtime.prefix_engine=openvino"])
    log = (run / "train.log").read_text()
    assert (
        "prefix engine = openvino (set)" in log
        and "compiled the frozen encoder prefix (2 stages) for openvino, fp32" in log
    )
    assert len(list(store.iterdir())) == 2  # the training and the validation images
    train(data=str(data), out=tmp_path / "pt", overrides=[*fp32, "runtime.prefix_engine=torch"])
    assert len(list(store.iterdir())) == 4
    if OV_BF16:  # a bf16 run's graph computes in bf16, and its features are stored apart from the fp32 graph's
        bf16 = [*common, "runtime.mixed_precision=bf16", "runtime.prefix_engine=openvino"]
        run = train(data=str(data), out=tmp_path / "ov-bf16", overrides=bf16)
        assert "compiled the frozen encoder prefix (2 stages) for openvino, bf16" in (run / "train.log").read_text()
        assert len(list(store.iterdir())) == 6


@pytest.mark.parametrize(
    ("engine", "precision", "graph"),
    [
        ("openvino", "fp32", "fp32"),
        ("openvino", "bf16", "bf16" if OV_BF16 else "fp32"),
        ("openvino", "fp16", "fp32"),
        ("torch", "bf16", "bf16"),
        ("torch", "fp32", "fp32"),
    ],
)
def test_a_compiled_prefix_computes_in_bf16_only_for_a_bf16_run_that_openvino_can_run(engine, precision, graph):
    assert graph_precision(engine, precision) == graph


def test_batches_augmented_on_the_fly_carry_the_compiled_prefix_of_their_own_images(tmp_path):
    """With nothing cached, each augmented batch's frozen prefix is computed by the graph from exactly the images the
    plain on-the-fly batches hold (same seed, same augmentation), and the image itself no longer travels."""
    from samsp.data.pairs import find_pairs
    from samsp.data.prepared import PreparedSet
    from samsp.data.transforms import build_augment
    from samsp.training.batches import Batches

    model = tiny(adapt_stages=1).eval()
    data = PreparedSet(find_pairs(make_dataset(tmp_path, n=5)), model.backbone, build_augment(True))
    common = {"seed": 3, "batch_size": 2, "device": CPU, "dtype": torch.float32}
    plain = list(Batches(data, None, 1, **common).epoch(1))
    encoded = list(Batches(data, None, 1, prefix=prefix_encoder(model, "openvino"), **common).epoch(1))
    assert len(encoded) == len(plain) == 3
    for p, e in zip(plain, encoded, strict=True):
        assert "image" not in e and torch.equal(p["mask"], e["mask"]) and torch.equal(p["valid_hw"], e["valid_hw"])
        assert torch.allclose(e["features"], model.encode_prefix(p["image"]), atol=1e-4, rtol=1e-4)


def test_an_uncached_run_encodes_every_batch_with_the_compiled_prefix_and_stores_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(prefix_graph, "_COMPILED", {})
    data = make_dataset(tmp_path / "data", n=8)
    store = tmp_path / "features"
    overrides = [
        "model.backbone=tiny",
        "model.adapt_stages=1",
        "optim.epochs=1",
        "runtime.mixed_precision=no",
        "runtime.cache=false",
        "runtime.prefix_engine=openvino",
        f"runtime.cache_dir={store}",
    ]
    run = train(data=str(data), out=tmp_path / "run", overrides=overrides)
    log = (run / "train.log").read_text()
    assert "prefix engine = openvino (set); nothing is cached, so it encodes every batch" in log
    assert "compiled the frozen encoder prefix (2 stages) for openvino, fp32" in log
    assert "cached the frozen encoder prefix" not in log and not store.exists()
    assert (run / "best").is_dir()
