"""Metric checks: soft contract, threshold-blind metric, better threshold, soft vs hard Dice."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.doctor import metrics as M
from medseg.doctor.evidence import EvalEvidence
from medseg.metrics import MetricContract, threshold_sweep
from tests.doctor.conftest import make_evidence
from tests.doctor.test_data import _empty_eval


def _dice_at(probs, masks, t):
    out = []
    for p, m in zip(probs, masks):
        h = p >= t
        s = h.sum() + m.sum()
        out.append(1.0 if s == 0 else 2 * (h & m).sum() / s)
    return float(np.mean(out))


def _eval(probs, masks, **kw):
    sw = threshold_sweep(list(probs), list(masks), MetricContract())
    facts = {"prob_max": float(probs.max()), "mid_probability_share": float(((probs > 0.01) & (probs < 0.99)).mean())}
    return EvalEvidence(**{**_empty_eval(), **facts, "val_ids": [str(i) for i in range(len(probs))], "sweep": sw, **kw})


def _lesions(n=6, size=16, seed=0):
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), bool)
    for i in range(n):
        y, x = rng.integers(2, size - 6, 2)
        masks[i, y:y + 4, x:x + 4] = True
    return masks


def test_soft_contract_is_serious_and_shows_the_hard_number():
    masks = _lesions()
    probs = np.where(masks, 0.7, 0.2).astype(np.float32)
    e = _eval(probs, masks, hard_summary={"dice": _dice_at(probs, masks, 0.5)}, soft_dice=0.4)
    f = M.soft_contract(make_evidence(eval=e, config={"eval": {"contract": {"kind": "soft"}}}))
    assert f.severity == "serious" and (f.fix_key, f.fix_value) == ("eval.contract.kind", "hard")
    assert f.numbers["hard_dice"] == 1.0 and f.numbers["soft_dice"] == 0.4
    assert M.soft_contract(make_evidence(eval=e)) is None


def test_threshold_far_gain_matches_an_independent_dice():
    masks = _lesions()
    # probabilities shifted low: lesions at 0.3, background 0.05 -> 0.5 misses everything
    probs = np.where(masks, 0.3, 0.05).astype(np.float32)
    f = M.threshold_far(make_evidence(eval=_eval(probs, masks)))
    assert f.fix_key == "eval.contract.threshold" and f.fix_value == pytest.approx(0.1)  # first maximum
    assert f.numbers["gain"] == pytest.approx(_dice_at(probs, masks, 0.1) - _dice_at(probs, masks, 0.5))


def test_threshold_near_but_large_gain_is_reported_small_gain_is_not():
    masks = _lesions()
    # lesions at 0.42, background 0.36: only threshold 0.40 separates them, 0.10 from the 0.50 in use
    probs = np.where(masks, 0.42, 0.36).astype(np.float32)
    f = M.threshold_far(make_evidence(eval=_eval(probs, masks)))
    assert f is not None and f.fix_value == pytest.approx(0.4)
    assert f.numbers["gain"] == pytest.approx(_dice_at(probs, masks, f.fix_value) - _dice_at(probs, masks, 0.5))
    # the same distance with a gain below LARGE_GAIN stays quiet: one lesion in 24 is borderline
    masks = _lesions(n=24)
    probs2 = np.where(masks, 0.9, 0.36).astype(np.float32)
    probs2[0][masks[0]] = 0.42
    g = M.threshold_far(make_evidence(eval=_eval(probs2, masks)))
    gain2 = _dice_at(probs2, masks, 0.4) - _dice_at(probs2, masks, 0.5)
    assert 0 < gain2 < M.LARGE_GAIN and g is None


def test_threshold_blind_metric_on_binary_predictions():
    masks = _lesions()
    probs = np.zeros(masks.shape, np.float32)
    probs[:, 2:6, 2:6] = 1.0  # already binarised: same mask at every threshold
    f = M.flat_sweep(make_evidence(eval=_eval(probs, masks)))
    assert f.id == "metrics.threshold_blind" and f.numbers["mid_probability_share"] == 0.0
    assert f.numbers["value"] == pytest.approx(_dice_at(probs, masks, 0.5))


def test_nothing_predicted_is_not_called_a_metric_bug():
    masks = _lesions()
    assert M.flat_sweep(make_evidence(eval=_eval(np.zeros(masks.shape, np.float32), masks))) is None


def test_soft_hard_gap_is_info():
    masks = _lesions()
    probs = np.where(masks, 0.55, 0.3).astype(np.float32)
    e = _eval(probs, masks, hard_summary={"dice": 1.0}, soft_dice=0.3)
    f = M.soft_vs_hard(make_evidence(eval=e, config={"loss": {"bce": 1.0}}))
    assert f.severity == "info" and (f.fix_key, f.fix_value) == ("loss.dice", 1.0)
