"""Sharing a model: the card beside every saved model, Hub repo ids in from_pretrained (a local Hub cache only, never
the network), and `samsp push` (huggingface_hub's upload replaced by a recorder)."""

from __future__ import annotations

import json
import shutil

import huggingface_hub
import numpy as np
import pytest
from helpers import make_dataset

import samsp
from samsp import SamSP
from samsp.cli import main
from samsp.errors import SamspError
from samsp.inference.export import export_model
from samsp.modeling.card import read_card
from samsp.modeling.persistence import read_model_meta

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("card")
    data = make_dataset(root / "polyps", n=8)
    overrides = ["model.backbone=tiny", "optim.epochs=1", "runtime.mixed_precision=no", "runtime.threads=1"]
    return samsp.train(data=data, out=root / "run", overrides=overrides)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face Hub cache, offline: nothing can reach the network."""
    cache = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)  # so "someone/polyps" is no local folder
    return cache


def cache_repo(cache, repo_id: str, model_dir) -> None:
    """Put a model folder into the Hub cache as `huggingface_hub` lays out a downloaded snapshot."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(model_dir, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)


def test_every_saved_model_has_a_card(run):
    meta = read_model_meta(run / "best")
    assert meta["data"] == {"source": "polyps", "train_images": 7, "val_images": 1}
    card = (run / "best" / "README.md").read_text()
    assert "library_name: samsp" in card and "| backbone | tiny (128 px input) |" in card
    assert "| trained on | polyps (7 training images, 1 validation images) |" in card
    assert f"| validation Dice | {meta['val_dice']:.3f} (no prompt), epoch 1 |" in card
    assert 'SamSP.from_pretrained("path/to/this/folder")' in card and '"backbone": "tiny"' in card


def test_an_export_keeps_the_card_of_its_run(run, tmp_path):
    out, _ = export_model(run, tmp_path / "export")
    card = read_card(out, read_model_meta(out))
    trained = read_card(run / "best", read_model_meta(run / "best"))
    assert (card.data, card.train_images, card.val_dice, card.epoch) == ("polyps", 7, trained.val_dice, 1)
    assert card.format == "full" and card.strategy == "lora"  # as trained, though the export is merged
    assert "every weight (merged export)" in (out / "README.md").read_text()


def test_checkpoints_without_the_data_record_read_their_run_folder(run, tmp_path):
    old = shutil.copytree(run, tmp_path / "old")
    meta = read_model_meta(old / "best")
    del meta["data"]  # as saved before samsp.json recorded it
    (old / "best" / "samsp.json").write_text(json.dumps(meta))
    card = read_card(old / "best", read_model_meta(old / "best"))
    assert (card.name, card.data, card.train_images, card.val_images) == ("old", "polyps", 7, 1)


def test_a_hub_repo_id_loads_from_the_hub_cache_offline(run, hub_cache, tmp_path, capsys):
    cache_repo(hub_cache, "someone/polyps", run / "best")
    image = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    local, hub = SamSP.from_pretrained(run), SamSP.from_pretrained("someone/polyps")
    assert np.array_equal(local.predict(image).probability, hub.predict(image).probability)
    make_dataset(tmp_path / "new", n=2)
    assert main(["predict", "--model", "someone/polyps", str(tmp_path / "new" / "images"), "--out", "pred"]) == 0
    assert "wrote 2 masks" in capsys.readouterr().out


def test_a_hub_repo_that_is_not_cached_offline_is_one_clear_line(hub_cache, capsys):
    with pytest.raises(SamspError, match=r"someone/missing: not a local model folder.*hf download someone/missing"):
        SamSP.from_pretrained("someone/missing")
    assert main(["predict", "--model", "someone/missing", "x.png", "--out", "pred"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--local-dir" in err


def test_push_uploads_the_model_and_its_card(run, tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(kw) or "URL")

    def upload_folder(self, **kwargs):
        files = sorted(p.name for p in (tmp_path / "run").iterdir())
        calls.append({**kwargs, "files": files})

    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    model = shutil.copytree(run / "best", tmp_path / "run")
    assert main(["push", "--model", str(model), "--repo", "someone/polyps", "--private"]) == 0
    create, upload = calls
    assert create["private"] is True and upload["repo_id"] == "someone/polyps"
    assert upload["folder_path"] == str(model) and upload["files"] == ["README.md", "samsp.json", "weights.safetensors"]
    assert sorted(upload["allow_patterns"]) == ["README.md", "samsp.json", "weights.safetensors"]
    assert 'SamSP.from_pretrained("someone/polyps")' in (model / "README.md").read_text()
    assert "uploaded" in capsys.readouterr().out


def test_push_failures_are_one_line(run, monkeypatch, capsys):
    def offline(self, repo_id, **kwargs):
        raise OSError("Name or service not known\nmore detail")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", offline)
    assert main(["push", "--model", str(run), "--repo", "someone/polyps"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "hf auth login" in err
    assert main(["push", "--model", str(run), "--repo", "not a repo"]) == 2
    assert "not a Hugging Face Hub repository id" in capsys.readouterr().err
