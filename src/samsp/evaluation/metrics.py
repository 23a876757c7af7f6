"""Per-image segmentation metrics and their dataset summary.

Inputs: ``prob`` is an (H, W) float map in [0, 1]; ``gt`` is an (H, W) bool mask. Overlap metrics use the
binary prediction ``prob > threshold`` (0.5 unless the caller passes the model's own ``model.threshold``, so a
score describes the mask ``samsp predict`` writes).

Conventions for empty masks (a polyp-free frame is legal):
  * both prediction and ground truth empty: Dice = IoU = precision = recall = 1, HD95 = 0;
  * exactly one empty: Dice = IoU = precision = recall = 0 and HD95 = NaN. NaNs are excluded from means and
    counted in the summary (``n_nan``), so a mean HD95 is always over images where it is defined;
  * specificity is 1 when the ground truth has no background.

HD95 (pixels) is the 95th percentile of the pooled distances from each boundary pixel of one mask to the
nearest boundary pixel of the other, in both directions (the ``medpy.metric.hd95`` definition); boundary =
mask minus its 4-connected erosion, with pixels on the image edge counting as boundary.

S-measure, weighted F-measure, mean/max E-measure and MAE come from pysodmetrics, fed the probability map as
uint8 0..255 and the ground truth as 0/255, as in the polyp benchmark (PraNet's evaluation). Note that the
library min-max stretches each prediction first (MATLAB ``mapminmax``), and that ``max_em`` here is the
per-image maximum over thresholds; its mean over images is >= the "max of the mean curve" some papers report.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import py_sod_metrics as sod
from scipy import ndimage

METRIC_NAMES: tuple[str, ...] = (
    "dice",
    "iou",
    "precision",
    "recall",
    "specificity",
    "hd95",
    "s_measure",
    "wf_measure",
    "mean_em",
    "max_em",
    "mae",
)
COUNT_NAMES: tuple[str, ...] = ("tp", "fp", "fn", "tn")

_FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


def _ratio(num: float, den: float, if_empty: float) -> float:
    return num / den if den else if_empty


def boundary(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a binary mask: the mask minus its 4-connected erosion (outside = empty)."""
    return mask & ~ndimage.binary_erosion(mask, structure=_FOUR_CONNECTED, border_value=0)


def hd95(pred: np.ndarray, gt: np.ndarray) -> float:
    """Symmetric 95th-percentile Hausdorff distance in pixels; 0 if both are empty, NaN if only one is."""
    if not pred.any() and not gt.any():
        return 0.0
    if not pred.any() or not gt.any():
        return math.nan
    edge_p, edge_g = boundary(pred), boundary(gt)
    # Distance to the nearest boundary pixel of the other mask, sampled on this mask's boundary pixels.
    to_g = ndimage.distance_transform_edt(~edge_g)[edge_p]
    to_p = ndimage.distance_transform_edt(~edge_p)[edge_g]
    return float(np.percentile(np.concatenate([to_g, to_p]), 95))


def _sod_metrics(prob: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    pred8 = np.clip(np.round(prob * 255), 0, 255).astype(np.uint8)
    gt8 = gt.astype(np.uint8) * 255
    sm, wfm, em, mae = sod.Smeasure(), sod.WeightedFmeasure(), sod.Emeasure(), sod.MAE()
    for evaluator in (sm, wfm, em, mae):
        evaluator.step(pred=pred8, gt=gt8)
    curve = np.asarray(em.changeable_ems[0], dtype=np.float64)
    return {
        "s_measure": float(sm.sms[0]),
        "wf_measure": float(wfm.weighted_fms[0]),
        "mean_em": float(curve.mean()),
        "max_em": float(curve.max()),
        "mae": float(mae.maes[0]),
    }


def image_metrics(prob: np.ndarray, gt: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """All METRIC_NAMES for one image, plus pixel counts COUNT_NAMES for pooled scores; the overlap metrics and HD95
    score the mask ``prob > threshold``."""
    prob = np.asarray(prob, dtype=np.float64)
    gt = np.asarray(gt, dtype=bool)
    if prob.shape != gt.shape or prob.ndim != 2:
        raise ValueError(f"prob and gt must be the same 2-D shape, got {prob.shape} and {gt.shape}")
    if prob.size and (prob.min() < 0 or prob.max() > 1):
        raise ValueError(f"prob must lie in [0, 1], got range [{prob.min()}, {prob.max()}]")
    pred = prob > threshold
    tp = int(np.count_nonzero(pred & gt))
    fp = int(np.count_nonzero(pred & ~gt))
    fn = int(np.count_nonzero(~pred & gt))
    tn = int(pred.size - tp - fp - fn)
    both_empty = tp + fp + fn == 0
    out = {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, 1.0),
        "iou": _ratio(tp, tp + fp + fn, 1.0),
        "precision": _ratio(tp, tp + fp, 1.0 if both_empty else 0.0),
        "recall": _ratio(tp, tp + fn, 1.0 if both_empty else 0.0),
        "specificity": _ratio(tn, tn + fp, 1.0),
        "hd95": hd95(pred, gt),
    }
    out.update(_sod_metrics(prob, gt))
    out.update({"tp": float(tp), "fp": float(fp), "fn": float(fn), "tn": float(tn)})
    return {name: out[name] for name in METRIC_NAMES + COUNT_NAMES}


def summarize(rows: Sequence[Mapping[str, float]]) -> dict:
    """Dataset summary of per-image rows from ``image_metrics``.

    ``mean`` is the NaN-aware mean over images of each metric and ``n_nan`` how many images had NaN;
    ``mDice``/``mIoU`` repeat the mean Dice/IoU under the names papers use; ``pooled_dice``/``pooled_iou`` are
    computed once from the pixel counts summed over all images (big images weigh more).
    """
    if not rows:
        raise ValueError("no per-image rows to summarize")
    mean, n_nan = {}, {}
    for name in METRIC_NAMES:
        values = np.array([float(r[name]) for r in rows], dtype=np.float64)
        finite = values[~np.isnan(values)]
        mean[name] = float(finite.mean()) if finite.size else math.nan
        n_nan[name] = int(values.size - finite.size)
    tp, fp, fn = (sum(float(r[k]) for r in rows) for k in ("tp", "fp", "fn"))
    return {
        "n_images": len(rows),
        "mDice": mean["dice"],
        "mIoU": mean["iou"],
        "pooled_dice": _ratio(2 * tp, 2 * tp + fp + fn, 1.0),
        "pooled_iou": _ratio(tp, tp + fp + fn, 1.0),
        "mean": mean,
        "n_nan": n_nan,
    }
