"""Error analysis: the Dice deficit breakdown and the recall/precision side, checked by hand."""

from __future__ import annotations

import pytest

from medseg.doctor import errors as E
from medseg.training import SELECT_MIN_VAL_CASES
from tests.doctor.conftest import make_evidence


def _row(dice, truth_empty, pred_empty, n_truth=0, n_found=0):
    return {"dice": dice, "truth_empty": truth_empty, "pred_empty": pred_empty, "n_lesions_truth": n_truth, "n_lesions_found": n_found}


ROWS = [
    _row(1.0, True, True),            # empty, correct
    _row(0.0, True, False),           # false positive on an empty image
    _row(0.0, True, False),
    _row(0.0, False, True, 2, 0),     # both lesions missed
    _row(0.6, False, False, 2, 1),    # one of two found: deficit 0.4 split half missed, half outline
    _row(0.9, False, False, 1, 1),    # found, outline error 0.1
]


def test_dice_breakdown_by_hand():
    b = E.dice_breakdown(ROWS)
    assert b["n_cases"] == 6 and b["deficit"] == pytest.approx(3.5)
    assert b["lost_fp_on_empty"] == pytest.approx(2 / 6)
    assert b["lost_missed"] == pytest.approx((1.0 + 0.2) / 6)
    assert b["lost_outline"] == pytest.approx((0.2 + 0.1) / 6)
    assert b["share_fp_on_empty"] + b["share_missed"] + b["share_outline"] == pytest.approx(1.0)
    assert (b["n_empty_truth"], b["n_fp_on_empty"]) == (3, 2)


def test_breakdown_reads_csv_strings_and_skips_nan_dice():
    rows = [dict(r, truth_empty=str(r["truth_empty"]), pred_empty=str(r["pred_empty"])) for r in ROWS] + [_row(float("nan"), True, True)]
    assert E.dice_breakdown(rows)["deficit"] == pytest.approx(3.5)


def test_findings_name_the_biggest_losses():
    ids = {f.id: f for f in E.dice_loss_findings(make_evidence(), ROWS, {"n_lesions_truth_small": 5, "lesion_recall_small": 0.4})}
    assert {"errors.fp_on_empty", "errors.missed_lesions"} <= set(ids)
    assert ids["errors.fp_on_empty"].fix_key == "eval.contract.threshold"  # bce already in the default loss
    assert "small 2/5" in ids["errors.missed_lesions"].evidence


def test_fp_on_empty_points_at_the_tuning_when_it_is_off():
    ev = make_evidence(config={"postprocess": {"tune": False}})
    f = next(f for f in E.dice_loss_findings(ev, ROWS, {}) if f.id == "errors.fp_on_empty")
    assert (f.fix_key, f.fix_value) == ("postprocess.tune", True)
    # ... but not on a handful of validation cases, where the plan turned it off on purpose
    for n in (SELECT_MIN_VAL_CASES - 1, SELECT_MIN_VAL_CASES):
        ev = make_evidence(config={"postprocess": {"tune": False}}, split={"val": [f"c{i}" for i in range(n)]})
        f = next(f for f in E.dice_loss_findings(ev, ROWS, {}) if f.id == "errors.fp_on_empty")
        assert (f.fix_key == "postprocess.tune") == (n >= SELECT_MIN_VAL_CASES)


def test_recall_starved_with_precision_favouring_tversky_is_serious():
    loss = {"tversky": {"weight": 1.0, "fp_weight": 0.9, "fn_weight": 0.1}}
    summary = {"tp": 250.0, "fp": 2.0, "fn": 50.0}
    f = E.recall_precision(make_evidence(config={"loss": loss}), summary)
    assert f.id == "errors.recall_loss_weights" and f.severity == "serious"
    assert f.numbers["recall"] == pytest.approx(250 / 300) and f.numbers["miss_share"] == pytest.approx(50 / 52)
    assert f.numbers["dice_lost_to_fn"] == pytest.approx(50 / (500 + 52))
    assert f.fix_key == "loss.tversky" and f.fix_value == {"weight": 1.0, "fp_weight": 0.3, "fn_weight": 0.7}


def test_same_numbers_with_a_neutral_loss_are_a_warning_and_balanced_errors_nothing():
    f = E.recall_precision(make_evidence(config={"loss": {"bce": 1.0, "dice": 1.0}}), {"tp": 250.0, "fp": 2.0, "fn": 50.0})
    assert f.id == "errors.low_recall" and f.severity == "warning"
    assert E.recall_precision(make_evidence(), {"tp": 250.0, "fp": 20.0, "fn": 20.0}) is None


def test_found_lesion_dice_by_hand():
    import numpy as np

    from medseg.doctor.evidence import found_lesion_dice

    truth = np.zeros((10, 10), bool)
    truth[1:3, 1:3] = True   # 4 px, predicted exactly
    truth[6:9, 6:9] = True   # 9 px, predicted as 6 px inside it
    truth[1, 8] = True       # missed
    pred = np.zeros_like(truth)
    pred[1:3, 1:3] = True
    pred[6:8, 6:9] = True
    assert sorted(found_lesion_dice(pred, truth)) == pytest.approx(sorted([1.0, 2 * 6 / 15]))


def test_nearly_everything_missed_is_a_collapse_and_points_at_the_loss_weights():
    rows = [_row(0.0, False, True, 1, 0) for _ in range(9)] + [_row(0.5, False, False, 1, 1)]
    summary = {"n_lesions_truth_small": 2, "lesion_recall_small": 0.0}
    loss = {"bce": 3.0, "dice": 1.0, "focal": 4.0}
    f = next(f for f in E.dice_loss_findings(make_evidence(config={"loss": loss}), rows, summary) if f.id == "errors.missed_lesions")
    assert f.numbers["found_share"] == pytest.approx(0.1)
    assert (f.fix_key, f.fix_value) == ("loss", {"bce": 1.0, "dice": 1.0}) and "collapse" in f.why
    # half the lesions found: an ordinary miss, not a collapse
    rows2 = [_row(0.0, False, True, 1, 0) for _ in range(5)] + [_row(0.5, False, False, 1, 1) for _ in range(5)]
    g = next(f for f in E.dice_loss_findings(make_evidence(config={"loss": loss}), rows2, summary) if f.id == "errors.missed_lesions")
    assert g.fix_key != "loss" and "collapse" not in g.why


def _sized(dice, truth_empty, pred_empty, fp, area, n_truth=0, n_found=0):
    return dict(_row(dice, truth_empty, pred_empty, n_truth, n_found), fp=fp, tp=area * dice / 2 if area else 0.0,
                fn=area - area * dice / 2 if area else 0.0)


def test_lesion_sized_false_positives_are_told_apart_from_specks():
    lesion = [_sized(0.8, False, False, 100.0, 4000.0, 1, 1) for _ in range(4)]
    big = lesion + [_sized(0.0, True, False, 3000.0, 0.0) for _ in range(3)]
    b = E.dice_breakdown(big)
    assert b["fp_px_on_empty_median"] == 3000.0 and b["lesion_px_median"] == 4000.0
    f = next(f for f in E.dice_loss_findings(make_evidence(config={"postprocess": {"tune": False}, "model": {"name": "unet"}}), big, {}) if f.id == "errors.fp_on_empty")
    assert "lesion-sized" in f.why and (f.fix_key, f.fix_value) == ("model.name", "flexunet-resnet34")
    specks = lesion + [_sized(0.0, True, False, 12.0, 0.0) for _ in range(3)]
    f = next(f for f in E.dice_loss_findings(make_evidence(config={"postprocess": {"tune": False}}), specks, {}) if f.id == "errors.fp_on_empty")
    assert "specks cost" in f.why and f.fix_key == "postprocess.tune"


def test_a_reversed_tversky_is_a_warning_even_when_recall_is_not_the_weak_side():
    # false positives dominate the errors (recall 0.73, precision 0.39): the measured check has nothing to say
    summary = {"tp": 730.0, "fp": 1150.0, "fn": 270.0}
    ev = make_evidence(config={"loss": {"tversky": {"weight": 1.0, "fp_weight": 0.9, "fn_weight": 0.1}}})
    assert E.recall_precision(ev, summary) is None
    f = E.loss_weights_reversed(ev, summary)
    assert f.severity == "warning" and f.numbers["ratio"] == pytest.approx(9.0)
    assert f.fix_key == "loss.tversky" and f.fix_value["fp_weight"] == 0.3 and f.fix_value["fn_weight"] == 0.7
    assert "recall 0.730, precision 0.388" in f.evidence
    # MONAI's alias names say which convention was read
    aliased = make_evidence(config={"loss": {"focal_tversky": {"weight": 1.0, "alpha": 0.8, "beta": 0.2}}})
    assert "alpha" in E.loss_weights_reversed(aliased, {}).evidence
    # the usual recall-favouring setting and a mild lean are not reported; nor twice when recall is starved
    assert E.loss_weights_reversed(make_evidence(config={"loss": {"tversky": {"fp_weight": 0.3, "fn_weight": 0.7}}}), summary) is None
    assert E.loss_weights_reversed(make_evidence(config={"loss": {"tversky": {"fp_weight": 0.6, "fn_weight": 0.4}}}), summary) is None
    starved = {"tp": 200.0, "fp": 50.0, "fn": 800.0}
    assert [f.id for f in E.check(make_evidence(config=ev.raw_config, summary=starved))].count("errors.loss_weights_reversed") == 0
