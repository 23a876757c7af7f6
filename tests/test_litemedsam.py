"""The embedded default backbone on real Kvasir-SEG images from ../shared/data (skipped when absent)."""

import numpy as np
import pytest
import torch

from samsp import ModelConfig, SamSP
from samsp.config import LossConfig
from samsp.data.io import read_pair
from samsp.data.pairs import find_pairs
from samsp.data.prepared import PreparedSet, collate
from samsp.data.splits import read_id_list, select
from samsp.errors import SamspError
from samsp.evaluation.evaluate import load_eval_set, predict_set
from samsp.evaluation.metrics import image_metrics
from samsp.modeling.backbones import build_sam, get_backbone
from samsp.modeling.losses import samsp_loss


@pytest.fixture(scope="module")
def kvasir(shared_data):
    root = shared_data / "kvasir-seg"
    pairs = find_pairs(root)
    train = select(pairs, read_id_list(root / "splits" / "pranet_train.txt"), "train")
    test = select(pairs, read_id_list(root / "splits" / "pranet_test.txt"), "test")
    return train, test


def test_bundled_weights_load_into_segment_anything_modules():
    sam = build_sam(get_backbone("litemedsam"))
    assert sum(p.numel() for p in sam.parameters()) > 9_000_000
    assert type(sam.mask_decoder).__module__.startswith("segment_anything.")


def test_zero_shot_reference_rows_match_the_published_behaviour(kvasir):
    """Ground-truth box >> whole-image box > no prompt: the preprocessing is LiteMedSAM's."""
    _, test = kvasir
    model = SamSP(ModelConfig(strategy="frozen")).eval()
    data = load_eval_set(test[:4], model)
    dice = {}
    for prompt in ("none", "full_box", "gt_box"):
        probs = predict_set(model, data, prompt=prompt)
        dice[prompt] = np.mean([image_metrics(p, g)["dice"] for p, g in zip(probs, data.gts, strict=True)])
    assert dice["gt_box"] > 0.8
    assert dice["gt_box"] > dice["full_box"] + 0.2
    assert dice["none"] < 0.2


def test_a_short_fine_tune_lowers_the_loss_and_predicts_a_mask_of_the_right_size(kvasir):
    torch.manual_seed(0)
    train, _ = kvasir
    model = SamSP(ModelConfig(adapt_stages=1))
    data = PreparedSet(train[:2], model.backbone)
    batch = collate([data.item(i) for i in range(2)])
    features = model.encode_prefix(batch["image"])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-4)
    model.train()
    dice = []
    for _ in range(25):
        out = model(features=features, valid_hw=batch["valid_hw"])
        loss, parts = samsp_loss(out.logits, batch["mask"], LossConfig())
        loss.backward()
        opt.step()
        opt.zero_grad()
        dice.append(parts["dice"])
    assert np.mean(dice[-3:]) < dice[0] - 0.5, dice
    image, gt = read_pair(train[0].image, train[0].mask)
    pred = model.eval().predict(image)
    assert pred.mask.shape == gt.shape == image.shape[:2]
    assert pred.mask.any()
    assert image_metrics(pred.probability, gt)["dice"] > 0.3


def test_the_trainer_caches_the_features_that_inference_computes(kvasir):
    """Regression: a freshly built model once ran TinyViT's BatchNorm in training mode while caching the prefix."""
    from samsp.training.batches import Batches

    train, _ = kvasir
    model = SamSP(ModelConfig(adapt_stages=1))  # fresh, as the trainer builds it
    data = PreparedSet(train[:2], model.backbone)
    cached = Batches(data, model, views=1, seed=0, batch_size=2, device=torch.device("cpu"), dtype=torch.float32)
    deployed = SamSP(ModelConfig(adapt_stages=1)).eval()
    with torch.no_grad():
        expected = deployed.encode_prefix(torch.stack([data.item(i)["image"] for i in range(2)]))
    assert torch.allclose(torch.stack([f[0] for f in cached.features]), expected, atol=1e-5)


def test_the_feature_store_names_litemedsam_features_by_their_frozen_weights(kvasir, tmp_path):
    """Regression: hashing TinyViT's 0-d BatchNorm counters failed, so `runtime.cache_dir` broke LiteMedSAM."""
    from samsp.training.feature_store import store_path

    train, _ = kvasir
    model = SamSP(ModelConfig(adapt_stages=1))
    data = PreparedSet(train[:2], model.backbone)
    recipe = (1, None, torch.float32, False)
    path = store_path(tmp_path, data, model, model.prefix_stages, recipe)
    assert path == store_path(tmp_path, data, SamSP(ModelConfig(adapt_stages=1)), model.prefix_stages, recipe)
    with torch.no_grad():
        next(p for n, p in model.image_encoder.named_parameters() if "lora_" not in n).add_(1e-3)
    assert path != store_path(tmp_path, data, model, model.prefix_stages, recipe)  # other weights, other file
    assert path != store_path(tmp_path, data, model.to(torch.bfloat16), model.prefix_stages, recipe)


def test_runs_that_adapt_the_same_stages_differently_share_the_feature_store_file(kvasir, tmp_path):
    """Regression: the store hashed the trained stage's weights by name, and LoRA on the MLP renames them
    (`fc1.base_layer.weight`), so a row adapting the MLP too encoded the same prefix again (7 minutes, 8 GB)."""
    from samsp.inference.prefix_graph import prefix_digest
    from samsp.training.feature_store import store_path

    train, _ = kvasir
    model = SamSP(ModelConfig(adapt_stages=1))
    data = PreparedSet(train[:2], model.backbone)
    recipe = (1, None, torch.float32, False)
    path = store_path(tmp_path, data, model, model.prefix_stages, recipe)
    for other in (
        ModelConfig(adapt_stages=1, lora_targets=("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")),
        ModelConfig(adapt_stages=1, train_neck=True),
    ):
        assert store_path(tmp_path, data, SamSP(other), model.prefix_stages, recipe) == path
        assert prefix_digest(SamSP(other)) == prefix_digest(model)  # the compiled prefix is reused too
    weights = dict(model.image_encoder.named_parameters())
    with torch.no_grad():  # a trained stage's weight is not the prefix's; a weight of the prefix names another file
        weights["base_model.model.neck.0.weight"].add_(1e-3)
        assert store_path(tmp_path, data, model, model.prefix_stages, recipe) == path
        weights["base_model.model.patch_embed.seq.0.c.weight"].add_(1e-3)
        assert store_path(tmp_path, data, model, model.prefix_stages, recipe) != path


def test_a_vit_checkpoint_is_refused_for_litemedsam(tmp_path):
    wrong = tmp_path / "sam_vit_b.pth"
    torch.save(build_sam(get_backbone("tiny")).state_dict(), wrong)
    with pytest.raises(SamspError, match="sam_vit_b.pth: not a litemedsam checkpoint"):
        build_sam(get_backbone("litemedsam"), wrong)


def test_flipped_cached_features_stand_in_for_the_features_of_the_flipped_image(kvasir):
    """data.cached_flips mirrors LiteMedSAM's cached token grid; it must land near what encoding the mirrored image
    gives (the layout and the valid region right), far nearer than the unflipped features."""
    from samsp.inference.predictor import flip_valid
    from samsp.training.feature_flips import flip_sample

    train, _ = kvasir
    model = SamSP(ModelConfig(strategy="full", adapt_stages=0)).eval()  # the whole body cached: the neck recipe
    data = PreparedSet(train[:2], model.backbone)
    layout = model.features_layout(model.prefix_stages)
    for i in range(2):
        item = data.item(i)
        image = flip_valid(item["image"][None], item["valid_hw"][None], -1)
        with torch.no_grad():
            features, target = model.encode_prefix(item["image"][None])[0], model.encode_prefix(image)[0]
        flipped, _ = flip_sample(features, item["mask"], item["valid_hw"], layout, True, False)

        def centred(tokens: torch.Tensor) -> torch.Tensor:  # each channel's mean over the grid removed
            return (tokens - tokens.mean(0)).flatten()

        cosine = torch.nn.functional.cosine_similarity
        near = float(cosine(centred(flipped), centred(target), 0))
        far = float(cosine(centred(features), centred(target), 0))
        assert near > 0.6 and near > far + 0.1, (near, far)  # measured 0.69 / 0.53 and 0.76 / 0.57
