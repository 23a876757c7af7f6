"""The main job (`samsp demo`) end to end on real Kvasir-SEG images, with the tiny random backbone (fast)."""

from __future__ import annotations

import json

from samsp.demo import run_demo
from samsp.training import batches as batches_module


def test_the_demo_trains_compares_four_rows_on_the_pranet_test_ids_and_frees_its_training_features(
    shared_data, tmp_path, monkeypatch
):
    monkeypatch.setattr(batches_module, "_PREFIX_MEMO", type(batches_module._PREFIX_MEMO)())
    out = tmp_path / "demo"
    result = run_demo(
        shared_data / "kvasir-seg",
        out,
        train_size=8,
        val_size=4,
        minutes=0.05,
        overrides=["model.backbone=tiny", "optim.epochs=1", "runtime.threads=1", "optim.batch_size=4"],
    )
    assert not batches_module._PREFIX_MEMO  # scoring got the memory the training features held
    assert len((out / "demo_train_ids.txt").read_text().split()) == 8
    assert len((out / "demo_val_ids.txt").read_text().split()) == 4
    assert result["test_images"] == 100  # the PraNet Kvasir test ids
    assert [(r["row"], r["prompt"]) for r in result["rows"]] == [
        ("zero-shot LiteMedSAM, no prompt", "none"),
        ("zero-shot LiteMedSAM, whole-image box", "full_box"),
        ("zero-shot LiteMedSAM, ground-truth box (oracle)", "gt_box"),
        ("SAM-SP fine-tuned, no prompt", "none"),
    ]
    assert all(0.0 <= r["mDice"] <= 1.0 and 0.0 <= r["mIoU"] <= r["mDice"] + 1e-9 for r in result["rows"])
    assert json.loads((out / "results.json").read_text())["rows"] == result["rows"]
    table = (out / "results.md").read_text().splitlines()
    assert table[0].startswith("Kvasir-SEG PraNet test (100 images); SAM-SP trained on 8 PraNet training images")
    assert len([line for line in table if line.startswith("| ")]) == 5  # header and four rows
    per_image = out / "eval" / "SAM-SP_fine-tuned" / "none"
    assert per_image.is_dir() and any(per_image.iterdir())
