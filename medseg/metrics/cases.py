"""Metrics of one case (a 2D image or a 3D volume) under a metric contract."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from medseg.metrics.contract import MetricContract
from medseg.metrics.lesions import lesion_detection
from medseg.metrics.overlap import overlap_scores
from medseg.metrics.surface import hd95_asd


def binarize(prob: np.ndarray, threshold: float) -> np.ndarray:
    """Hard mask: foreground where prob >= threshold (compared in float64, as the threshold sweep does).

    `>=` so that a binary 0/1 prediction is read the same at any threshold in (0, 1]. A numpy
    float64 threshold makes numpy compare a float32 map in float64 element by element, without
    a float64 copy of the map (a 372-slice volume's would be 195 MB).
    """
    return np.asarray(prob) >= np.float64(threshold)


def _binary(a: np.ndarray) -> bool:
    # integers in [0, 1] are 0 or 1: min/max need no temporaries (np.isin made ~280 MB for a 372-slice uint8 volume)
    if np.issubdtype(a.dtype, np.integer):
        return a.size == 0 or (int(a.min()) >= 0 and int(a.max()) <= 1)
    return bool(((a == 0) | (a == 1)).all())


def check_case(prob: np.ndarray, truth: np.ndarray, spacing: Optional[Sequence[float]] = None) -> tuple[np.ndarray, np.ndarray]:
    """Validate one case and return (prob as a float array, truth as bool); raises ValueError.

    A float map keeps its dtype (no float64 copy of a whole volume); integer or bool maps
    become float32, which holds 0/1 exactly.

    Args:
        prob: probabilities in [0, 1] (or a 0/1 mask), 2D (H, W) or 3D (D, H, W).
        truth: binary mask (bool or values in {0, 1}) of the same shape.
        spacing: one positive pixel size per axis, or None.
    """
    prob = np.asarray(prob)
    truth = np.asarray(truth)
    if prob.ndim not in (2, 3):
        raise ValueError(f"expected a 2D or 3D case, got shape {prob.shape}")
    if prob.shape != truth.shape:
        raise ValueError(f"prediction {prob.shape} and truth {truth.shape} differ in shape")
    p = prob if np.issubdtype(prob.dtype, np.floating) else prob.astype(np.float32)
    if not np.isfinite(p).all():
        raise ValueError("prediction contains NaN or inf")
    if p.size and (p.min() < 0 or p.max() > 1):
        raise ValueError(f"prediction values must lie in [0, 1] (got {p.min():g}..{p.max():g})")
    if truth.dtype != bool and not _binary(truth):
        raise ValueError("truth must be binary (bool or 0/1)")
    if spacing is not None and (len(spacing) != prob.ndim or any(not s > 0 for s in spacing)):
        raise ValueError(f"spacing must give one positive size per axis ({prob.ndim}), got {tuple(spacing)}")
    return p, truth.astype(bool)


def case_metrics(
    prob: np.ndarray,
    truth: np.ndarray,
    contract: MetricContract,
    spacing: Optional[Sequence[float]] = None,
    surface: bool = True,
    min_iou: float = 0.0,
) -> dict:
    """All per-case numbers for one prediction against its truth.

    Hard contract: the prediction is binarised with `prob >= contract.threshold` and every
    count is a pixel count. Soft contract: tp = sum(p*t), fp = sum(p*(1-t)),
    fn = sum((1-p)*t), tn = sum((1-p)*(1-t)) feed Dice/IoU/precision/recall/specificity;
    the emptiness flags, surface distances and lesion counts always use the hard mask.

    Empty rules (see `overlap.overlap_scores`): truth and hard prediction both empty ->
    Dice/IoU/precision/recall = contract.empty_score() (one: 1.0, nan: NaN, zero: 0.0);
    empty truth with a prediction -> Dice = IoU = precision = 0, recall NaN; missed truth ->
    recall 0, precision NaN. HD95/ASD: both empty -> contract.empty_distance() (0.0 for
    `one`, else NaN); exactly one empty -> NaN.

    Args:
        prob: probabilities in [0, 1] or a binary mask, (H, W) or (D, H, W).
        truth: binary mask of the same shape.
        contract: the metric contract.
        spacing: pixel size per axis; HD95/ASD are then in those units (mm), else in pixels.
        surface: compute hd95/asd (the slowest part); when False those keys are absent.
        min_iou: IoU a predicted and a truth lesion need, besides overlapping, to match.

    Returns:
        dice, iou, precision, recall, specificity, [hd95, asd], tp, fp, fn, tn (float),
        truth_empty, pred_empty, empty_empty (bool), and the lesion counts of
        `lesions.lesion_detection` (n_lesions_truth, n_lesions_found, n_lesions_pred,
        n_pred_matched, n_lesions_truth_<bin>, n_lesions_found_<bin>).
    """
    p, t = check_case(prob, truth, spacing)
    hard = binarize(p, contract.threshold)
    truth_empty = not t.any()
    pred_empty = not hard.any()
    if contract.kind == "soft":
        tf = t.astype(np.float64)
        tp, fp = float((p * tf).sum()), float((p * (1 - tf)).sum())
        fn, tn = float(((1 - p) * tf).sum()), float(((1 - p) * (1 - tf)).sum())
    else:
        tp = float(np.count_nonzero(hard & t))
        fp = float(np.count_nonzero(hard & ~t))
        fn = float(np.count_nonzero(~hard & t))
        tn = float(t.size - tp - fp - fn)
    empty_empty = truth_empty and pred_empty
    row: dict = {k: float(v) for k, v in overlap_scores(tp, fp, fn, tn, empty_empty, contract.empty_score()).items()}
    if surface:
        row["hd95"], row["asd"] = hd95_asd(hard, t, spacing, both_empty=contract.empty_distance())
    row.update(tp=tp, fp=fp, fn=fn, tn=tn, truth_empty=truth_empty, pred_empty=pred_empty, empty_empty=empty_empty)
    row.update(lesion_detection(hard, t, contract.lesion_size_bins, min_iou=min_iou))
    return row
