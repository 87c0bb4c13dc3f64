import math
import warnings

import numpy as np
import pytest
import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric, SurfaceDistanceMetric

from medseg.metrics import MetricContract, case_metrics

HARD = MetricContract()


def _t(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(mask.astype(np.float32))[None, None]


def _monai(metric, pred, truth, **kw) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns on empty masks
        return float(metric(_t(pred), _t(truth), **kw).reshape(-1)[0])


def _numpy_dice(pred: np.ndarray, truth: np.ndarray) -> float:
    denom = pred.sum() + truth.sum()
    return 2.0 * np.logical_and(pred, truth).sum() / denom if denom else 1.0


def _numpy_surface(mask: np.ndarray) -> np.ndarray:
    """Coordinates of foreground pixels with a face neighbour outside the mask (or the image)."""
    padded = np.pad(mask, 1)
    inner = np.ones_like(mask, dtype=bool)
    centre = tuple(slice(1, -1) for _ in range(mask.ndim))
    for axis in range(mask.ndim):
        for step in (-1, 1):
            sl = list(centre)
            sl[axis] = slice(1 + step, padded.shape[axis] - 1 + step)
            inner &= padded[tuple(sl)]
    return np.argwhere(mask & ~inner).astype(float)


def _numpy_hd95_asd(pred, truth, spacing=None):
    sp = np.ones(pred.ndim) if spacing is None else np.asarray(spacing, dtype=float)
    a, b = _numpy_surface(pred) * sp, _numpy_surface(truth) * sp
    d = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    ab, ba = d.min(axis=1), d.min(axis=0)
    return max(np.percentile(ab, 95), np.percentile(ba, 95)), np.concatenate([ab, ba]).mean()


def test_dice_matches_monai_and_numpy(cases_2d):
    monai_dice = DiceMetric(include_background=True, reduction="none", ignore_empty=False)
    for pred, truth in cases_2d:
        got = case_metrics(pred, truth, MetricContract(empty="one"), surface=False)["dice"]
        assert got == pytest.approx(_monai(monai_dice, pred, truth), abs=1e-6)
        assert got == pytest.approx(_numpy_dice(pred, truth), abs=1e-12)


def test_nan_policy_against_monai_ignore_empty(cases_2d):
    # MONAI's ignore_empty=True gives NaN whenever the truth is empty; medseg's `nan` only
    # when both are empty: false positives on an empty image still score Dice 0.
    monai_dice = DiceMetric(include_background=True, reduction="none", ignore_empty=True)
    seen = set()
    for pred, truth in cases_2d:
        got = case_metrics(pred, truth, MetricContract(empty="nan"), surface=False)["dice"]
        ref = _monai(monai_dice, pred, truth)
        if truth.any():
            assert got == pytest.approx(ref, abs=1e-6)
            seen.add("truth")
        elif pred.any():
            assert math.isnan(ref) and got == 0.0
            seen.add("fp_on_empty")
        else:
            assert math.isnan(ref) and math.isnan(got)
            seen.add("both_empty")
    assert seen == {"truth", "fp_on_empty", "both_empty"}


@pytest.mark.parametrize("spacing", [None, (0.7, 1.3)])
def test_hd95_and_asd_match_monai_and_numpy(cases_2d, spacing):
    hd = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")
    sd = SurfaceDistanceMetric(include_background=True, symmetric=True, reduction="none")
    checked = 0
    for pred, truth in cases_2d:
        row = case_metrics(pred, truth, HARD, spacing=spacing)
        if not (pred.any() and truth.any()):
            continue
        kw = {} if spacing is None else {"spacing": spacing}
        assert row["hd95"] == pytest.approx(_monai(hd, pred, truth, **kw), rel=1e-6, abs=1e-6)
        assert row["asd"] == pytest.approx(_monai(sd, pred, truth, **kw), rel=1e-6, abs=1e-6)
        ref_hd, ref_asd = _numpy_hd95_asd(pred, truth, spacing)
        assert row["hd95"] == pytest.approx(ref_hd, abs=1e-9)
        assert row["asd"] == pytest.approx(ref_asd, abs=1e-9)
        checked += 1
    assert checked >= 10


def test_3d_matches_monai(cases_3d):
    hd = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")
    dice = DiceMetric(include_background=True, reduction="none", ignore_empty=False)
    spacing = (2.5, 0.8, 0.8)
    for pred, truth in cases_3d:
        row = case_metrics(pred, truth, HARD, spacing=spacing)
        assert row["dice"] == pytest.approx(_monai(dice, pred, truth), abs=1e-6)
        if pred.any() and truth.any():
            assert row["hd95"] == pytest.approx(_monai(hd, pred, truth, spacing=spacing), rel=1e-6, abs=1e-6)
            assert row["hd95"] == pytest.approx(_numpy_hd95_asd(pred, truth, spacing)[0], abs=1e-9)


def _square(shape, top, left, size):
    m = np.zeros(shape, dtype=bool)
    m[top : top + size, left : left + size] = True
    return m


def test_sanity_perfect_match():
    t = _square((32, 32), 4, 4, 10)
    row = case_metrics(t.astype(float), t, HARD)
    assert row["dice"] == 1.0 and row["iou"] == 1.0 and row["hd95"] == 0.0 and row["asd"] == 0.0


def test_sanity_no_overlap():
    row = case_metrics(_square((32, 32), 0, 0, 5).astype(float), _square((32, 32), 20, 20, 5), HARD)
    assert row["dice"] == 0.0 and row["iou"] == 0.0 and row["precision"] == 0.0 and row["recall"] == 0.0


def test_sanity_half_inside():
    truth = _square((32, 32), 4, 4, 10)
    pred = truth.copy()
    pred[4:9, :] = False  # keep the lower half of the truth square
    assert pred.sum() * 2 == truth.sum()
    row = case_metrics(pred.astype(float), truth, HARD)
    assert row["dice"] == pytest.approx(2 * 0.5 / 1.5, abs=1e-4)
    assert row["precision"] == 1.0 and row["recall"] == 0.5


def test_sanity_small_perfect_match():
    t = _square((64, 64), 30, 30, 3)
    row = case_metrics(t.astype(float), t, HARD)
    assert row["dice"] == 1.0 and row["hd95"] == 0.0
    assert row["n_lesions_truth"] == 1 and row["n_lesions_found"] == 1


@pytest.mark.parametrize("policy,score,dist", [("one", 1.0, 0.0), ("nan", math.nan, math.nan), ("zero", 0.0, math.nan)])
def test_empty_policy_both_empty(policy, score, dist):
    z = np.zeros((16, 16))
    row = case_metrics(z, z.astype(bool), MetricContract(empty=policy))
    for k in ("dice", "iou", "precision", "recall"):
        assert row[k] == score or (math.isnan(score) and math.isnan(row[k])), k
    assert row["specificity"] == 1.0
    assert row["hd95"] == dist or (math.isnan(dist) and math.isnan(row["hd95"]))
    assert row["truth_empty"] and row["pred_empty"] and row["empty_empty"]


@pytest.mark.parametrize("policy", ["one", "nan", "zero"])
def test_empty_truth_with_prediction(policy):
    pred = _square((16, 16), 2, 2, 3).astype(float)
    row = case_metrics(pred, np.zeros((16, 16), bool), MetricContract(empty=policy))
    assert row["dice"] == 0.0 and row["iou"] == 0.0 and row["precision"] == 0.0
    assert math.isnan(row["recall"]) and math.isnan(row["hd95"]) and math.isnan(row["asd"])
    assert row["truth_empty"] and not row["pred_empty"] and not row["empty_empty"]
    assert row["fp"] == 9.0 and row["n_lesions_pred"] == 1 and row["n_pred_matched"] == 0


@pytest.mark.parametrize("policy", ["one", "nan", "zero"])
def test_missed_truth(policy):
    row = case_metrics(np.zeros((16, 16)), _square((16, 16), 2, 2, 3), MetricContract(empty=policy))
    assert row["dice"] == 0.0 and row["recall"] == 0.0
    assert math.isnan(row["precision"]) and math.isnan(row["hd95"])
    assert row["n_lesions_truth"] == 1 and row["n_lesions_found"] == 0


def test_threshold_is_inclusive():
    truth = _square((8, 8), 0, 0, 2)
    prob = truth * 0.5
    assert case_metrics(prob, truth, MetricContract(threshold=0.5))["dice"] == 1.0
    assert case_metrics(prob, truth, MetricContract(threshold=0.51))["dice"] == 0.0


def test_soft_versus_hard():
    truth = np.array([[1, 1, 0, 0]], dtype=bool)
    prob = np.array([[0.9, 0.6, 0.3, 0.0]])
    hard = case_metrics(prob, truth, MetricContract(kind="hard"))
    soft = case_metrics(prob, truth, MetricContract(kind="soft"))
    assert (hard["tp"], hard["fp"], hard["fn"], hard["tn"]) == (2.0, 0.0, 0.0, 2.0)
    assert hard["dice"] == 1.0
    assert (soft["tp"], soft["fp"], soft["fn"], soft["tn"]) == pytest.approx((1.5, 0.3, 0.5, 1.7))
    assert soft["dice"] == pytest.approx(3.0 / 3.8)
    assert soft["precision"] == pytest.approx(1.5 / 1.8) and soft["recall"] == pytest.approx(0.75)
    # surface and lesion numbers come from the hard mask in both
    assert soft["hd95"] == hard["hd95"] == 0.0 and soft["n_lesions_found"] == 1


def test_soft_empty_truth_with_low_probabilities_follows_policy():
    prob = np.full((8, 8), 0.1)
    row = case_metrics(prob, np.zeros((8, 8), bool), MetricContract(kind="soft", empty="one"))
    assert row["empty_empty"] and row["dice"] == 1.0 and row["fp"] == pytest.approx(6.4)


def test_spacing_scales_distances():
    truth = _square((20, 20), 5, 5, 4)
    pred = np.roll(truth, 2, axis=0)
    px = case_metrics(pred.astype(float), truth, HARD)
    mm = case_metrics(pred.astype(float), truth, HARD, spacing=(2.0, 1.0))
    assert px["hd95"] == pytest.approx(2.0) and mm["hd95"] == pytest.approx(4.0)


def test_surface_false_omits_distances():
    t = _square((8, 8), 1, 1, 3)
    assert "hd95" not in case_metrics(t.astype(float), t, HARD, surface=False)


@pytest.mark.parametrize(
    "prob,truth,spacing,match",
    [
        (np.zeros((4, 4)), np.zeros((4, 5)), None, "differ in shape"),
        (np.full((4, 4), 1.5), np.zeros((4, 4)), None, r"\[0, 1\]"),
        (np.full((4, 4), np.nan), np.zeros((4, 4)), None, "NaN"),
        (np.zeros((4, 4)), np.full((4, 4), 2), None, "binary"),
        (np.zeros((4, 4)), np.zeros((4, 4)), (1.0,), "spacing"),
        (np.zeros(4), np.zeros(4), None, "2D or 3D"),
    ],
)
def test_invalid_inputs(prob, truth, spacing, match):
    with pytest.raises(ValueError, match=match):
        case_metrics(prob, truth, HARD, spacing=spacing)
