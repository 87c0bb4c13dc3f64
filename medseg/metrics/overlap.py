"""Overlap scores (Dice, IoU, precision, recall, specificity) from confusion counts."""

from __future__ import annotations

import numpy as np

OVERLAP_KEYS = ("dice", "iou", "precision", "recall", "specificity")
# scores replaced by the contract's empty policy when truth and prediction are both empty
EMPTY_POLICY_KEYS = ("dice", "iou", "precision", "recall")


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def overlap_scores(tp, fp, fn, tn, empty_empty, empty_score: float) -> dict[str, np.ndarray]:
    """Scores from counts (scalars or arrays, broadcast together); 0/0 gives NaN.

    Dice = 2TP/(2TP+FP+FN), IoU = TP/(TP+FP+FN), precision = TP/(TP+FP),
    recall = TP/(TP+FN), specificity = TN/(TN+FP). Where `empty_empty` is true, Dice, IoU,
    precision and recall take `empty_score` (the contract's policy). Otherwise a case with
    empty truth and some prediction has Dice = IoU = precision = 0 and recall NaN (no
    foreground to recall), and a missed non-empty truth has recall 0 and precision NaN.

    Args:
        tp, fp, fn, tn: confusion counts (float for soft metrics).
        empty_empty: truth and hard prediction both empty.
        empty_score: value for empty/empty cases (1.0, NaN or 0.0).
    """
    tp, fp, fn, tn = (np.asarray(v, dtype=float) for v in (tp, fp, fn, tn))
    out = {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn),
        "iou": _ratio(tp, tp + fp + fn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
    }
    ee = np.asarray(empty_empty, dtype=bool)
    for k in EMPTY_POLICY_KEYS:
        out[k] = np.where(ee, empty_score, out[k])
    return out
