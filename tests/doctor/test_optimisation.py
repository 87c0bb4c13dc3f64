"""Optimisation checks on epoch logs written by hand."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.doctor import optimisation as O
from tests.doctor.conftest import make_evidence


def _rows(**cols):
    n = len(next(iter(cols.values())))
    return [{"epoch": i, "step": 10 * (i + 1), **{k: v[i] for k, v in cols.items()}} for i in range(n)]


def test_loss_drop_is_first_to_best_of_last_third():
    tl = [2.0, 1.5, 1.2, 1.1, 0.9, 1.0]
    drop, n = O.loss_drop(make_evidence(epochs=_rows(train_loss=tl)))
    assert n == 6 and drop == pytest.approx((2.0 - min(tl[-2:])) / 2.0)


def test_first_nonfinite_step_and_term_in_fp16_point_to_bf16():
    nan = float("nan")
    rows = _rows(train_loss=[1.0, float("inf"), float("inf")], train_loss_focal=[0.5, float("inf"), float("inf")],
                 nonfinite_steps=[0.0, 4.0, 10.0], first_nonfinite_step=[nan, 16.0, 20.0], nonfinite_terms=[nan, "focal", "focal"])
    f = O.nonfinite(make_evidence(epochs=rows, state={"precision": "16-mixed"}))
    assert f.numbers["first_epoch"] == 1 and f.numbers["first_step"] == 16 and f.numbers["terms"] == ["focal"]
    assert f.numbers["n_nonfinite_steps"] == 14 and f.numbers["share"] == pytest.approx(14 / 30)
    assert (f.fix_key, f.fix_value) == ("train.precision", "bf16") and "fp16" in f.title


def test_nonfinite_term_read_from_term_columns_of_older_logs():
    rows = _rows(train_loss=[1.0, float("inf")], train_loss_dice=[0.4, 0.4], train_loss_tversky=[0.6, float("inf")], nonfinite_steps=[0.0, 2.0])
    f = O.nonfinite(make_evidence(epochs=rows, state={"precision": "32-true"}, config={"optim": {"lr": 0.01}}))
    assert f.numbers["terms"] == ["tversky"] and (f.fix_key, f.fix_value) == ("optim.lr", 0.001)


def test_lr_too_low_with_flat_loss():
    ev = make_evidence(epochs=_rows(train_loss=[1.70, 1.699, 1.699, 1.698], lr=[1e-7] * 4), config={"optim": {"lr": 1e-7}})
    f = O.lr_too_low(ev)
    assert f.severity == "serious" and f.confidence >= 0.9 and f.fix_value == 1e-3
    assert f.numbers["loss_drop"] == pytest.approx((1.70 - 1.698) / 1.70)
    assert O.lr_too_low(make_evidence(epochs=_rows(train_loss=[1.7, 1.0]), config={"optim": {"lr": 1e-3}})) is None


def test_warmup_share():
    f = O.warmup_too_long(make_evidence(config={"schedule": {"warmup_epochs": 3.6}, "train": {"epochs": 4}}))
    assert f.severity == "serious" and f.numbers["warmup_share"] == pytest.approx(0.9) and f.fix_value == 0.4
    assert O.warmup_too_long(make_evidence(config={"schedule": {"warmup_epochs": 1.0}, "train": {"epochs": 30}})) is None


def test_diverging_and_oscillating_losses():
    f = O.diverging(make_evidence(epochs=_rows(train_loss=[1.0, 0.6, 0.5, 0.9, 1.2, 1.4]), config={"optim": {"lr": 0.1}}))
    assert f.numbers["rise"] == pytest.approx((1.4 - 0.5) / 0.5) and f.fix_value == 0.01
    tl = [1.0, 0.8, 1.0, 0.7, 0.95, 0.72, 0.9, 0.7]
    f = O.oscillating(make_evidence(epochs=_rows(train_loss=tl), config={"optim": {"lr": 0.03}}))
    d = np.diff(tl)
    assert f.numbers["rise_share"] == pytest.approx(np.mean(d > 0.02 * np.median(tl)))
    assert O.oscillating(make_evidence(epochs=_rows(train_loss=list(np.linspace(1, 0.2, 8))))) is None


def test_schedule_cut_by_the_budget():
    # 12 planned epochs of cosine, the budget stopped after 7: the last LR is the cosine at 7/12
    lr = [1e-3 * (0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * (e + 1) / 12))) for e in range(7)]
    cfg = {"train": {"epochs": 12, "budget_minutes": 5.0}, "schedule": {"follow_budget": False}, "optim": {"lr": 1e-3}}
    f = O.schedule_cut(make_evidence(epochs=_rows(train_loss=list(np.linspace(1, 0.5, 7)), lr=lr), config=cfg))
    assert f.severity == "warning" and f.fix_key == "schedule.follow_budget"
    assert f.numbers["last_lr_over_peak"] == pytest.approx(lr[-1] / 1e-3) and f.numbers["epochs_trained"] == 7
    # the same run that followed its budget ended at the floor: nothing to say
    ended = lr[:-1] + [1e-5]
    assert O.schedule_cut(make_evidence(epochs=_rows(train_loss=list(np.linspace(1, 0.5, 7)), lr=ended), config=cfg)) is None
    # early stopping explains the end; no budget; a constant schedule
    es = {**cfg, "train": {**cfg["train"], "early_stopping": {"patience": 3}}}
    rows = _rows(train_loss=list(np.linspace(1, 0.5, 7)), lr=lr)
    assert O.schedule_cut(make_evidence(epochs=rows, config=es, summary={"best_epoch": 2})) is None
    assert O.schedule_cut(make_evidence(epochs=rows, config=es, summary={"best_epoch": 5})) is not None
    assert O.schedule_cut(make_evidence(epochs=rows, config={**cfg, "train": {"epochs": 12}})) is None
    assert O.schedule_cut(make_evidence(epochs=rows, config={**cfg, "schedule": {"name": "constant"}})) is None


def test_schedule_cut_of_a_run_stretched_past_its_planned_epochs():
    # planned 5, schedule.fill_budget stretched the cosine to 12, then max_time (follow_budget off) stopped it after 7
    lr = [1e-3 * (0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * (e + 1) / 12))) for e in range(7)]
    rows = _rows(train_loss=list(np.linspace(1, 0.5, 7)), lr=lr)
    cfg = {"train": {"epochs": 5, "budget_minutes": 5.0}, "schedule": {"follow_budget": False, "fill_budget": True},
           "optim": {"lr": 1e-3}}
    f = O.schedule_cut(make_evidence(epochs=rows, config=cfg))
    assert f is not None and f.fix_key == "schedule.follow_budget" and f.numbers["stretched"] == 1.0
    assert "stretched past the planned 5" in f.title and f.numbers["epochs_trained"] == 7
    # the stretched run that ran its decay to the floor; the same epochs without fill_budget (nothing cut)
    ended = lr[:-1] + [1e-5]
    assert O.schedule_cut(make_evidence(epochs=_rows(train_loss=list(np.linspace(1, 0.5, 7)), lr=ended), config=cfg)) is None
    plain = {**cfg, "schedule": {"follow_budget": False}}
    assert O.schedule_cut(make_evidence(epochs=rows, config=plain)) is None


def test_a_term_joining_under_a_loss_schedule_is_not_divergence():
    # Lovász joins at epoch 4 of 8: the total jumps without the network getting worse
    nan = float("nan")
    tl = [1.0, 0.7, 0.5, 0.45, 1.2, 1.0, 0.9, 0.85]
    rows = _rows(train_loss=tl, train_loss_bce=[0.5, 0.35, 0.25, 0.22, 0.2, 0.18, 0.16, 0.15],
                 train_loss_lovasz=[nan] * 4 + [0.8, 0.65, 0.6, 0.55])
    unscheduled = make_evidence(epochs=rows, config={"optim": {"lr": 0.1}})
    assert O.diverging(unscheduled) is not None  # read as one series, the jump looks like divergence
    scheduled = make_evidence(epochs=rows, config={"optim": {"lr": 0.1}, "loss": {"lovasz": {"weight": 1, "start": 0.5}}})
    trend = scheduled.loss_trend("train_loss")
    assert np.isnan(trend[:4]).all() and list(trend[4:]) == tl[4:]
    assert O.diverging(scheduled) is None and O.oscillating(scheduled) is None
    assert O.loss_drop(scheduled) == (pytest.approx((1.2 - 0.85) / 1.2), 4)
