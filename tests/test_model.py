"""The SamSP module on the tiny random backbone: passes, training scope, fallback, merge, save/load."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from samsp import ModelConfig, SamSP
from samsp.config import LossConfig
from samsp.errors import SamspError
from samsp.modeling.losses import samsp_loss


def tiny(**kw) -> SamSP:
    torch.manual_seed(0)
    return SamSP(ModelConfig(backbone="tiny", **kw))


def image_batch(b=2):
    torch.manual_seed(1)
    return torch.randn(b, 3, 128, 128)


def test_forward_returns_every_pass_at_input_resolution():
    model = tiny(iterations=2).eval()
    out = model(images=image_batch(), iterations=3)
    assert len(out.logits) == 4 and len(out.boxes) == 3
    assert all(p.shape == (2, 128, 128) for p in out.logits)
    assert out.scores.shape == (2,) and out.fallback.dtype == torch.bool


def test_no_self_prompt_is_one_no_prompt_pass():
    out = tiny(self_prompt=False).eval()(images=image_batch())
    assert len(out.logits) == 1 and out.boxes == []


@pytest.mark.parametrize("prompted", [False, True])
def test_the_batched_decoder_equals_segment_anythings_one_image_per_call(prompted):
    model = tiny().eval()
    torch.manual_seed(2)
    embeddings = torch.randn(3, 256, 8, 8)
    boxes = torch.tensor([[[5.0, 6.0, 60.0, 70.0]], [[0.0, 0.0, 127.0, 127.0]], [[30.0, 20.0, 40.0, 90.0]]])
    boxes = boxes if prompted else None
    with torch.no_grad():
        sparse, dense = model.prompt_encoder(points=None, boxes=boxes, masks=None)
        pe, low, iou = model.prompt_encoder.get_dense_pe(), [], []
        for i in range(3):
            j = slice(i, i + 1) if prompted else slice(0, 1)
            out = model.mask_decoder(embeddings[i : i + 1], pe, sparse[j], dense[j], multimask_output=False)
            low.append(out[0])
            iou.append(out[1])
        logits, scores = model.decode(embeddings, boxes)
    reference = F.interpolate(torch.cat(low), (128, 128), mode="bilinear", align_corners=False)[:, 0]
    assert (logits - reference).abs().max() < 1e-5
    assert (scores - torch.cat(iou)[:, 0]).abs().max() < 1e-5


def test_the_box_comes_from_the_first_pass_and_respects_the_valid_region():
    model = tiny().eval()
    forced = torch.full((1, 128, 128), -5.0)
    forced[0, 10:20, 30:60] = 5.0
    forced[0, 100:, 100:] = 5.0  # lies in the padding: must not widen the box
    model.decode = _scripted_decode(model, forced)
    out = model.decoder_passes(torch.zeros(1, 256, 8, 8), valid_hw=torch.tensor([[90, 90]]), iterations=1)
    assert out.boxes[0].tolist() == [[30.0, 10.0, 59.0, 19.0]]


def _scripted_decode(model, first_logits):
    real = model.decode

    def decode(embeddings, boxes, fused=None, masks=None):
        if boxes is None:
            return first_logits.clone(), torch.zeros(first_logits.shape[0])
        return real(torch.zeros(first_logits.shape[0], 256, 8, 8), boxes, fused, masks)

    return decode


@pytest.mark.parametrize("fallback", ["no_prompt", "full_box"])
def test_empty_first_pass_uses_the_configured_fallback(fallback):
    model = tiny(empty_fallback=fallback).eval()
    empty = torch.full((1, 128, 128), -5.0)
    model.decode = _scripted_decode(model, empty)
    out = model.decoder_passes(torch.zeros(1, 256, 8, 8), valid_hw=torch.tensor([[128, 96]]))
    assert out.fallback.tolist() == [True]
    if fallback == "no_prompt":
        assert torch.equal(out.logits[1], out.logits[0])  # y1 = y0
        assert torch.isnan(out.boxes[0]).all()
    else:
        assert out.boxes[0].tolist() == [[0.0, 0.0, 95.0, 127.0]]
        assert not torch.equal(out.logits[1], out.logits[0])


@pytest.mark.parametrize(
    ("strategy", "adapt", "encoder_trains"),
    [
        ("lora", None, "lora"),
        ("lora", 1, "lora"),
        ("lora", 1, "lora + neck"),
        ("frozen", None, "none"),
        ("full", 1, "last"),
        ("full", 0, "neck"),
    ],
)
def test_only_the_intended_parameters_train(strategy, adapt, encoder_trains):
    model = tiny(strategy=strategy, adapt_stages=adapt, train_neck=encoder_trains == "lora + neck")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    enc = {n for n in trainable if n.startswith("image_encoder.")}
    assert all(n.startswith(("prompt_encoder.", "mask_decoder.", "image_encoder.")) for n in trainable)
    assert any(n.startswith("mask_decoder.") for n in trainable)
    assert any(n.startswith("prompt_encoder.") for n in trainable)
    if encoder_trains == "lora":
        assert enc and all("lora_" in n for n in enc)
        if adapt == 1:
            assert all(".blocks.1." in n for n in enc)
    elif encoder_trains == "lora + neck":
        neck = {n for n in enc if ".neck." in n}
        assert neck and all("lora_" not in n for n in neck)
        assert all(".blocks.1." in n and "lora_" in n for n in enc - neck)
        assert model.trained_stages == ["blocks.1", "neck"]
    elif encoder_trains == "none":
        assert not enc
    elif encoder_trains == "neck":
        assert enc and all(".neck." in n for n in enc)
    else:
        assert enc and all(".blocks.1." in n or ".neck." in n for n in enc)
    expected_prefix = {None: 0, 1: 2, 0: 3}[adapt] if strategy != "frozen" else 4
    assert model.prefix_stages == expected_prefix


@pytest.mark.parametrize(("strategy", "adapt"), [("lora", 1), ("frozen", None), ("full", 1)])
def test_frozen_encoder_parts_are_in_eval_mode_from_construction(strategy, adapt):
    from samsp.modeling.lora import base_encoder

    model = tiny(strategy=strategy, adapt_stages=adapt)  # no .train() or .eval() called yet
    encoder = base_encoder(model.image_encoder)
    stages = model.backbone.stages(encoder)[: model.prefix_stages]
    frozen = [stage for _, stage in stages if isinstance(stage, torch.nn.Module)]
    assert frozen and not any(m.training for stage in frozen for m in stage.modules())
    assert model.mask_decoder.training  # the parts that learn start in training mode, as nn.Module does


def test_a_step_changes_lora_and_decoder_but_not_the_frozen_encoder():
    model = tiny(adapt_stages=1)
    model.train()
    frozen = {n: p.detach().clone() for n, p in model.image_encoder.named_parameters() if not p.requires_grad}
    lora_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    decoder_before = model.mask_decoder.output_upscaling[0].weight.detach().clone()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    target = torch.zeros(2, 128, 128)
    target[:, 30:90, 40:100] = 1
    loss, _ = samsp_loss(model(images=image_batch()).logits, target, LossConfig())
    loss.backward()
    opt.step()
    for n, p in model.image_encoder.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
    assert any(not torch.equal(p, lora_before[n]) for n, p in model.named_parameters() if "lora_B" in n)
    assert not torch.equal(model.mask_decoder.output_upscaling[0].weight, decoder_before)


def test_neck_only_trains_the_neck_from_cached_features():
    model = tiny(strategy="full", adapt_stages=0)
    assert model.trained_stages == ["neck"]
    model.train()
    assert model.image_encoder.neck.training and not model.image_encoder.blocks[1].training
    features = model.encode_prefix(image_batch())
    assert features.shape[1:] == (8, 8, 48)  # the last block's tokens: the neck runs in each step
    changed = _encoder_weights_one_step_changes(model, features)
    assert changed and all(n.startswith("neck.") for n in changed)


def _encoder_weights_one_step_changes(model: SamSP, features: torch.Tensor) -> set[str]:
    """The encoder parameters that one AdamW step from cached features changes."""
    before = {n: p.detach().clone() for n, p in model.image_encoder.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    target = torch.zeros(2, 128, 128)
    target[:, 30:90, 40:100] = 1
    loss, _ = samsp_loss(model(features=features).logits, target, LossConfig())
    loss.backward()
    opt.step()
    return {n for n, p in model.image_encoder.named_parameters() if not torch.equal(p, before[n])}


def _train_a_little(model: SamSP) -> SamSP:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    target = torch.zeros(2, 128, 128)
    target[:, 30:90, 40:100] = 1
    model.train()
    for _ in range(2):
        loss, _ = samsp_loss(model(images=image_batch()).logits, target, LossConfig())
        loss.backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


def test_lora_with_the_neck_trains_both_and_keeps_the_adapted_stage_in_eval_mode():
    model = tiny(adapt_stages=1, train_neck=True)
    model.train()
    encoder = model.image_encoder.get_base_model()
    assert encoder.neck.training and not encoder.blocks[1].training
    changed = _encoder_weights_one_step_changes(model, model.encode_prefix(image_batch()))
    assert {n for n in changed if ".neck." in n} and {n for n in changed if "lora_B" in n}
    assert all(".neck." in n or "lora_" in n for n in changed)


def test_lora_dropout_trains_while_the_adapted_stages_stay_in_eval_mode():
    model = tiny(lora_dropout=0.5)
    with torch.no_grad():  # lora_B starts at zero, which would hide what dropout does to the adapters' input
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.1)
    x = image_batch()
    for mode in (True, False):
        model.train(mode)
        dropouts = [m.training for n, m in model.named_modules() if n.endswith(".lora_dropout.default")]
        assert dropouts and all(t == mode for t in dropouts)
        assert not model.image_encoder.get_base_model().blocks[0].attn.training  # the stage itself stays in eval
        with torch.no_grad():
            torch.manual_seed(2)
            a = model.embed(x)[0]
            torch.manual_seed(3)
            b = model.embed(x)[0]
        assert torch.equal(a, b) != mode  # two draws of dropout differ in training only


def test_every_lora_target_must_match_a_layer_of_the_adapted_stages():
    both = tiny(lora_targets=("attn.qkv", "mlp.lin1"))
    adapted = {n.rsplit(".lora_A", 1)[0].rsplit(".", 1)[-1] for n, _ in both.named_parameters() if "lora_A" in n}
    assert adapted == {"qkv", "lin1"}
    # TinyViT names its MLP layers fc1/fc2, SAM's ViT lin1/lin2: peft alone would adapt qkv and say nothing
    with pytest.raises(SamspError, match=r"LoRA target 'mlp.fc1' \(model.lora_targets\) matches no layer"):
        tiny(lora_targets=("attn.qkv", "mlp.fc1"))
    with pytest.raises(SamspError, match="needs at least one layer name in model.lora_targets"):
        tiny(lora_targets=())


def test_a_box_decoder_runs_the_prompted_passes_and_learns_apart_from_pass_0():
    shared, own = tiny().eval(), tiny(box_decoder=True).eval()
    assert shared.box_decoder is None and own.box_decoder is not None
    x = image_batch()
    with torch.no_grad():  # the same pretrained start: the same passes before any training
        for a, b in zip(shared(images=x).logits, own(images=x).logits, strict=True):
            assert torch.allclose(a, b, atol=1e-6)
    trainable = {n for n, p in own.named_parameters() if p.requires_grad}
    assert any(n.startswith("box_decoder.") for n in trainable)
    assert not any("iou_prediction_head" in n for n in trainable)
    own.train()
    for k, (learns, stays) in enumerate([("mask_decoder.", "box_decoder."), ("box_decoder.", "mask_decoder.")]):
        own.zero_grad()
        own(images=x).logits[k].float().mean().backward()  # pass 0 alone, then the box-prompted pass alone
        moved = {n for n, p in own.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        assert any(n.startswith(learns) for n in moved) and not any(n.startswith(stays) for n in moved)
    with torch.no_grad():
        own.box_decoder.output_hypernetworks_mlps[0].layers[-1].bias.add_(1.0)
        own.eval()
        a, b = shared(images=x), own(images=x)
    assert torch.equal(a.logits[0], b.logits[0]) and not torch.allclose(a.logits[1], b.logits[1])
    with pytest.raises(SamspError, match="model.box_decoder needs a self-prompting pass"):
        ModelConfig(backbone="tiny", box_decoder=True, self_prompt=False)


def test_a_mask_prompt_gives_each_box_pass_the_previous_logits_without_their_gradient():
    plain, prompted = tiny(threshold=0.1, iterations=2).eval(), tiny(threshold=0.1, iterations=2, mask_prompt=True)
    prompted = prompted.eval()
    x = image_batch()
    with torch.no_grad():
        a, b = plain(images=x), prompted(images=x)
        assert not b.fallback.any()  # the box-prompted passes ran
        assert torch.equal(a.logits[0], b.logits[0])  # pass 0 has no prompt either way
        assert not torch.allclose(a.logits[1], b.logits[1], atol=1e-4)  # the mask prompt reached the decoder
        embeddings = prompted.embed(x)[0]
        for k in (1, 2):  # pass k: the box of pass k-1's mask and pass k-1's logits, as SAM's dense prompt
            again = prompted.decode(embeddings, b.boxes[k - 1][:, None, :], None, b.logits[k - 1])[0]
            assert torch.allclose(again, b.logits[k], atol=1e-5)
    own = tiny(threshold=0.1, mask_prompt=True, box_decoder=True).train()
    own(images=x).logits[1].float().mean().backward()  # the box pass alone: pass 0 is its prompt, not its input
    moved = {n for n, p in own.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(n.startswith("prompt_encoder.mask_downscaling.") for n in moved)
    assert not any(n.startswith("mask_decoder.") for n in moved)
    with pytest.raises(SamspError, match="model.mask_prompt needs a self-prompting pass"):
        ModelConfig(backbone="tiny", mask_prompt=True, iterations=0)


def test_early_fusion_starts_as_the_plain_model_learns_and_ends_the_cached_prefix_at_its_stage():
    plain, fused = tiny(adapt_stages=1), tiny(adapt_stages=1, fusion_stage="patch_embed")
    modes = [[m.training for m in model.image_encoder.modules()] for model in (plain, fused)]
    assert modes[0] == modes[1]  # sizing the head ran the encoder in eval mode, then each module's mode was set
    plain, fused = plain.eval(), fused.eval()
    assert plain.prefix_stages == 2 and fused.prefix_stages == 1  # the prefix's output is the fused stage's
    x = image_batch()
    with torch.no_grad():  # the head's last convolution starts at zero: the same passes before any training
        for a, b in zip(plain(images=x).logits, fused(images=x).logits, strict=True):
            assert torch.equal(a, b)
    early = fused.embed(x)[1]
    assert early.shape == (2, fused.mask_decoder.transformer_dim // 8, 32, 32)  # the decoder's upscaled grid
    fused.train()
    fused(images=x).logits[0].float().mean().backward()
    moved = {n for n, p in fused.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(n.startswith("early_fusion.") for n in moved)
    fused = _train_a_little(fused)
    assert any(n.startswith("early_fusion.") for n in fused.trainable_state_dict())
    with torch.no_grad():
        a = fused(images=x)
        b = fused(features=fused.encode_prefix(x))  # a cached prefix still gives the fused stage's features
        for la, lb in zip(a.logits, b.logits, strict=True):
            assert torch.allclose(la, lb, atol=1e-5)
        without_fusion = fused.decode(fused.embed(x)[0], None)[0]  # pass 0 from the same embeddings, nothing fused
        assert not torch.allclose(a.logits[0], without_fusion, atol=1e-4)
        with pytest.raises(SamspError, match="come after the fused stage"):
            fused.embed(fused.run_encoder(x, 0, 2), 2)


@pytest.mark.parametrize(
    ("stage", "message"),
    [("neck", "is not an encoder stage before the neck of tiny"), ("block.9", "choose one of patch_embed")],
)
def test_a_fusion_stage_that_cannot_be_fused_is_one_error(stage, message):
    with pytest.raises(SamspError, match=message):
        tiny(fusion_stage=stage)


def test_train_neck_outside_strategy_lora_is_one_error():
    with pytest.raises(SamspError, match="model.train_neck applies to strategy lora"):
        ModelConfig(strategy="full", adapt_stages=0, train_neck=True)


def test_cached_prefix_gives_the_same_passes_as_the_full_encoder():
    model = _train_a_little(tiny(adapt_stages=1))
    x = image_batch()
    a = model(images=x)
    b = model(features=model.encode_prefix(x))
    for la, lb in zip(a.logits, b.logits, strict=True):
        assert torch.allclose(la, lb, atol=1e-5)


def test_merged_model_predicts_the_same_masks_without_peft():
    model = _train_a_little(tiny())
    merged = model.merged()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    image = np.random.default_rng(0).integers(0, 256, (100, 140, 3), dtype=np.uint8)
    a, b = model.predict(image), merged.predict(image)
    assert np.abs(a.probability - b.probability).max() < 1e-4
    assert (a.mask == b.mask).mean() > 0.999


@pytest.mark.parametrize(
    ("settings", "training"),
    [
        ({}, "lora"),
        ({"strategy": "full", "adapt_stages": 0}, "full"),
        ({"train_neck": True}, "lora + neck"),
        ({"box_decoder": True}, "lora"),
        ({"fusion_stage": "blocks.0"}, "lora"),
        ({"mask_prompt": True}, "lora"),
    ],
    ids=["lora", "neck", "lora+neck", "box-decoder", "fusion", "mask-prompt"],
)
def test_save_and_load_round_trip_trainable_and_full(tmp_path, settings, training):
    model = _train_a_little(tiny(**settings))
    assert any(".neck." in name for name in model.trainable_state_dict()) == (training != "lora")
    assert any(name.startswith("box_decoder.") for name in model.trainable_state_dict()) == ("box_decoder" in settings)
    model.save_pretrained(tmp_path / "m")
    card = (tmp_path / "m" / "README.md").read_text()
    assert f"| encoder training | {training} |" in card
    assert ("after the no-prompt pass, in their own mask decoder |" in card) == ("box_decoder" in settings)
    assert ("| early-feature fusion | blocks.0's output added" in card) == ("fusion_stage" in settings)
    assert ("each also given the previous pass's logits as a mask prompt |" in card) == ("mask_prompt" in settings)
    loaded = SamSP.from_pretrained(tmp_path / "m")
    x = image_batch(1)
    assert torch.allclose(model(images=x).logits[-1], loaded(images=x).logits[-1], atol=1e-6)
    model.merged().save_pretrained(tmp_path / "full", full=True)
    full = SamSP.from_pretrained(tmp_path / "full")
    assert torch.allclose(model(images=x).logits[-1], full(images=x).logits[-1], atol=1e-4)


def test_a_model_saved_while_the_iou_head_still_trained_loads_it(tmp_path):
    from safetensors.torch import load_file, save_file

    model = tiny()
    model.save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "weights.safetensors"
    state = load_file(str(weights))
    head = {k: v + 1.0 for k, v in model.state_dict().items() if "iou_prediction_head" in k}
    assert head and not any(k in state for k in head)
    save_file({**state, **head}, str(weights))  # what samsp wrote before the IoU head was frozen
    loaded = SamSP.from_pretrained(tmp_path / "m").state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in head.items())


def test_loading_weights_of_another_configuration_names_the_file(tmp_path):
    tiny(adapt_stages=1).save_pretrained(tmp_path / "a")
    other = tiny(lora_rank=8)
    other.save_pretrained(tmp_path / "b")
    (tmp_path / "a" / "weights.safetensors").replace(tmp_path / "b" / "weights.safetensors")
    with pytest.raises(SamspError, match=r"b/weights\.safetensors.*(missing|wrong shape)"):
        SamSP.from_pretrained(tmp_path / "b")


def test_a_run_folder_means_its_final_model_and_best_is_named(tmp_path):
    best, final = tiny(), tiny()
    with torch.no_grad():
        for p in final.parameters():
            p.add_(1.0)
    best.save_pretrained(tmp_path / "run" / "best")
    final.save_pretrained(tmp_path / "run" / "last")
    key = next(k for k in SamSP.from_pretrained(tmp_path / "run" / "best").trainable_state_dict())
    loaded = SamSP.from_pretrained(tmp_path / "run").trainable_state_dict()
    assert torch.equal(loaded[key], final.trainable_state_dict()[key])
    assert not torch.equal(loaded[key], best.trainable_state_dict()[key])
    (tmp_path / "run" / "last").rename(tmp_path / "run" / "old")  # a folder with best/ alone still loads
    only_best = SamSP.from_pretrained(tmp_path / "run").trainable_state_dict()
    assert torch.equal(only_best[key], best.trainable_state_dict()[key])


def test_missing_or_broken_model_folders_are_clear_errors(tmp_path):
    with pytest.raises(SamspError, match="model folder not found"):
        SamSP.from_pretrained(tmp_path / "nope")
    tiny().save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(SamspError, match="cannot be read as safetensors"):
        SamSP.from_pretrained(tmp_path / "m")
    (tmp_path / "m" / "samsp.json").write_text("{not json")
    with pytest.raises(SamspError, match="samsp.json: not a samsp model config"):
        SamSP.from_pretrained(tmp_path / "m")


def test_predict_returns_original_size_mask_and_box_in_image_pixels():
    model = tiny().eval()
    image = np.random.default_rng(0).integers(0, 256, (77, 201, 3), dtype=np.uint8)
    preds = model.predict_batch([image, image[:, :50]], batch_size=2)
    assert preds[0].mask.shape == (77, 201) and preds[1].mask.shape == (77, 50)
    assert len(preds[0].pass_masks) == 2
    for p in preds:
        if p.box is not None:
            assert 0 <= p.box[0] <= p.box[2] <= p.mask.shape[1] and 0 <= p.box[1] <= p.box[3] <= p.mask.shape[0]
    with pytest.raises(SamspError, match="uint8"):
        model.predict(image.astype(np.float32))


def test_bf16_prediction_stays_close_to_fp32_and_a_bad_precision_is_refused():
    model = tiny().eval()
    image = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    exact, fast = model.predict(image), model.predict(image, precision="bf16")
    assert fast.probability.dtype == np.float32 and fast.mask.shape == exact.mask.shape
    assert np.abs(fast.probability - exact.probability).max() < 0.05
    with pytest.raises(SamspError, match="precision must be one of fp32, bf16"):
        model.predict(image, precision="fp16")


def test_bad_settings_are_refused():
    with pytest.raises(SamspError, match="model.backbone"):
        ModelConfig(backbone="vit_x")
    with pytest.raises(SamspError, match="empty_fallback"):
        ModelConfig(backbone="tiny", empty_fallback="guess")
    with pytest.raises(SamspError, match="strategy"):
        SamSP(ModelConfig(backbone="tiny", strategy="adapter"))


def test_box_opening_and_jitter_change_the_self_prompt_as_configured():
    forced = torch.full((1, 128, 128), -5.0)
    forced[0, 10:40, 30:60] = 5.0
    forced[0, 80, 0:120] = 5.0  # a one-pixel stray line
    emb, valid = torch.zeros(1, 256, 8, 8), torch.tensor([[128, 128]])
    plain = tiny().eval()
    plain.decode = _scripted_decode(plain, forced)
    opened = tiny(box_opening=1).eval()
    opened.decode = _scripted_decode(opened, forced)
    assert plain.decoder_passes(emb, valid).boxes[0].tolist() == [[0.0, 10.0, 119.0, 80.0]]
    assert opened.decoder_passes(emb, valid).boxes[0].tolist() == [[30.0, 10.0, 59.0, 39.0]]
    jittered = tiny(box_jitter=0.2)
    jittered.decode = _scripted_decode(jittered, forced)
    assert jittered.eval().decoder_passes(emb, valid).boxes[0].tolist() == [[0.0, 10.0, 119.0, 80.0]]
    assert jittered.train().decoder_passes(emb, valid).boxes[0].tolist() != [[0.0, 10.0, 119.0, 80.0]]


def test_prompt_boxes_add_one_pass_given_those_boxes_and_leave_the_self_prompting_chain_alone():
    model = tiny().eval()
    boxes = torch.tensor([[10.0, 20.0, 60.0, 70.0], [0.0, 0.0, 127.0, 127.0]])
    with torch.no_grad():
        plain = model(images=image_batch())
        out = model(images=image_batch(), prompt_boxes=boxes)
        embeddings = model.run_encoder(image_batch())
        expected, _ = model.decode(embeddings, boxes[:, None, :])
    assert plain.prompted is None and out.prompted.shape == (2, 128, 128)
    assert torch.allclose(out.prompted, expected)
    assert all(torch.equal(a, b) for a, b in zip(out.logits, plain.logits, strict=True))
