"""model.input_size: a backbone run on another square input than its own (LiteMedSAM's TinyViT at 320 px, ...)."""

import numpy as np
import pytest
from helpers import make_dataset
from PIL import Image

from samsp import ModelConfig, SamSP
from samsp.cli import main
from samsp.data.pairs import find_pairs
from samsp.data.splits import read_id_list, select
from samsp.errors import SamspError
from samsp.evaluation.evaluate import load_eval_set, predict_set
from samsp.evaluation.metrics import image_metrics
from samsp.inference.prefix_graph import prefix_digest
from samsp.modeling.card import card_rows, read_card
from samsp.modeling.persistence import read_model_meta


def test_litemedsam_at_320_px_keeps_its_pretrained_skill_and_answers_at_the_image_size(shared_data):
    root = shared_data / "kvasir-seg"
    test = select(find_pairs(root), read_id_list(root / "splits" / "pranet_test.txt"), "test")[:3]
    model = SamSP(ModelConfig(strategy="frozen", input_size=320)).eval()
    assert model.backbone.img_size == 320 and model.prompt_encoder.image_embedding_size == (80, 80)
    data = load_eval_set(test, model)
    probs = predict_set(model, data, prompt="gt_box")
    assert [p.shape for p in probs] == [g.shape for g in data.gts]
    assert np.mean([image_metrics(p, g)["dice"] for p, g in zip(probs, data.gts, strict=True)]) > 0.8


def test_the_same_frozen_weights_at_another_size_are_another_compiled_prefix():
    """The prefix's weights are equal at every size, so the size itself must tell the caches apart."""
    native = SamSP(ModelConfig(adapt_stages=1))
    assert prefix_digest(SamSP(ModelConfig(adapt_stages=1, input_size=256))) == prefix_digest(native)
    assert prefix_digest(SamSP(ModelConfig(adapt_stages=1, input_size=320))) != prefix_digest(native)


def test_a_run_trained_at_another_size_saves_loads_and_predicts_at_it(tmp_path):
    data = make_dataset(tmp_path / "data", n=8)
    fast = ["--backbone", "tiny", "--set", "runtime.threads=1", "--set", "runtime.mixed_precision=no"]
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), *fast, "--epochs", "1", "--input-size", "160"]) == 0
    model = SamSP.from_pretrained(run)
    assert model.config.input_size == 160 and model.backbone.img_size == 160
    image = np.asarray(Image.open(data / "images" / "case_01.png"))
    assert model.predict(image).mask.shape == image.shape[:2]
    meta = read_model_meta(run / "best")
    assert meta["model"]["input_size"] == 160
    assert ("backbone", "tiny (160 px input)") in card_rows(read_card(run / "best", meta))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"input_size": 100}, "model.input_size must be a multiple of 32, at least 64, got 100"),
        ({"backbone": "vit_b", "input_size": 512}, "model.input_size 512: vit_b runs at 1024 px only"),
    ],
)
def test_an_input_size_the_backbone_cannot_take_is_one_clear_line(config, message):
    with pytest.raises(SamspError, match=message):
        SamSP(ModelConfig(**config))
