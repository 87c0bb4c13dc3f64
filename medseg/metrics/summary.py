"""Dataset-level numbers from per-case rows, reduced as the metric contract says."""

from __future__ import annotations

import numpy as np

from medseg.metrics.contract import METRICS_VERSION, MetricContract
from medseg.metrics.lesions import size_bin_names
from medseg.metrics.overlap import OVERLAP_KEYS, overlap_scores


def nanmean(values) -> float:
    """Mean ignoring NaN; NaN (without a warning) when nothing is left."""
    a = np.asarray(list(values), dtype=float)
    a = a[~np.isnan(a)]
    return float(a.mean()) if a.size else float("nan")


def _share(num: int, den: int) -> float:
    return num / den if den else float("nan")


def contract_fields(contract: MetricContract) -> dict:
    """The keys that make a result self-describing: contract, contract_text, metrics_version."""
    return {"contract": contract.model_dump(mode="json"), "contract_text": contract.describe(), "metrics_version": METRICS_VERSION}


def summarize(rows: list[dict], contract: MetricContract) -> dict:
    """Reduce `case_metrics` rows to one result carrying its contract.

    dice/iou/precision/recall/specificity: per_image and per_volume take the NaN-ignoring
    mean of the per-case values (pass per-image rows or per-volume rows to match);
    global pools tp/fp/fn/tn over all cases first (the empty policy applies only if every
    case is empty/empty).

    Always reported: n_cases, n_empty_truth, n_empty_empty, dice_nan (cases whose Dice is
    NaN and so left out of the mean), fp_rate_empty (share of empty-truth cases with any
    predicted foreground; NaN if there are none), dice_nonempty (mean Dice over cases with
    foreground in the truth, independent of the empty policy), pooled tp/fp/fn/tn, lesion
    counts, lesion_recall (found / truth lesions), lesion_precision (matched / predicted
    components), lesion_recall_<bin> and n_lesions_truth_<bin>, hd95/asd (NaN-ignoring
    means) with hd95_nan/asd_nan (how many cases were NaN) when the rows have them, and
    contract, contract_text, metrics_version.

    Args:
        rows: dicts from `case_metrics` (extra keys such as `case` are ignored).
        contract: the contract the rows were computed under.
    """
    if not rows:
        raise ValueError("no cases to summarize")
    col = lambda k: [r[k] for r in rows]  # noqa: E731
    pooled = {k: float(np.sum(col(k))) for k in ("tp", "fp", "fn", "tn")}
    if contract.reduction == "global":
        all_empty = all(col("empty_empty"))
        scores = {k: float(v) for k, v in overlap_scores(**pooled, empty_empty=all_empty, empty_score=contract.empty_score()).items()}
    else:
        scores = {k: nanmean(col(k)) for k in OVERLAP_KEYS}

    truth_empty = np.array(col("truth_empty"), dtype=bool)
    pred_empty = np.array(col("pred_empty"), dtype=bool)
    dice = np.array(col("dice"), dtype=float)
    out: dict = dict(scores)
    out.update(
        n_cases=len(rows),
        n_empty_truth=int(truth_empty.sum()),
        n_empty_empty=int((truth_empty & pred_empty).sum()),
        dice_nan=int(np.isnan(dice).sum()),
        fp_rate_empty=_share(int((truth_empty & ~pred_empty).sum()), int(truth_empty.sum())),
        dice_nonempty=nanmean(dice[~truth_empty]),
        **pooled,
    )
    n_truth, n_found = int(np.sum(col("n_lesions_truth"))), int(np.sum(col("n_lesions_found")))
    n_pred, n_matched = int(np.sum(col("n_lesions_pred"))), int(np.sum(col("n_pred_matched")))
    out.update(
        n_lesions_truth=n_truth,
        n_lesions_pred=n_pred,
        lesion_recall=_share(n_found, n_truth),
        lesion_precision=_share(n_matched, n_pred),
    )
    names = size_bin_names(contract.lesion_size_bins)
    expected = {f"n_lesions_truth_{n}" for n in names}
    if any({k for k in r if k.startswith("n_lesions_truth_")} != expected for r in rows):
        raise ValueError(f"rows lack lesion counts for size bins {names}: were they computed under another contract?")
    for name in names:
        nt, nf = int(np.sum(col(f"n_lesions_truth_{name}"))), int(np.sum(col(f"n_lesions_found_{name}")))
        out[f"n_lesions_truth_{name}"] = nt
        out[f"lesion_recall_{name}"] = _share(nf, nt)
    for k in ("hd95", "asd"):
        if all(k in r for r in rows):
            vals = np.array(col(k), dtype=float)
            out[k] = nanmean(vals)
            out[f"{k}_nan"] = int(np.isnan(vals).sum())
    out.update(contract_fields(contract))
    return out
