import math
import time

import numpy as np
import pytest

from medseg.metrics import MetricContract, case_metrics, summarize, threshold_sweep


def _known_best_cases():
    """Truth pixels have p in [0.6, 0.9], a halo of background around them p in [0.2, 0.58]:
    only thresholds in (0.58, 0.6] separate them, so on the 0.05 grid 0.60 is the unique best."""
    rng = np.random.default_rng(3)
    probs, truths = [], []
    for _ in range(6):
        truth = np.zeros((32, 32), dtype=bool)
        r, c = rng.integers(4, 24, size=2)
        truth[r : r + 5, c : c + 5] = True
        halo = np.zeros_like(truth)
        halo[r - 3 : r + 8, c - 3 : c + 8] = True
        halo &= ~truth
        prob = np.where(truth, rng.uniform(0.6, 0.9, truth.shape), 0.0)
        prob = np.where(halo, rng.uniform(0.2, 0.58, truth.shape), prob)
        probs.append(prob)
        truths.append(truth)
    return probs, truths


def test_finds_the_known_best_threshold():
    probs, truths = _known_best_cases()
    out = threshold_sweep(probs, truths, MetricContract())
    assert out["best_threshold"] == pytest.approx(0.6) and out["best_value"] == 1.0
    others = [r["dice"] for r in out["rows"] if abs(r["threshold"] - 0.6) > 1e-9]
    assert max(others) < 1.0
    assert not out["flat"] and out["warning"] is None
    assert len(out["rows"]) == 19 and out["metric"] == "dice"


@pytest.mark.parametrize("reduction", ["per_image", "global"])
@pytest.mark.parametrize("empty", ["one", "nan", "zero"])
def test_each_row_equals_case_metrics_then_summarize(prob_cases, reduction, empty):
    probs = [p for p, _ in prob_cases]
    truths = [t for _, t in prob_cases]
    contract = MetricContract(reduction=reduction, empty=empty)
    out = threshold_sweep(probs, truths, contract, thresholds=[0.1, 0.3, 0.5, 0.7])
    for row in out["rows"]:
        c = contract.model_copy(update={"threshold": row["threshold"]})
        s = summarize([case_metrics(p, t, c, surface=False) for p, t in prob_cases], c)
        for k in ("dice", "iou", "precision", "recall", "fp_rate_empty"):
            assert row[k] == pytest.approx(s[k], abs=1e-12, nan_ok=True), (row["threshold"], k)
    assert out["contract"]["reduction"] == reduction and out["contract_text"] == contract.describe()


def test_best_threshold_is_not_the_default_on_probability_maps(prob_cases):
    out = threshold_sweep([p for p, _ in prob_cases], [t for _, t in prob_cases], MetricContract(), metric="iou")
    values = [r["iou"] for r in out["rows"]]
    assert out["best_value"] == max(values) and out["best_threshold"] != 0.5
    assert not out["flat"]


def test_binary_predictions_are_flagged_flat(cases_2d):
    preds = [p.astype(float) for p, _ in cases_2d]
    out = threshold_sweep(preds, [t for _, t in cases_2d], MetricContract())
    assert out["flat"] is True
    assert "Dice-thresholding bug" in out["warning"]


def test_threshold_grid_float_error_is_rounded_away():
    truth = np.array([[True, False]])
    prob = np.array([[0.3, 0.0]])
    grid = np.arange(0.05, 0.951, 0.05)  # holds 0.30000000000000004
    rows = {round(r["threshold"], 2): r for r in threshold_sweep([prob], [truth], MetricContract(), thresholds=grid)["rows"]}
    assert rows[0.3]["dice"] == 1.0 and rows[0.35]["dice"] == 0.0


def test_all_nan_metric_reports_no_best():
    z = np.zeros((4, 4))
    out = threshold_sweep([z], [z.astype(bool)], MetricContract(empty="nan"))
    assert out["best_threshold"] is None and math.isnan(out["best_value"]) and "NaN" in out["warning"]


def test_single_threshold_is_not_flat():
    probs, truths = _known_best_cases()
    out = threshold_sweep(probs, truths, MetricContract(), thresholds=[0.5])
    assert not out["flat"] and len(out["rows"]) == 1


@pytest.mark.parametrize("kw,match", [({"metric": "hd95"}, "metric"), ({"thresholds": [0.0, 0.5]}, r"\(0, 1\)"), ({"thresholds": []}, r"\(0, 1\)")])
def test_bad_arguments(kw, match):
    probs, truths = _known_best_cases()
    with pytest.raises(ValueError, match=match):
        threshold_sweep(probs, truths, MetricContract(), **kw)


def test_mismatched_lists():
    with pytest.raises(ValueError, match="matching"):
        threshold_sweep([np.zeros((2, 2))], [], MetricContract())


def test_fast_on_many_large_images():
    rng = np.random.default_rng(0)
    probs = [rng.random((256, 256)) for _ in range(20)]
    truths = [p > 0.97 for p in probs]
    start = time.perf_counter()
    threshold_sweep(probs, truths, MetricContract(), thresholds=np.arange(0.01, 1.0, 0.01))
    assert time.perf_counter() - start < 5.0


def test_per_volume_sweep_scores_volumes_not_slices():
    from medseg.metrics import case_metrics, summarize
    from medseg.metrics.sweep import sweep_cases

    rng = np.random.default_rng(3)
    # two volumes of 6 slices, the lesion on 2 slices each; slices given out of order
    meta, probs, masks = [], [], []
    for v in ("a", "b"):
        for z in (5, 0, 3, 1, 4, 2):
            m = np.zeros((16, 16), np.uint8)
            if z in (2, 3):
                m[4:9, 4:9] = 1
            p = np.clip(m * 0.6 + rng.uniform(0, 0.45, (16, 16)) * (rng.random() < 0.5), 0, 1).astype(np.float32)
            meta.append({"volume": v, "slice": z})
            probs.append(p)
            masks.append(m)
    c = MetricContract(reduction="per_volume", empty="one")
    vp, vm = sweep_cases(probs, masks, meta, c)
    assert [x.shape for x in vp] == [(6, 16, 16), (6, 16, 16)]
    assert vm[0][2].any() and not vm[0][0].any()  # restacked in slice order
    sw = threshold_sweep(vp, vm, c, thresholds=[0.3, 0.5])
    for row in sw["rows"]:
        t = row["threshold"]
        ref = summarize([case_metrics(p, m, c.model_copy(update={"threshold": t}), surface=False) for p, m in zip(vp, vm)], c)
        assert row["dice"] == pytest.approx(ref["dice"], abs=1e-9)
    # images (no volume meta) and per-image contracts pass through unchanged
    assert sweep_cases(probs, masks, None, c)[0] == probs
    assert len(sweep_cases(probs, masks, meta, MetricContract())[0]) == 12
