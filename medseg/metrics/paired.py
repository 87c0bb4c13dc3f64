"""Paired statistics for comparing two sets of per-case scores: bootstrap CI, Wilcoxon, a verdict.

Used by `medseg compare` (runs) and by the benchmarks; a run is "better" only when the
bootstrap CI of the mean difference excludes 0 and the Wilcoxon p-value is below alpha.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

DEFAULT_ALPHA = 0.05
DEFAULT_RESAMPLES = 10_000
CI_LEVEL = 0.95
B_BETTER, A_BETTER, NO_DIFFERENCE, NOT_TESTABLE = "B better", "A better", "no detectable difference", "not testable"


def bootstrap_mean_ci(diffs: np.ndarray, resamples: int = DEFAULT_RESAMPLES, seed: int = 0, level: float = CI_LEVEL) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean of `diffs`.

    Resampling indices are drawn as one (resamples, n) stream from default_rng(seed), in
    chunks so memory stays bounded for large n (chunking does not change the draws).

    Args:
        diffs: paired differences (no NaN).
        resamples: bootstrap resamples.
        seed: seed of numpy's default_rng; the same inputs always give the same interval.
        level: coverage, e.g. 0.95.
    """
    d = np.asarray(diffs, dtype=float)
    n = d.size
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 4_000_000 // n)
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        means[start:stop] = d[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def wilcoxon_p(diffs: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value; 1.0 when every difference is zero, NaN for n=0."""
    from scipy.stats import wilcoxon  # here: scipy.stats takes a quarter second to import

    d = np.asarray(diffs, dtype=float)
    if d.size == 0:
        return float("nan")
    if not np.any(d != 0):
        return 1.0  # identical scores: scipy would raise, but "no difference at all" is the answer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-n / ties notes; the p-value is still what we report
        return float(wilcoxon(d, alternative="two-sided").pvalue)


def verdict(ci_low: float, ci_high: float, p_value: float, alpha: float) -> str:
    """The plain verdict: a run is better only when the CI excludes 0 AND p < alpha.

    Returns "B better", "A better", "no detectable difference", or "not testable" (no pairs).
    """
    if any(math.isnan(x) for x in (ci_low, ci_high, p_value)):
        return NOT_TESTABLE
    if p_value < alpha and ci_low > 0:
        return B_BETTER
    if p_value < alpha and ci_high < 0:
        return A_BETTER
    return NO_DIFFERENCE


def paired_comparison(a_label: str, a_scores: dict, b_label: str, b_scores: dict, alpha: float = DEFAULT_ALPHA,
                      resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> dict:
    """Paired per-case scores of B vs A on A's cases (matched by case or volume name).

    Args:
        a_label / b_label: names of the two sides in the result.
        a_scores / b_scores: {case: score}; B must hold every case of A. NaN pairs are dropped.
        alpha: significance level of the verdict.
        resamples / seed: the bootstrap of the CI of the mean difference.
    """
    keys = sorted(a_scores)
    da = np.array([a_scores[k] for k in keys], dtype=float)
    db = np.array([b_scores[k] for k in keys], dtype=float)
    keep = ~(np.isnan(da) | np.isnan(db))
    diffs = db[keep] - da[keep]
    ci_low, ci_high = bootstrap_mean_ci(diffs, resamples, seed)
    p = wilcoxon_p(diffs)
    v = verdict(ci_low, ci_high, p, alpha)
    return {
        "a": a_label,
        "b": b_label,
        "n": int(diffs.size),
        "n_dropped_nan": int((~keep).sum()),
        "mean_a": float(da[keep].mean()) if diffs.size else float("nan"),
        "mean_b": float(db[keep].mean()) if diffs.size else float("nan"),
        "mean_diff": float(diffs.mean()) if diffs.size else float("nan"),
        "ci_low": ci_low,
        "ci_high": ci_high,
        "p_value": p,
        "verdict": v,
        "better": b_label if v == B_BETTER else a_label if v == A_BETTER else None,
    }
