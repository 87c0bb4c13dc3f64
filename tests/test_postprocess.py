"""Post-processing rules and their tuning, checked against hand-built cases and numpy Dice."""

import math

import numpy as np
import pytest

from medseg.metrics.contract import MetricContract
from medseg.postprocess import PostProcess, default_area_grid, tune_postprocess


def _disk(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _np_dice(pred, truth, empty=1.0):
    if not pred.any() and not truth.any():
        return empty
    return 2 * np.count_nonzero(pred & truth) / (pred.sum() + truth.sum())


def test_apply_removes_small_components_and_keeps_largest():
    prob = np.zeros((40, 40), np.float32)
    prob[_disk(prob.shape, 10, 10, 6)] = 0.9  # ~113 px
    prob[30:33, 30:33] = 0.9  # 9 px
    prob[2, 38] = 0.6  # 1 px, and below a 0.7 threshold
    assert PostProcess(0.5).apply(prob).sum() == (prob >= 0.5).sum()
    kept = PostProcess(0.5, min_area=10).apply(prob)
    assert kept.sum() == _disk(prob.shape, 10, 10, 6).sum()
    assert PostProcess(0.7).apply(prob).sum() == (prob >= 0.7).sum()
    largest = PostProcess(0.5, keep_largest=True).apply(prob)
    assert largest.sum() == _disk(prob.shape, 10, 10, 6).sum()
    # a map at 2x the input side has 4x the pixels: min_area 10 at input is 40 here
    assert PostProcess(0.5, min_area=3).apply(prob, area_scale=4.0).sum() == _disk(prob.shape, 10, 10, 6).sum()
    # diagonal neighbours are one component (full connectivity, as the lesion metrics count)
    diag = np.zeros((8, 8)); diag[1, 1] = diag[2, 2] = diag[3, 3] = 1.0
    assert PostProcess(0.5, min_area=3).apply(diag).sum() == 3


def _half_normal_cases(rng, lesion_prob, false_alarm, n=12, shape=(48, 48)):
    """Even cases: a disk lesion predicted at `lesion_prob`; odd cases: normal, with `false_alarm(p)` painted in."""
    probs, truths = [], []
    for i in range(n):
        p = rng.uniform(0, 0.2, shape).astype(np.float32)
        t = np.zeros(shape, bool)
        if i % 2 == 0:
            t = _disk(shape, 24, 24, 8)
            p[_disk(shape, 24, 25, 8)] = lesion_prob
        else:
            false_alarm(p)
        probs.append(p)
        truths.append(t)
    return probs, truths


def _speck(p):
    p[5:7, 5:7] = 0.9


def _lukewarm_blob(p):
    p[_disk(p.shape, 12, 30, 8)] = 0.75


def _specky_cases(rng, n=12):
    """Lesions at 0.8; a 4-px speck at 0.9 on every normal image."""
    return _half_normal_cases(rng, 0.8, _speck, n)


def _lukewarm_cases(rng, n=12):
    """Lesions peak at 0.99; normal images hold a lesion-sized blob at 0.75 that no area rule can remove."""
    return _half_normal_cases(rng, 0.99, _lukewarm_blob, n)


def test_tuning_finds_the_area_that_removes_specks_and_scores_like_numpy():
    probs, truths = _specky_cases(np.random.default_rng(0))
    c = MetricContract()
    res = tune_postprocess(probs, truths, c, thresholds=[0.5, 0.85], area_fractions=[0.0, 0.001, 0.004, 0.05])
    raw = np.mean([_np_dice(p >= 0.5, t) for p, t in zip(probs, truths)])
    assert res["raw"]["dice"] == pytest.approx(raw, abs=1e-9)
    chosen = PostProcess.from_json(res["chosen"])
    # 0.001*48*48 = 2 px keeps the 4-px specks; 0.004 -> 9 px removes them, 0.05 -> 115 px would remove lesions
    assert chosen.min_area == 9 and chosen.threshold == 0.5
    tuned = np.mean([_np_dice(chosen.apply(p), t) for p, t in zip(probs, truths)])
    assert res["best"]["dice"] == pytest.approx(tuned, abs=1e-9)
    assert res["gain"] == pytest.approx(tuned - raw, abs=1e-9) and res["gain"] > 0.4
    assert len(res["rows"]) == 2 * 4 * 2  # thresholds x areas x keep_largest (no gates asked for)


def test_tuning_keeps_raw_when_the_gain_is_below_min_gain():
    rng = np.random.default_rng(1)
    probs, truths = [], []
    for _ in range(6):
        t = _disk((32, 32), 16, 16, 6)
        probs.append(np.where(t, 0.9, 0.05).astype(np.float32))
        truths.append(t)
    res = tune_postprocess(probs, truths, MetricContract(), [0.4, 0.5, 0.6], [0.0, 0.01], min_gain=0.005)
    assert res["chosen"] == {"threshold": 0.5, "min_area": 0, "keep_largest": False, "min_score": 0.0, "tta": []}
    assert "raw prediction kept" in res["reason"]


def test_gate_on_the_peak_probability_empties_lukewarm_false_alarms():
    probs, truths = _lukewarm_cases(np.random.default_rng(3))
    assert not PostProcess(0.5, min_score=0.8).apply(probs[1]).any()
    assert PostProcess(0.5, min_score=0.8).apply(probs[0]).sum() == (probs[0] >= 0.5).sum()
    assert PostProcess(0.5, min_score=0.99).apply(probs[0]).any()  # the gate is inclusive
    # without gates the best rule cannot tell the blobs from lesions (same size); with gates it can
    plain = tune_postprocess(probs, truths, MetricContract(), [0.5], [0.0, 0.004])
    gated = tune_postprocess(probs, truths, MetricContract(), [0.5], [0.0, 0.004], min_scores=[0.7, 0.9, 0.995])
    assert plain["best"]["dice"] < 0.6
    chosen = PostProcess.from_json(gated["chosen"])
    assert chosen.min_score == 0.9  # 0.7 keeps the blobs, 0.995 would empty the lesions too
    expect = np.mean([_np_dice(chosen.apply(p), t) for p, t in zip(probs, truths)])
    assert gated["best"]["dice"] == pytest.approx(expect, abs=1e-9) and expect > 0.95
    assert len(gated["rows"]) == 1 * 2 * 2 * 4  # thresholds x areas x keep_largest x (0 + three gates)
    assert "max probability >= 0.9" in chosen.describe()


def test_tta_rule_must_beat_the_plain_prediction():
    probs, truths = _specky_cases(np.random.default_rng(4))
    plain = [np.where(t, 0.3, 0.0).astype(np.float32) for t in truths]  # plain prediction misses every lesion
    res = tune_postprocess(probs, truths, MetricContract(), [0.5], [0.0, 0.004], tta=True, raw_probs=plain)
    assert res["raw"]["dice"] == pytest.approx(np.mean([_np_dice(p >= 0.5, t) for p, t in zip(plain, truths)]), abs=1e-9)
    assert res["chosen"]["tta"] == ["identity", "hflip"] and "flip TTA" in res["reason"]
    same = tune_postprocess(plain, truths, MetricContract(), [0.5], [0.0], tta=True, raw_probs=plain, min_gain=0.01)
    assert same["chosen"]["tta"] == []  # nothing gained: the plain raw prediction is kept, TTA off


def test_rules_saved_before_gates_existed_still_load():
    old = {"threshold": 0.6, "min_area": 3, "keep_largest": True}
    assert PostProcess.from_json(old) == PostProcess(0.6, 3, True, 0.0, False)


def test_tuning_follows_the_empty_policy_and_per_volume_cases():
    probs, truths = _specky_cases(np.random.default_rng(2), n=6)
    nan_contract = MetricContract(empty="nan")
    res = tune_postprocess(probs, truths, nan_contract, [0.5], [0.0, 0.004])
    # with empty=nan a speck on a normal image scores 0 and a clean one drops out of the mean
    expect = np.nanmean([_np_dice(p >= 0.5, t, empty=math.nan) for p, t in zip(probs, truths)])
    assert res["raw"]["dice"] == pytest.approx(expect, abs=1e-9)
    lesions_only = np.mean([_np_dice(p >= 0.5, t) for p, t in zip(probs, truths) if t.any()])
    assert res["best"]["dice"] == pytest.approx(lesions_only, abs=1e-9)
    vol_p, vol_t = np.stack(probs), np.stack(truths)
    res3 = tune_postprocess([vol_p], [vol_t], MetricContract(reduction="per_volume"), [0.5], [0.0, 0.004])
    pred = PostProcess.from_json(res3["chosen"]).apply(vol_p)
    assert res3["best"]["dice"] == pytest.approx(_np_dice(pred, vol_t), abs=1e-9)


def test_area_grid_uses_one_slice_area():
    assert default_area_grid((10, 100, 50), [0.0, 0.001, 0.01]) == [0, 5, 50]


def test_tta_sets_from_the_config_and_rules_of_the_flag_era():
    from medseg.config import config_from_dict
    from medseg.data.tta import DIHEDRAL, FLIP

    assert config_from_dict({}).postprocess.tta_sets() == [("identity",), FLIP, DIHEDRAL]
    assert config_from_dict({"postprocess": {"tta": False}}).postprocess.tta_sets() == [("identity",)]
    assert config_from_dict({"postprocess": {"tta": [["hflip", "vflip"]]}}).postprocess.tta_sets() == [("identity",), ("hflip", "vflip")]
    with pytest.raises(Exception, match="postprocess.tta"):
        config_from_dict({"postprocess": {"tta": [["spin"]]}})
    old = PostProcess.from_json({"threshold": 0.5, "min_area": 0, "keep_largest": False, "tta": True})
    assert old.tta == FLIP and "flip TTA" in old.describe() and PostProcess(tta=["identity"]).tta == ()


def test_the_cheapest_tta_set_within_min_gain_wins():
    from medseg.postprocess import tune_over_tta

    probs, truths = _specky_cases(np.random.default_rng(4))
    plain = [np.where(t, 0.3, 0.0).astype(np.float32) for t in truths]
    nudged = [np.clip(p + 0.0005, 0, 1) for p in probs]  # a costlier set that is only a hair better
    res = tune_over_tta([(("identity",), plain), (("identity", "hflip"), probs), (DIHEDRAL_NAMES, nudged)], truths,
                        MetricContract(), [0.5], [0.0, 0.004], min_gain=0.01)
    flip, dihedral = res["tta_sets"][1], res["tta_sets"][2]
    assert [r["n_transforms"] for r in res["tta_sets"]] == [1, 2, 8] and flip["best_dice"] > res["tta_sets"][0]["best_dice"]
    assert abs(dihedral["best_dice"] - flip["best_dice"]) < 0.01  # the 8-pass set is not worth 0.01 more
    assert res["chosen"]["tta"] == ["identity", "hflip"]


DIHEDRAL_NAMES = ("identity", "hflip", "vflip", "rot90", "rot180", "rot270", "transpose", "antitranspose")


@pytest.mark.parametrize("volumes, reduction, empty", [(False, "per_image", "one"), (True, "per_volume", "one"),
                                                       (False, "global", "one"), (False, "per_image", "nan")])
def test_every_candidate_row_scores_like_numpy_applying_that_rule(volumes, reduction, empty):
    """All rows of the search (thresholds on float32 values exactly, areas, keep_largest, gates) against PostProcess.apply,
    on images and on volumes (3D components, as a per-volume contract tunes), for each reduction and empty policy."""
    rng = np.random.default_rng(5)
    probs, truths = [], []
    for i in range(8):
        p = rng.uniform(0, 0.6, (40, 40)).astype(np.float32)
        t = _disk((40, 40), 20, 20, 5 + i % 3) if i % 3 else np.zeros((40, 40), bool)
        p[_disk((40, 40), 20, 21, 6)] = np.float32(0.35)  # exactly float32(0.35) < 0.35: below that threshold
        p[3:5, 30:36] = rng.uniform(0.4, 1.0)
        probs.append(p)
        truths.append(t)
    if volumes:  # four volumes of 2 slices; a lesion's slices touch across the volume's depth
        probs = [np.stack(probs[i:i + 2]) for i in range(0, 8, 2)]
        truths = [np.stack(truths[i:i + 2]) for i in range(0, 8, 2)]
    c = MetricContract(reduction=reduction, empty=empty)
    res = tune_postprocess(probs, truths, c, [0.35, 0.5, 0.7], [0.0, 0.003, 0.02], min_scores=[0.8])
    assert len(res["rows"]) == 3 * 3 * 2 * 2

    def numpy_dice(preds):
        if reduction == "global":  # pooled over all cases
            p, t = np.concatenate([x.ravel() for x in preds]), np.concatenate([x.ravel() for x in truths])
            return _np_dice(p, t)
        return np.nanmean([_np_dice(x, t, empty=math.nan if empty == "nan" else 1.0) for x, t in zip(preds, truths)])

    for row in res["rows"]:
        rule = PostProcess(row["threshold"], row["min_area"], row["keep_largest"], row["min_score"])
        preds = [rule.apply(p) for p in probs]
        assert row["dice"] == pytest.approx(numpy_dice(preds), abs=1e-12), row
        assert row["n_empty_empty"] == sum(1 for x, t in zip(preds, truths) if not x.any() and not t.any())
    assert res["raw"]["dice"] == pytest.approx(numpy_dice([p >= 0.5 for p in probs]), abs=1e-12)
    assert res["n_cases"] == len(probs)
    assert len({round(r["dice"], 6) for r in res["rows"]}) > 4  # the rules differ on these cases


def _mixed_cases(rng, n=9, shape=(40, 40)):
    """Images with a lesion, normal images with specks or lukewarm blobs: rules and gates differ on them."""
    probs, truths = [], []
    for i in range(n):
        p = rng.uniform(0, 0.6, shape).astype(np.float32)
        t = _disk(shape, 20, 20, 5 + i % 3) if i % 3 else np.zeros(shape, bool)
        p[_disk(shape, 20, 21, 6)] = rng.uniform(0.45, 0.99)
        p[3:5, 30:36] = rng.uniform(0.4, 1.0)
        probs.append(p)
        truths.append(t)
    return probs, truths


def _assert_same_search(got: dict, want: dict):
    assert got["n_cases"] == want["n_cases"] and got["chosen"] == want["chosen"] and got["reason"] == want["reason"]
    assert len(got["rows"]) == len(want["rows"])
    for a, b in zip([got["raw"], got["best"], *got["rows"]], [want["raw"], want["best"], *want["rows"]]):
        assert {k: v for k, v in a.items() if k != "dice"} == {k: v for k, v in b.items() if k != "dice"}
        assert a["dice"] == pytest.approx(b["dice"], abs=1e-12, nan_ok=True)
    assert got["gain"] == pytest.approx(want["gain"], abs=1e-12)


@pytest.mark.parametrize("volumes, reduction, empty", [(False, "per_image", "one"), (False, "global", "one"),
                                                       (False, "per_image", "nan"), (True, "per_volume", "one"),
                                                       (True, "global", "one")])
def test_merged_searches_equal_one_search_fed_every_case(volumes, reduction, empty):
    """Each part searched on its own, then merged (an empty search skipped): every row as one search over all cases."""
    from medseg.postprocess import RuleSearch, TTARuleSearch

    rng = np.random.default_rng(7)
    probs, truths = _mixed_cases(rng, n=12)
    if volumes:  # six volumes of 2 slices
        probs = [np.stack(probs[i:i + 2]) for i in range(0, 12, 2)]
        truths = [np.stack(truths[i:i + 2]) for i in range(0, 12, 2)]
    flipped = [np.clip(p + rng.normal(0, 0.05, p.shape), 0, 1).astype(np.float32) for p in probs]
    c = MetricContract(reduction=reduction, empty=empty)
    grid = (c, [0.35, 0.5, 0.7], [0.0, 0.003, 0.02], (False, True), [0.8, 0.9])
    sets = [("identity",), ("identity", "hflip")]
    parts = [range(0, 2), range(2, 3), range(3, len(probs)), range(0)]  # uneven, and one with no case

    one, one_tta = RuleSearch(*grid), TTARuleSearch(sets, *grid)
    for p, q, t in zip(probs, flipped, truths):
        one.add(q, t, plain=p)
        one_tta.add([p, q], t)
    pieces, tta_pieces = [], []
    for idx in parts:
        s, st = RuleSearch(*grid), TTARuleSearch(sets, *grid)
        for i in idx:
            s.add(flipped[i], truths[i], plain=probs[i])
            st.add([probs[i], flipped[i]], truths[i])
        pieces.append(s)
        tta_pieces.append(st)
    _assert_same_search(RuleSearch.merged(pieces).result(0.005, sets[1]), one.result(0.005, sets[1]))
    got, want = TTARuleSearch.merged(tta_pieces).result(0.005), one_tta.result(0.005)
    _assert_same_search(got, want)
    assert got["tta_reason"] == want["tta_reason"] and len(got["tta_sets"]) == 2
    for a, b in zip(got["tta_sets"], want["tta_sets"]):
        assert a["tta"] == b["tta"] and a["best_dice"] == pytest.approx(b["best_dice"], abs=1e-12)
    # a leave-one-part-out merge is the search on the other parts' cases
    rest = RuleSearch(*grid)
    for i in [*parts[0], *parts[2]]:
        rest.add(flipped[i], truths[i], plain=probs[i])
    _assert_same_search(RuleSearch.merged([pieces[0], pieces[2], pieces[3]]).result(), rest.result())


def test_searches_of_different_grids_or_sets_do_not_merge():
    from medseg.postprocess import RuleSearch, TTARuleSearch

    c = MetricContract()
    a, b = RuleSearch(c, [0.5], [0.0]), RuleSearch(c, [0.5, 0.6], [0.0])
    with pytest.raises(ValueError, match="different grids"):
        RuleSearch.merged([a, b])
    small, big = RuleSearch(c, [0.5], [0.01]), RuleSearch(c, [0.5], [0.01])
    small.add(np.zeros((10, 10), np.float32), np.zeros((10, 10), bool))
    big.add(np.zeros((40, 40), np.float32), np.zeros((40, 40), bool))
    with pytest.raises(ValueError, match="image"):
        RuleSearch.merged([small, big])
    with pytest.raises(ValueError, match="TTA sets"):
        TTARuleSearch.merged([TTARuleSearch([("identity",)], c, [0.5], [0.0]),
                              TTARuleSearch([("identity",), ("identity", "hflip")], c, [0.5], [0.0])])
    with pytest.raises(ValueError, match="no cases"):
        RuleSearch.merged([a]).result()
