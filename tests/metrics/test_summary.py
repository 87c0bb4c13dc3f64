import math

import numpy as np
import pytest

from medseg.metrics import METRICS_VERSION, MetricContract, case_metrics, summarize


def _tiny_cases():
    """Four 1x10 cases with hand-checkable counts.

    A: truth 8 px, prediction 2 px inside    -> tp 2, fp 0, fn 6: Dice 0.4, recall 0.25
    B: truth 2 px, prediction exact          -> tp 2:           Dice 1.0
    C: empty truth, empty prediction         -> policy
    D: empty truth, prediction 3 px          -> fp 3:           Dice 0, recall NaN
    """
    def row(truth_px, pred_px):
        t = np.zeros((1, 10), dtype=bool)
        p = np.zeros((1, 10))
        t[0, truth_px] = True
        p[0, pred_px] = 1.0
        return p, t

    return [row(slice(0, 8), slice(0, 2)), row(slice(4, 6), slice(4, 6)), row(slice(0, 0), slice(0, 0)), row(slice(0, 0), slice(0, 3))]


def _rows(contract):
    return [case_metrics(p, t, contract) for p, t in _tiny_cases()]


@pytest.mark.parametrize("policy,dice,recall", [("one", (0.4 + 1 + 1 + 0) / 4, (0.25 + 1 + 1) / 3), ("nan", (0.4 + 1 + 0) / 3, (0.25 + 1) / 2), ("zero", (0.4 + 1) / 4, (0.25 + 1 + 0) / 3)])
def test_per_image_by_hand(policy, dice, recall):
    c = MetricContract(empty=policy, reduction="per_image")
    s = summarize(_rows(c), c)
    assert s["dice"] == pytest.approx(dice)
    assert s["recall"] == pytest.approx(recall)
    assert s["dice_nan"] == (1 if policy == "nan" else 0)


def test_per_volume_is_the_mean_of_the_rows_given():
    c = MetricContract(reduction="per_volume")
    assert summarize(_rows(c), c)["dice"] == pytest.approx(0.6)


@pytest.mark.parametrize("policy", ["one", "nan", "zero"])
def test_global_pools_counts(policy):
    c = MetricContract(empty=policy, reduction="global")
    s = summarize(_rows(c), c)
    # pooled tp 4, fp 3, fn 6
    assert (s["tp"], s["fp"], s["fn"]) == (4.0, 3.0, 6.0)
    assert s["dice"] == pytest.approx(8 / 17)
    assert s["iou"] == pytest.approx(4 / 13)
    assert s["precision"] == pytest.approx(4 / 7)
    assert s["recall"] == pytest.approx(4 / 10)


@pytest.mark.parametrize("policy,expected", [("one", 1.0), ("nan", math.nan), ("zero", 0.0)])
def test_global_all_empty_follows_policy(policy, expected):
    c = MetricContract(empty=policy, reduction="global")
    z = np.zeros((4, 4))
    s = summarize([case_metrics(z, z.astype(bool), c)] * 2, c)
    assert s["dice"] == expected or (math.isnan(expected) and math.isnan(s["dice"]))


def test_always_reported_fields():
    c = MetricContract()
    s = summarize(_rows(c), c)
    assert s["n_cases"] == 4 and s["n_empty_truth"] == 2 and s["n_empty_empty"] == 1
    assert s["fp_rate_empty"] == 0.5
    assert s["dice_nonempty"] == pytest.approx(0.7)
    # lesions: A found, B found; D's prediction is unmatched
    assert s["lesion_recall"] == 1.0 and s["lesion_precision"] == pytest.approx(2 / 3)
    assert s["n_lesions_truth_small"] == 2 and s["lesion_recall_small"] == 1.0
    assert s["n_lesions_truth_large"] == 0 and math.isnan(s["lesion_recall_large"])
    # hd95: A and B have both masks; C is 0 under `one`; D is NaN
    assert s["hd95_nan"] == 1 and s["asd_nan"] == 1
    assert s["hd95"] == pytest.approx(np.nanmean([r["hd95"] for r in _rows(c)]))
    assert MetricContract(**s["contract"]) == c
    assert s["contract_text"] == c.describe() and s["metrics_version"] == METRICS_VERSION


def test_fp_rate_empty_nan_without_empty_truths():
    c = MetricContract()
    rows = _rows(c)[:2]
    assert math.isnan(summarize(rows, c)["fp_rate_empty"])


def test_distances_absent_when_not_computed():
    c = MetricContract()
    rows = [case_metrics(p, t, c, surface=False) for p, t in _tiny_cases()]
    assert "hd95" not in summarize(rows, c)


def test_extra_keys_are_ignored_and_nan_means_do_not_warn(recwarn):
    c = MetricContract(empty="nan")
    z = np.zeros((4, 4))
    rows = [{"case": "x", **case_metrics(z, z.astype(bool), c)}]
    s = summarize(rows, c)
    assert math.isnan(s["dice"]) and math.isnan(s["dice_nonempty"])
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_errors():
    c = MetricContract()
    with pytest.raises(ValueError, match="no cases"):
        summarize([], c)
    with pytest.raises(ValueError, match="size bins"):
        summarize(_rows(c), MetricContract(lesion_size_bins=[10.0]))
