"""The one prediction path: SamSP.predict, evaluation and `samsp predict` all go through Predictor."""

import csv
import dataclasses

import numpy as np
import pytest
import torch
from helpers import make_dataset

from samsp import ModelConfig, Predictor, SamSP
from samsp.cli import main
from samsp.data.io import read_image, read_pair
from samsp.data.pairs import find_pairs
from samsp.errors import SamspError
from samsp.evaluation.evaluate import evaluate, load_eval_set, predict_set
from samsp.evaluation.metrics import image_metrics
from samsp.inference.predictor import flip_valid


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SamSP(ModelConfig(backbone="tiny"))


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, size, dtype=np.uint8) for size in ((90, 120, 3), (128, 70, 3), (64, 64, 3))]


def test_model_shortcuts_and_batching_give_what_the_predictor_gives(model, images):
    one_by_one = [Predictor(model, batch_size=1).predict(im) for im in images]
    batched = Predictor(model, batch_size=3).predict_batch(images)
    shortcut = model.predict_batch(images, batch_size=2)
    for a, b, c in zip(one_by_one, batched, shortcut, strict=True):
        assert np.allclose(a.probability, b.probability, atol=1e-5)
        assert np.array_equal(b.mask, c.mask) and b.fallback == c.fallback


def test_evaluation_predicts_through_the_same_path(model, tmp_path):
    data_dir = make_dataset(tmp_path / "d", n=3)
    pairs = find_pairs(data_dir)
    data = load_eval_set(pairs, model)
    direct = Predictor(model).predict_batch([read_image(p.image) for p in pairs])
    for prob, pred in zip(predict_set(model, data), direct, strict=True):
        assert np.allclose(prob, pred.probability, atol=1e-5)


def test_evaluation_scores_the_masks_prediction_writes_at_the_models_threshold(model, tmp_path):
    pairs = find_pairs(make_dataset(tmp_path / "d", n=3))
    images, gts = zip(*(read_pair(p.image, p.mask) for p in pairs), strict=True)
    probs = np.concatenate([p.probability.ravel() for p in Predictor(model).predict_batch(images)])
    cut = float(np.quantile(probs, 0.7))  # a threshold inside this random model's maps, away from 0.5
    assert abs(cut - 0.5) > 1e-3
    moved = SamSP(dataclasses.replace(model.config, threshold=cut))
    moved.load_state_dict(model.state_dict())
    evaluate(moved, pairs, tmp_path / "ev")
    with (tmp_path / "ev" / "per_image.csv").open(newline="") as handle:
        scored = [float(row["dice"]) for row in csv.DictReader(handle)]
    written = Predictor(moved).predict_batch(images)
    at_cut = [image_metrics(p.mask.astype(np.float32), g)["dice"] for p, g in zip(written, gts, strict=True)]
    at_half = [image_metrics(p.probability, g)["dice"] for p, g in zip(written, gts, strict=True)]
    assert all(np.array_equal(p.mask, p.probability > cut) for p in written)
    assert scored == pytest.approx(at_cut, abs=1e-6)
    assert scored != pytest.approx(at_half, abs=1e-6)  # the threshold changed what was scored


def test_evaluation_encodes_the_frozen_prefix_first_by_the_faster_engine(tmp_path, monkeypatch):
    """Prompt-free fp32 evaluation encodes the frozen prefix of all images first, by OpenVINO on a CPU when there are
    enough images to pay for compiling it: the maps the predictor gives from the images themselves."""
    pytest.importorskip("openvino", reason="the OpenVINO prefix engine needs samsp[openvino]")
    from samsp.evaluation import evaluate as evaluate_module
    from samsp.inference import prefix_graph

    monkeypatch.setattr(prefix_graph, "MIN_IMAGES", 2)  # 3 images are enough here
    engines = []
    real_encoder = evaluate_module.prefix_encoder
    monkeypatch.setattr(
        evaluate_module, "prefix_encoder", lambda model, engine: engines.append(engine) or real_encoder(model, engine)
    )
    torch.manual_seed(0)
    model = SamSP(ModelConfig(backbone="tiny", adapt_stages=1))
    assert model.prefix_stages == 2
    data = load_eval_set(find_pairs(make_dataset(tmp_path / "d", n=3)), model)
    probs = predict_set(model, data)
    assert engines == ["openvino"]
    direct = Predictor(model).predict_inputs(data.inputs, data.frames)
    for prob, pred in zip(probs, direct, strict=True):
        assert np.allclose(prob, pred.probability, atol=1e-3)
    chosen = []
    real_choice = evaluate_module.predictor_prefix_engine
    monkeypatch.setattr(
        evaluate_module, "predictor_prefix_engine", lambda *a: chosen.append(real_choice(*a)) or chosen[-1]
    )
    flipped = predict_set(model, data, flips=True)  # each batch's three views go through the compiled prefix
    assert engines == ["openvino"] and chosen == ["openvino"]
    direct = Predictor(model, flips=True).predict_inputs(data.inputs, data.frames)
    for prob, pred in zip(flipped, direct, strict=True):
        assert np.allclose(prob, pred.probability, atol=1e-3)


def test_a_predictor_can_encode_the_frozen_prefix_of_each_batch_in_a_compiled_graph(images):
    """The maps the model gives by itself, up to the compiled graph's rounding, with and without test-time flips
    (each mirrored view's prefix goes through the graph too)."""
    pytest.importorskip("openvino", reason="the OpenVINO prefix engine needs samsp[openvino]")
    torch.manual_seed(0)
    model = SamSP(ModelConfig(backbone="tiny", adapt_stages=1))
    compiled = Predictor(model, batch_size=2, prefix_engine="openvino")
    assert compiled.encode_prefix is not None
    for a, b in zip(Predictor(model, batch_size=2).predict_batch(images), compiled.predict_batch(images), strict=True):
        assert np.allclose(a.probability, b.probability, atol=1e-3)
        assert (a.mask == b.mask).mean() > 0.99
    flipped = Predictor(model, batch_size=2, flips=True, prefix_engine="openvino")
    assert flipped.encode_prefix is not None
    plain = Predictor(model, batch_size=2, flips=True).predict_batch(images)
    for a, b in zip(plain, flipped.predict_batch(images), strict=True):
        assert np.allclose(a.probability, b.probability, atol=1e-3)
        assert (a.mask == b.mask).mean() > 0.99


def test_samsp_predict_compiles_the_frozen_prefix_when_there_are_images_enough(tmp_path, monkeypatch, samsp_log):
    """`samsp predict` (PyTorch engine) chooses the prefix engine as evaluation does, for the images it is given."""
    pytest.importorskip("openvino", reason="the OpenVINO prefix engine needs samsp[openvino]")
    from samsp.inference import prefix_graph

    monkeypatch.setattr(prefix_graph, "MIN_IMAGES", 3)  # 3 images are enough here
    torch.manual_seed(0)
    model = SamSP(ModelConfig(backbone="tiny", adapt_stages=1))
    folder = model.save_pretrained(tmp_path / "model")
    data = make_dataset(tmp_path / "d", n=3)
    assert main(["predict", "--model", str(folder), str(data / "images"), "--out", str(tmp_path / "out")]) == 0
    assert "CPU, fp32: the frozen prefix runs in OpenVINO" in samsp_log.text
    images = sorted((data / "images").iterdir())
    for image, direct in zip(images, Predictor(model).predict_batch([read_image(p) for p in images]), strict=True):
        written = np.asarray(read_image(tmp_path / "out" / "masks" / f"{image.stem}.png"))[..., 0] > 0
        assert (written == direct.mask).mean() > 0.99
    monkeypatch.setattr(prefix_graph, "MIN_IMAGES", 4)
    samsp_log.clear()
    assert main(["predict", "--model", str(folder), str(data / "images"), "--out", str(tmp_path / "few")]) == 0
    assert "too few to pay for compiling the prefix" in samsp_log.text


@torch.no_grad()
def test_flips_average_the_three_views_each_prompting_itself(model, images):
    from samsp.inference.preprocess import preprocess

    x, frame = preprocess(images[0], model.backbone)
    x, valid = x[None], torch.tensor([frame.resized_hw])
    averaged = torch.sigmoid(Predictor(model, flips=True).passes(x, valid).logits[-1])
    views = [model.eval()(images=x, valid_hw=valid).logits[-1]]
    for dim in (-1, -2):
        views.append(flip_valid(model(images=flip_valid(x, valid, dim), valid_hw=valid).logits[-1], valid, dim))
    expected = torch.stack([torch.sigmoid(v) for v in views]).mean(0)
    assert torch.allclose(averaged, expected, atol=1e-4)
    assert not torch.allclose(torch.sigmoid(views[0]), expected, atol=1e-3)  # a random model is not flip-invariant
    flipped = Predictor(model, flips=True).predict(images[0])
    assert flipped.mask.shape == images[0].shape[:2]


def test_flip_valid_flips_only_the_unpadded_region():
    x = torch.arange(2 * 4 * 5, dtype=torch.float32).reshape(2, 4, 5)
    valid = torch.tensor([[2, 3], [4, 5]])
    out = flip_valid(x, valid, -1)
    assert torch.equal(out[0, :2, :3], x[0, :2, :3].flip(-1)) and torch.equal(out[0, 2:], x[0, 2:])
    assert torch.equal(out[0, :, 3:], x[0, :, 3:]) and torch.equal(out[1], x[1].flip(-1))
    assert torch.equal(flip_valid(out, valid, -1), x)


def test_bad_options_are_refused(model):
    with pytest.raises(SamspError, match="precision must be one of fp32, bf16"):
        Predictor(model, precision="int4")
    with pytest.raises(SamspError, match="batch size"):
        Predictor(model, batch_size=0)
    with pytest.raises(SamspError, match="flips"):
        list(Predictor(model, flips=True).predict_inputs([torch.zeros(3, 128, 128)], [None], features=[1]))


def test_prediction_leaves_a_training_model_in_training_mode(model, images):
    model.train()
    Predictor(model).predict(images[0])
    assert model.training
    model.eval()
