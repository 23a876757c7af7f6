"""Backbone registry, official checkpoint handling (offline, checksum), and the SAM ViT code paths at random init."""

import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

from samsp import ModelConfig, SamSP
from samsp.config import load_config
from samsp.errors import SamspError
from samsp.modeling.backbones import BACKBONES, build_sam, checkpoint_path, get_backbone


def test_offline_download_says_where_to_put_the_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMSP_CACHE", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(SamspError, match=r"sam_vit_b_01ec64\.pth.*--checkpoint PATH"):
        checkpoint_path(get_backbone("vit_b"), None)
    assert not list(tmp_path.rglob("*.part"))


def test_a_download_with_the_wrong_checksum_is_discarded(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMSP_CACHE", str(tmp_path))

    class Fake:
        headers = {"Content-Length": "20"}

        def __init__(self):
            self.chunks = [b"not the real weights", b""]

        def read(self, n):
            return self.chunks.pop(0)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: Fake())
    with pytest.raises(SamspError, match="does not match the expected"):
        checkpoint_path(get_backbone("vit_l"), None)
    assert not list((tmp_path / "checkpoints").iterdir())


def test_a_cached_or_given_checkpoint_is_used_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMSP_CACHE", str(tmp_path))
    cached = tmp_path / "checkpoints" / "sam_vit_h_4b8939.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert checkpoint_path(get_backbone("vit_h"), None) == cached
    with pytest.raises(SamspError, match="checkpoint file not found"):
        checkpoint_path(get_backbone("vit_b"), tmp_path / "missing.pth")


@pytest.mark.parametrize("name", ["vit_b"])
def test_sam_vit_builds_at_random_init_with_lora_on_every_block(name):
    torch.manual_seed(0)
    model = SamSP(ModelConfig(backbone=name), pretrained=False)
    assert model.backbone.img_size == 1024
    assert model.stage_names[0] == "patch_embed" and model.stage_names[-1] == "neck"
    lora = {n.split(".lora_")[0] for n, p in model.named_parameters() if p.requires_grad and "lora_" in n}
    assert len(lora) == 2 * 12  # qkv and proj in each of the 12 blocks
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable < 0.1 * sum(p.numel() for p in model.parameters())


def test_sam_vit_weights_round_trip_through_a_checkpoint_file(tmp_path):
    sam = build_sam(get_backbone("tiny"))
    path = tmp_path / "tiny.pth"
    torch.save({"model": {f"module.{k}": v for k, v in sam.state_dict().items()}}, path)  # DDP-style keys
    loaded = build_sam(get_backbone("tiny"), path)
    assert all(torch.equal(a, b) for a, b in zip(sam.state_dict().values(), loaded.state_dict().values(), strict=True))


def test_every_registered_backbone_has_its_weights_source():
    for backbone in BACKBONES.values():
        if backbone.weights == "download":
            assert backbone.filename and len(backbone.sha256) == 64 and backbone.size_bytes
        assert backbone.normalization in ("minmax", "imagenet")


CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("config", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_shipped_configs_load(config):
    loaded = load_config(CONFIGS / config)
    assert loaded.model.backbone in BACKBONES
