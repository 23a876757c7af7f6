"""Metrics against hand-worked cases, a brute-force HD95 and pysodmetrics itself."""

from __future__ import annotations

import math

import numpy as np
import py_sod_metrics as sod
import pytest
from scipy.spatial.distance import cdist

from samsp.evaluation.metrics import COUNT_NAMES, METRIC_NAMES, hd95, image_metrics, summarize


def _box(shape, top, left, h, w) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[top : top + h, left : left + w] = True
    return m


def test_hand_worked_overlap():
    gt = _box((10, 10), 2, 2, 4, 4)  # 16 px
    prob = _box((10, 10), 4, 2, 4, 4).astype(float) * 0.9  # 16 px, 8 overlap
    m = image_metrics(prob, gt)
    assert m["dice"] == pytest.approx(2 * 8 / 32)
    assert m["iou"] == pytest.approx(8 / 24)
    assert m["precision"] == pytest.approx(0.5) and m["recall"] == pytest.approx(0.5)
    assert m["specificity"] == pytest.approx(76 / 84)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (8, 8, 8, 76)
    assert m["hd95"] == pytest.approx(2.0)  # the largest boundary gap is the 2-row shift
    assert list(m) == list(METRIC_NAMES + COUNT_NAMES)


def test_threshold_is_strictly_above_half():
    gt = _box((4, 4), 0, 0, 2, 2)
    prob = gt * 0.5
    assert image_metrics(prob, gt)["dice"] == 0.0
    assert image_metrics(gt * 0.51, gt)["dice"] == 1.0
    assert image_metrics(prob, gt, threshold=0.4)["dice"] == 1.0  # a model's own threshold
    assert image_metrics(gt * 0.51, gt, threshold=0.6)["dice"] == 0.0


def test_perfect_prediction():
    gt = _box((32, 32), 5, 8, 10, 12)
    m = image_metrics(gt.astype(float), gt)
    assert m["dice"] == m["iou"] == m["precision"] == m["recall"] == m["specificity"] == 1.0
    assert m["hd95"] == 0.0 and m["mae"] == 0.0
    assert m["s_measure"] == pytest.approx(1.0, abs=1e-6)
    assert m["wf_measure"] == pytest.approx(1.0, abs=1e-6)
    n = gt.size
    assert m["max_em"] == pytest.approx(n / (n - 1))  # pysodmetrics divides by N - 1


def test_hand_worked_mae_and_inverted_s_measure():
    gt = _box((8, 8), 0, 0, 4, 8)  # top half
    prob = np.zeros((8, 8))
    prob[2:6] = 1.0  # half right, half wrong
    assert image_metrics(prob, gt)["mae"] == pytest.approx(0.5)
    assert image_metrics((~gt).astype(float), gt)["s_measure"] < 0.05


def test_both_empty_and_one_empty():
    empty = np.zeros((16, 16), bool)
    full_box = _box((16, 16), 4, 4, 5, 5)
    both = image_metrics(np.zeros((16, 16)), empty)
    assert both["dice"] == both["iou"] == both["precision"] == both["recall"] == 1.0 and both["hd95"] == 0.0
    missed = image_metrics(np.zeros((16, 16)), full_box)
    false_alarm = image_metrics(full_box.astype(float), empty)
    for m in (missed, false_alarm):
        assert m["dice"] == m["iou"] == m["precision"] == m["recall"] == 0.0
        assert math.isnan(m["hd95"])


def _brute_force_hd95(a: np.ndarray, b: np.ndarray) -> float:
    def surface(m):
        padded = np.pad(m, 1)
        pts = []
        for y, x in zip(*np.nonzero(m), strict=True):
            py, px = y + 1, x + 1
            if not (padded[py - 1, px] and padded[py + 1, px] and padded[py, px - 1] and padded[py, px + 1]):
                pts.append((y, x))
        return np.array(pts, float)

    sa, sb = surface(a), surface(b)
    d = cdist(sa, sb)
    return float(np.percentile(np.concatenate([d.min(axis=1), d.min(axis=0)]), 95))


def test_hd95_against_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(20):
        shape = tuple(rng.integers(8, 40, size=2))
        a = rng.random(shape) < rng.uniform(0.05, 0.6)
        b = rng.random(shape) < rng.uniform(0.05, 0.6)
        if not a.any() or not b.any():
            continue
        assert hd95(a, b) == pytest.approx(_brute_force_hd95(a, b), abs=1e-9)
    blob_a, blob_b = _box((30, 30), 3, 3, 10, 12), _box((30, 30), 12, 9, 14, 8)
    assert hd95(blob_a, blob_b) == pytest.approx(_brute_force_hd95(blob_a, blob_b))
    assert hd95(blob_a, blob_b) == hd95(blob_b, blob_a)


def test_sod_metrics_match_pysodmetrics():
    rng = np.random.default_rng(1)
    for _ in range(5):
        gt = np.zeros((48, 64), bool)
        y, x = rng.integers(5, 30), rng.integers(5, 40)
        gt[y : y + rng.integers(5, 15), x : x + rng.integers(5, 20)] = True
        prob = np.clip(gt * 0.7 + rng.random(gt.shape) * 0.4, 0, 1)
        pred8 = np.round(prob * 255).astype(np.uint8)
        gt8 = gt.astype(np.uint8) * 255
        sm, wfm, em, mae = sod.Smeasure(), sod.WeightedFmeasure(), sod.Emeasure(), sod.MAE()
        for ev in (sm, wfm, em, mae):
            ev.step(pred=pred8, gt=gt8)
        curve = em.get_results()["em"]["curve"]
        m = image_metrics(prob, gt)
        assert m["s_measure"] == pytest.approx(sm.get_results()["sm"])
        assert m["wf_measure"] == pytest.approx(wfm.get_results()["wfm"])
        assert m["mean_em"] == pytest.approx(curve.mean())
        assert m["max_em"] == pytest.approx(curve.max())
        assert m["mae"] == pytest.approx(mae.get_results()["mae"])
        assert 0 < m["s_measure"] < 1 and 0 < m["wf_measure"] < 1


def test_bad_inputs():
    with pytest.raises(ValueError, match="same 2-D shape"):
        image_metrics(np.zeros((4, 4)), np.zeros((4, 5), bool))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        image_metrics(np.full((4, 4), 2.0), np.zeros((4, 4), bool))


def test_summarize_means_nans_and_pooled():
    gt_a, gt_b = _box((10, 10), 0, 0, 5, 10), _box((10, 10), 0, 0, 1, 2)
    rows = [
        image_metrics(gt_a.astype(float), gt_a),  # dice 1, 50 px
        image_metrics(np.zeros((10, 10)), gt_b),  # dice 0, 2 px missed, hd95 NaN
        image_metrics(np.zeros((10, 10)), np.zeros((10, 10), bool)),  # both empty: dice 1
    ]
    s = summarize(rows)
    assert s["n_images"] == 3
    assert s["mDice"] == pytest.approx(2 / 3) and s["mean"]["dice"] == s["mDice"]
    assert s["mIoU"] == pytest.approx(2 / 3)
    assert s["pooled_dice"] == pytest.approx(2 * 50 / (2 * 50 + 2))
    assert s["pooled_iou"] == pytest.approx(50 / 52)
    assert s["n_nan"]["hd95"] == 1 and s["mean"]["hd95"] == 0.0
    assert set(s["mean"]) == set(METRIC_NAMES)
    with pytest.raises(ValueError):
        summarize([])
