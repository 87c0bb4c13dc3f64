"""Threshold sweep: hard metrics at many thresholds from one sort of each case's probabilities."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from medseg.data.slices import slices_by_volume
from medseg.metrics.cases import check_case
from medseg.metrics.contract import MetricContract
from medseg.metrics.overlap import overlap_scores
from medseg.metrics.summary import contract_fields

SWEEP_METRICS = ("dice", "iou")
FLAT_TOLERANCE = 1e-6
FLAT_WARNING = (
    "the metric does not depend on the threshold: predictions are already binary, or the metric "
    "thresholds internally — the symptom of the Dice-thresholding bug"
)


def _counts_above(sorted_values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    # number of values >= each threshold (same rule as cases.binarize)
    return sorted_values.size - np.searchsorted(sorted_values, thresholds, side="left")


def case_counts(prob: np.ndarray, truth: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(tp, fp) at every threshold, and the numbers of truth and background pixels.

    Only probabilities >= the lowest threshold can ever count, so just those are sorted,
    which keeps large, mostly-background volumes cheap.
    """
    p, t = check_case(prob, truth)
    p, t = p.ravel(), t.ravel()
    lo = thresholds.min()
    # only the values that can count are made float64, so they compare with the thresholds as cases.binarize does
    pos = np.sort(p[t & (p >= lo)].astype(np.float64))
    neg = np.sort(p[~t & (p >= lo)].astype(np.float64))
    n_pos = int(np.count_nonzero(t))
    return _counts_above(pos, thresholds), _counts_above(neg, thresholds), n_pos, t.size - n_pos


def _thresholds(thresholds: Sequence[float]) -> np.ndarray:
    thr = np.unique(np.round(np.asarray(thresholds, dtype=float), 10))
    if thr.size == 0 or thr.min() <= 0 or thr.max() >= 1:
        raise ValueError("thresholds must lie in (0, 1)")
    return thr


DEFAULT_THRESHOLDS = np.arange(0.05, 0.951, 0.05)


class SweepCounter:
    """`threshold_sweep` case by case: add cases (or chunks of whole cases with `add_chunk`), then `result()`.

    Only each case's (tp, fp) at every threshold and its pixel counts are kept, so a sweep over
    a large validation set holds no probabilities.

    Args:
        contract / thresholds / metric: as `threshold_sweep`.
    """

    def __init__(self, contract: MetricContract, thresholds: Sequence[float] = DEFAULT_THRESHOLDS, metric: str = "dice"):
        if metric not in SWEEP_METRICS:
            raise ValueError(f"metric must be one of {', '.join(SWEEP_METRICS)} (got {metric!r})")
        self.contract, self.metric = contract, metric
        self.thr = _thresholds(thresholds)
        self.counts: list[tuple] = []

    def add(self, prob: np.ndarray, truth: np.ndarray) -> None:
        """One case: its probability map and binary truth (2D or 3D)."""
        self.counts.append(case_counts(prob, truth, self.thr))

    def add_chunk(self, probs: Sequence[np.ndarray], truths: Sequence[np.ndarray], meta: Sequence[dict] | None) -> None:
        """Per-slice arrays of whole cases (every slice of a volume in the chunk), grouped as `sweep_cases` groups them."""
        for p, t in zip(*sweep_cases(probs, truths, meta, self.contract)):
            self.add(p, t)

    def result(self) -> dict:
        """The sweep of every case added (see `threshold_sweep` for the fields)."""
        if not self.counts:
            raise ValueError("need matching, non-empty lists of predictions and truths (got no case)")
        return _sweep_from_counts(self.counts, self.thr, self.contract, self.metric)


def threshold_sweep(
    probs: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    contract: MetricContract,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    metric: str = "dice",
) -> dict:
    """Dice, IoU, precision, recall and fp_rate_empty at each threshold; the best threshold.

    Each threshold is scored exactly as `case_metrics` + `summarize` would with
    `contract.threshold` set to it (hard masks, `prob >= threshold`, the contract's
    reduction and empty policy), whatever `contract.kind` says. Thresholds are rounded to
    10 decimals so np.arange's 0.30000000000000004 means 0.3.

    Args:
        probs: per-case probability maps in [0, 1] (2D or 3D).
        truths: matching binary masks.
        contract: reduction and empty policy.
        thresholds: values in (0, 1).
        metric: `dice` or `iou`, the one maximised.

    Returns:
        rows (threshold, dice, iou, precision, recall, fp_rate_empty), metric,
        best_threshold / best_value (first maximum; None/NaN if the metric is NaN everywhere),
        flat (the metric varies by less than 1e-6 across thresholds) and warning (why the
        result is suspect, or None), plus contract, contract_text, metrics_version.
    """
    if len(probs) != len(truths) or not len(probs):
        raise ValueError(f"need matching, non-empty lists of predictions and truths (got {len(probs)} and {len(truths)})")
    counter = SweepCounter(contract, thresholds, metric)
    for p, t in zip(probs, truths):
        counter.add(p, t)
    return counter.result()


def _sweep_from_counts(counts: list[tuple], thr: np.ndarray, contract: MetricContract, metric: str) -> dict:
    tp = np.stack([c[0] for c in counts]).astype(float)  # (cases, thresholds)
    fp = np.stack([c[1] for c in counts]).astype(float)
    n_pos = np.array([c[2] for c in counts], dtype=float)[:, None]
    n_neg = np.array([c[3] for c in counts], dtype=float)[:, None]
    fn, tn = n_pos - tp, n_neg - fp
    truth_empty = n_pos == 0
    pred_empty = (tp + fp) == 0

    if contract.reduction == "global":
        all_ee = (truth_empty & pred_empty).all(axis=0)
        scores = overlap_scores(tp.sum(0), fp.sum(0), fn.sum(0), tn.sum(0), all_ee, contract.empty_score())
    else:
        per_case = overlap_scores(tp, fp, fn, tn, truth_empty & pred_empty, contract.empty_score())
        scores = {k: _nanmean_axis0(v) for k, v in per_case.items()}
    n_empty = int(truth_empty.sum())
    fp_rate_empty = ((truth_empty & ~pred_empty).sum(0) / n_empty) if n_empty else np.full(thr.size, np.nan)

    rows = [
        {"threshold": float(th), **{k: float(scores[k][i]) for k in ("dice", "iou", "precision", "recall")}, "fp_rate_empty": float(fp_rate_empty[i])}
        for i, th in enumerate(thr)
    ]
    values = scores[metric]
    finite = ~np.isnan(values)
    if finite.any():
        best = int(np.nanargmax(values))
        best_threshold, best_value = float(thr[best]), float(values[best])
        # one threshold cannot show a dependence, so it is never called flat
        flat = bool(thr.size > 1 and np.nanmax(values) - np.nanmin(values) < FLAT_TOLERANCE)
        warning = FLAT_WARNING if flat else None
    else:
        best_threshold, best_value, flat = None, float("nan"), False
        warning = f"{metric} is NaN at every threshold (every case empty/empty under the 'nan' empty policy?)"
    return {
        "rows": rows,
        "metric": metric,
        "best_threshold": best_threshold,
        "best_value": best_value,
        "flat": flat,
        "warning": warning,
        **contract_fields(contract),
    }


def _nanmean_axis0(a: np.ndarray) -> np.ndarray:
    keep = ~np.isnan(a)
    n = keep.sum(axis=0)
    total = np.where(keep, a, 0.0).sum(axis=0)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def _by_volume(meta: Sequence[dict] | None, contract: MetricContract) -> bool:
    # the one rule for when a case is a stacked volume rather than an image
    return contract.reduction == "per_volume" and bool(meta) and meta[0].get("volume") is not None


def sweep_cases(probs: Sequence[np.ndarray], masks: Sequence[np.ndarray], meta: Sequence[dict] | None, contract: MetricContract):
    """The cases a sweep scores: per-volume contracts stack 2D slices back into their volumes.

    Sweeping the slices of a per-volume run one by one would score every empty slice as an
    empty/empty case and report a threshold that wins on slices, not on volumes.

    Args:
        probs / masks: per-slice (or per-image) arrays in the same order as `meta`.
        meta: per-sample dicts with `volume` and `slice` for volume data (None or without
            `volume`: images, returned unchanged).
        contract: the run's contract; only `per_volume` regroups.
    """
    if not _by_volume(meta, contract):
        return list(probs), list(masks)
    out_p, out_m = [], []
    for idx in slices_by_volume(meta).values():
        out_p.append(np.stack([probs[i] for i in idx]))
        out_m.append(np.stack([masks[i] for i in idx]))
    return out_p, out_m


def sweep_case_names(meta: Sequence[dict] | None, contract: MetricContract, n: int) -> list[tuple[str | None, str | None]]:
    """(case, case_id) of each case `sweep_cases` returns, in its order.

    Images are named by `sample_id` and `case_id` (as the per-image rows of cases.csv are);
    volumes of a per-volume contract by their volume name (both fields).

    Args:
        meta / contract: as `sweep_cases`.
        n: the number of images (names are None where meta is missing).
    """
    if not meta:
        return [(None, None)] * n
    if _by_volume(meta, contract):
        return [(v, v) for v in slices_by_volume(meta)]
    return [(m.get("sample_id"), m.get("case_id")) for m in meta]
