"""Generalisation checks: growing train-validation gap, budget too short, an epoch or rule picked on few cases."""

from __future__ import annotations

import pytest

from medseg.doctor import generalisation as G
from tests.doctor.conftest import make_evidence


def _rows(**cols):
    n = len(next(iter(cols.values())))
    return [{"epoch": i, **{k: v[i] for k, v in cols.items()}} for i in range(n)]


def test_gap_starts_where_validation_loss_bottoms_out():
    tl = [1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.25, 0.2]
    vl = [1.0, 0.8, 0.7, 0.7, 0.8, 0.9, 1.0, 1.1]
    f = G.growing_gap(make_evidence(epochs=_rows(train_loss=tl, val_loss=vl), config={"augment": {"preset": "light"}}))
    smooth = G._smooth(__import__("numpy").array(vl))
    assert f.numbers["gap_start_epoch"] == int(smooth.argmin()) == 2
    assert f.numbers["val_loss_rise"] == pytest.approx((smooth[-1] - smooth[2]) / smooth[2])
    assert (f.fix_key, f.fix_value) == ("augment.preset", "medium")


def test_no_gap_while_validation_follows_training():
    tl = [1.0, 0.8, 0.6, 0.5, 0.4, 0.3]
    assert G.growing_gap(make_evidence(epochs=_rows(train_loss=tl, val_loss=[x + 0.1 for x in tl]))) is None


def test_budget_too_short_gain_over_last_third():
    dice = [0.1, 0.3, 0.45, 0.55, 0.62, 0.7]
    f = G.budget_too_short(make_evidence(epochs=_rows(val_dice=dice), summary={"best_epoch": 5}, config={"train": {"epochs": 6}}))
    assert f.numbers["gain_last_third"] == pytest.approx(0.7 - 0.55)  # last vs best of the first 4 epochs
    assert f.severity == "serious" and (f.fix_key, f.fix_value) == ("train.epochs", 16)


def test_budget_too_short_under_a_time_budget_asks_for_more_budget_and_counts_the_epochs_trained():
    # schedule.fill_budget trained 6 epochs where train.epochs said 4: more epochs would not fit the budget
    dice = [0.1, 0.3, 0.45, 0.55, 0.62, 0.7]
    ev = make_evidence(epochs=_rows(val_dice=dice), summary={"best_epoch": 5}, config={"train": {"epochs": 4, "budget_minutes": 15}})
    f = G.budget_too_short(ev)
    assert (f.fix_key, f.fix_value) == ("train.budget_minutes", 30.0)
    assert f.numbers["epochs"] == 6 and "train.epochs = 4, 6 trained" in f.evidence


def test_budget_fine_when_plateaued_or_best_earlier():
    flat = [0.5, 0.8, 0.9, 0.905, 0.906, 0.906]
    assert G.budget_too_short(make_evidence(epochs=_rows(val_dice=flat), summary={"best_epoch": 5})) is None
    peak = [0.5, 0.9, 0.8, 0.7]
    assert G.budget_too_short(make_evidence(epochs=_rows(val_dice=peak), summary={"best_epoch": 1})) is None


def test_budget_with_loss_monitor_is_relative():
    vl = [1.0, 0.8, 0.6, 0.4]
    f = G.budget_too_short(make_evidence(epochs=_rows(val_loss=vl), config={"train": {"monitor": "loss", "epochs": 4}}))
    assert f.numbers["gain_last_third"] == pytest.approx((0.8 - 0.4) / 0.8)


def test_budget_too_short_when_the_training_loss_has_barely_started_to_fall():
    rows = _rows(val_dice=[0.48, 0.49], train_loss=[1.56, 1.33])
    f = G.budget_too_short(make_evidence(epochs=rows, summary={"best_epoch": 1}, config={"train": {"epochs": 2}}))
    assert f.severity == "serious"
    assert f.numbers["train_loss_left"] == pytest.approx(1.33 / 1.56) and f.numbers["train_loss_last_fall"] == pytest.approx(0.23 / 1.56)
    converged = _rows(val_dice=[0.9, 0.905, 0.905], train_loss=[1.6, 0.13, 0.12])
    assert G.budget_too_short(make_evidence(epochs=converged, summary={"best_epoch": 2})) is None


def _val(n):
    return {"val": [f"case{i}" for i in range(n)]}


def test_an_epoch_picked_on_a_handful_of_validation_cases_is_flagged():
    rows = _rows(val_dice=[0.1 * (i % 7) for i in range(41)])
    ev = make_evidence(epochs=rows, split=_val(6), summary={"best_epoch": 9})
    f = G.picked_on_few(ev)
    assert (f.fix_key, f.fix_value) == ("train.checkpoint", "last")
    assert f.numbers["val_cases"] == 6 and f.numbers["picked_share_left_out"] == pytest.approx(1 - 10 / 41)
    assert "epoch 9 of 41" in f.evidence and "the epoch and the post-processing rule" in f.title
    # the last epoch kept, but a rule still tuned on them: the fix turns the tuning off
    f = G.picked_on_few(make_evidence(epochs=rows, split=_val(6), config={"train": {"checkpoint": "last"}}, summary={"epoch": 40}))
    assert (f.fix_key, f.fix_value) == ("postprocess.tune", False) and "the post-processing rule" == f.title.split(" picked")[0]
    # what the plan does on so few: nothing to flag
    plan_like = {"train": {"checkpoint": "last"}, "postprocess": {"tune": False}}
    assert G.picked_on_few(make_evidence(epochs=rows, split=_val(6), config=plan_like)) is None


def test_early_stopping_on_a_handful_of_validation_cases_is_flagged_under_last():
    rows = _rows(val_dice=[0.1 * (i % 7) for i in range(12)])
    cfg = {"train": {"checkpoint": "last", "epochs": 40, "early_stopping": {"patience": 5}}, "postprocess": {"tune": False}}
    f = G.picked_on_few(make_evidence(epochs=rows, split=_val(6), config=cfg, summary={"epoch": 11}))
    assert (f.fix_key, f.fix_value) == ("train.early_stopping.patience", 0) and f.title.startswith("the end of training picked on 6")
    assert "stopped after epoch 11 of 40 planned" in f.evidence and f.numbers["picked_share_left_out"] == pytest.approx(1 - 12 / 40)
    # with the best epoch also picked, the fix that changes the deployed weights comes first
    f = G.picked_on_few(make_evidence(epochs=rows, split=_val(6), config={"train": {"early_stopping": {"patience": 5}}},
                                      summary={"best_epoch": 6}))
    assert (f.fix_key, f.fix_value) == ("train.checkpoint", "last") and "the epoch and the end of training" in f.title
    # enough validation cases: early stopping is the user's call
    assert G.picked_on_few(make_evidence(epochs=rows, split=_val(G.SELECT_MIN_VAL_CASES), config=cfg, summary={"epoch": 11})) is None


def test_enough_validation_cases_or_none_known_is_not_flagged():
    rows = _rows(val_dice=[0.5, 0.6, 0.7])
    assert G.picked_on_few(make_evidence(epochs=rows, split=_val(G.SELECT_MIN_VAL_CASES), summary={"best_epoch": 1})) is None
    assert G.picked_on_few(make_evidence(epochs=rows, split=_val(G.SELECT_MIN_VAL_CASES - 1), summary={"best_epoch": 1})) is not None
    # no split.json: the fingerprint's count stands in; neither: unknown, not flagged
    fp = {"by_split": {"val": {"n_cases": 3, "n_images": 300}}}
    assert G.picked_on_few(make_evidence(epochs=rows, fingerprint=fp)).numbers["val_cases"] == 3
    assert G.picked_on_few(make_evidence(epochs=rows)) is None


def test_budget_too_short_under_train_checkpoint_last_reads_the_curve_not_the_deployed_epoch():
    # the deployed epoch is always the last one there: whether the model was still improving is the curve's call
    last = {"train": {"checkpoint": "last", "epochs": 4}}
    peak = [0.5, 0.9, 0.8, 0.7]
    assert G.budget_too_short(make_evidence(epochs=_rows(val_dice=peak), config=last, summary={"epoch": 3})) is None
    rising = [0.1, 0.3, 0.5, 0.7]
    assert G.budget_too_short(make_evidence(epochs=_rows(val_dice=rising), config=last, summary={"epoch": 3})) is not None
