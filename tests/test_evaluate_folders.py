"""Scoring folders of saved predictions, and the report files it writes."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from PIL import Image

from samsp.errors import SamspError
from samsp.evaluation.folders import evaluate_mask_folders, read_prediction
from samsp.evaluation.metrics import METRIC_NAMES, image_metrics
from samsp.evaluation.report import format_table, write_report


def _gt(k: int, shape=(40, 48)) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[5 + k : 20 + k, 8 : 30 - k] = True
    return m


@pytest.fixture
def folders(tmp_path):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    rng = np.random.default_rng(0)
    probs = {}
    for k in range(4):
        gt = _gt(k)
        Image.fromarray(gt.astype(np.uint8) * 255).save(gt_dir / f"case{k}_mask.png")
        prob = np.clip(_gt(k + 1) * 0.8 + rng.random(gt.shape) * 0.2, 0, 1)
        probs[f"case{k}"] = np.round(prob * 255) / 255
    return gt_dir, pred_dir, probs


def test_evaluate_probability_and_binary_maps(tmp_path, folders):
    gt_dir, pred_dir, probs = folders
    for i, prob in probs.items():
        Image.fromarray(np.round(prob * 255).astype(np.uint8)).save(pred_dir / f"{i}.png")
    Image.fromarray((probs["case3"] > 0.5).astype(np.uint8)).save(pred_dir / "case3.png")  # 0/1 binary map
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(pred_dir / "stray.png")
    with pytest.warns(UserWarning, match="1 prediction.*no ground truth: stray"):
        summary = evaluate_mask_folders(pred_dir, gt_dir, tmp_path / "out", mask_suffix="_mask", title="t")
    expected = {i: image_metrics(p, _gt(int(i[-1]))) for i, p in probs.items()}
    expected["case3"] = image_metrics((probs["case3"] > 0.5).astype(float), _gt(3))
    assert summary["n_images"] == 4 and summary["title"] == "t"
    assert summary["mDice"] == pytest.approx(np.mean([m["dice"] for m in expected.values()]))
    with (tmp_path / "out" / "per_image.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == ["case0", "case1", "case2", "case3"]
    assert list(rows[0])[: 1 + len(METRIC_NAMES)] == ["id", *METRIC_NAMES]
    for r in rows:
        assert float(r["s_measure"]) == pytest.approx(expected[r["id"]]["s_measure"], abs=1e-6)
    on_disk = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert on_disk["pooled_dice"] == pytest.approx(summary["pooled_dice"])
    assert "mIoU" in on_disk and "n_nan" in on_disk


def test_missing_predictions_listed_together(tmp_path, folders):
    gt_dir, pred_dir, probs = folders
    Image.fromarray(np.zeros((40, 48), np.uint8)).save(pred_dir / "case1_pred.png")
    with pytest.raises(SamspError) as info:
        evaluate_mask_folders(pred_dir, gt_dir, tmp_path / "out", mask_suffix="_mask", pred_suffix="_pred")
    message = str(info.value)
    assert "3 of 4 ground-truth masks have no prediction" in message
    assert all(f"case{k}" in message for k in (0, 2, 3))


def test_resized_prediction_warns(tmp_path, folders):
    gt_dir, pred_dir, probs = folders
    for i, prob in probs.items():
        Image.fromarray(np.round(prob * 255).astype(np.uint8)).save(pred_dir / f"{i}.png")
    half = _gt(0)[::2, ::2].astype(np.uint8) * 255  # 20x24 binary map
    Image.fromarray(half).save(pred_dir / "case0.png")
    with pytest.warns(UserWarning, match=r"resized 1 prediction.*case0.png: 24x20 -> 48x40"):
        summary = evaluate_mask_folders(pred_dir, gt_dir, tmp_path / "out", mask_suffix="_mask", workers=2)
    with (tmp_path / "out" / "per_image.csv").open() as f:
        first = next(csv.DictReader(f))
    assert float(first["dice"]) > 0.9  # nearest-neighbour upsampling keeps the box
    assert summary["n_images"] == 4


def test_read_prediction_encodings(tmp_path):
    Image.fromarray(np.array([[0, 255]], np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.array([[0, 1]], np.uint8)).save(tmp_path / "b.png")
    Image.fromarray(np.array([[0, 65535]], np.uint16)).save(tmp_path / "c.png")
    Image.fromarray(np.array([[0, 128]], np.uint8)).convert("RGB").save(tmp_path / "d.png")
    for name, top in (("a", 1.0), ("b", 1.0), ("c", 1.0), ("d", 128 / 255)):
        np.testing.assert_allclose(read_prediction(tmp_path / f"{name}.png"), [[0.0, top]], atol=1e-3)


def test_report_nan_and_table(tmp_path):
    gt = _gt(0)
    rows = [
        {"id": "x", **image_metrics(gt.astype(float), gt)},
        {"id": "y", **image_metrics(np.zeros(gt.shape), gt)},
    ]
    summary = write_report(rows, tmp_path, "demo")
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["mean"]["hd95"] == 0.0 and saved["n_nan"]["hd95"] == 1
    rows_on_disk = list(csv.DictReader((tmp_path / "per_image.csv").read_text().splitlines()))
    assert math.isnan(float(rows_on_disk[1]["hd95"]))
    table = format_table(summary)
    assert table.splitlines()[0] == "demo: 2 images"
    assert any(line.split()[:2] == ["dice", "0.5000"] for line in table.splitlines())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["per_image.csv", "summary.json"]
