"""A plan medseg makes itself never trips the doctor's optimisation and budget checks.

Plans are made for a range of dataset shapes and budgets (tiny and large, grey and RGB, with
and without empty images, short, long and no budget; the step cost by formula so the plans are
repeatable), then the doctor's checks read each planned config with the epoch log its schedule
produces (the LR of every epoch from `lr_lambda`, a loss that falls and a validation Dice that
rises and levels off, as in a healthy run).
"""

from __future__ import annotations

import itertools
import math

import pytest

from medseg.config import config_from_dict
from medseg.doctor import generalisation, optimisation
from medseg.losses.combined import _active, _split_term
from medseg.planning import make_plan
from medseg.training import SELECT_MIN_VAL_CASES, lr_lambda
from tests.doctor.conftest import make_evidence

SHAPES = {
    "tiny grey": dict(n=24, side=512, channels=1),
    "small RGB": dict(n=120, side=700, channels=3),
    "BUSI-like": dict(n=624, side=512, channels=1),
    "SIIM-like": dict(n=9600, side=1024, channels=1),
}


def _fingerprint(n: int, side: int, channels: int, empty: float) -> dict:
    pos = {"q50": 0.04, "mean": 0.06}
    train = {"n_images": int(n * 0.8), "empty_image_fraction": empty, "foreground_fraction_positive": pos}
    return {
        "n_images": n, "in_channels": channels, "orig_height": {"q50": side * 0.8}, "orig_width": {"q50": side},
        "lesion_area_px_original": {"q05": 0.002 * side * side}, "empty_image_fraction": empty,
        "foreground_fraction_positive": pos,
        "by_split": {"train": train, "val": {"n_images": n - int(n * 0.8), "empty_image_fraction": empty}},
    }


def _healthy_epochs(cfg, steps_per_epoch: int) -> list[dict]:
    epochs = cfg.train.epochs
    f = lr_lambda(cfg, steps_per_epoch * epochs, steps_per_epoch)
    # a term the plan scheduled (loss.<term>.start/stop) lifts the loss while it counts, as Lovász joining half-way
    # did in a 15-minute BUSI run (train loss 0.57 -> 1.92, then falling to 1.32; BENCHMARKS.md §5n)
    windows = {k: _split_term(k, v)[2] for k, v in cfg.loss.items()}
    rows = []
    for e in range(epochs):
        step = (e + 1) * steps_per_epoch - 1
        level = 1 - math.exp(-3 * (e + 1) / epochs)  # rises, then levels off well before the end
        active = [k for k, w in windows.items() if _active(w, e / epochs)]
        late = sum(1.3 - 0.5 * (e / epochs - windows[k][0]) / (1 - windows[k][0]) for k in active if windows[k] != (0.0, 1.0))
        rows.append({"epoch": e, "step": step, "lr": cfg.optim.lr * f(step), "train_loss": 1.2 - 0.8 * level + late,
                     "val_loss": 1.1 - 0.6 * level + late, "val_dice": 0.3 + 0.5 * min(level, 0.9),
                     **{f"train_loss_{k}": (1.2 - 0.8 * level + late) / len(active) for k in active}})
    if epochs >= 2:
        rows[-1]["val_dice"] = rows[-2]["val_dice"] - 0.002  # the best epoch is not the last
    return rows


CASES = list(itertools.product(SHAPES, (0.0, 0.8), (None, 2, 15, 120)))


@pytest.mark.parametrize("shape, empty, budget", CASES, ids=[f"{s}-empty{e}-budget{b}" for s, e, b in CASES])
def test_no_doctor_check_fires_on_a_plan_medseg_made(shape, empty, budget):
    raw = {"train": {"budget_minutes": budget}} if budget else {}
    cfg = config_from_dict(raw)
    plan, planned = make_plan(cfg, _fingerprint(empty=empty, **SHAPES[shape]), measure=False)
    n_train = plan.estimates["n_train_images"]
    steps = max(1, n_train // planned.train.batch_size)
    n_val = plan.estimates["n_val_images"]
    # the epoch the run deploys: the best (one before the last, as the healthy log has it) or, planned so, the last
    deployed = ({"best_epoch": max(0, planned.train.epochs - 2)} if planned.train.checkpoint == "best"
                else {"epoch": planned.train.epochs - 1})
    ev = make_evidence(epochs=_healthy_epochs(planned, steps), config=planned.model_dump(mode="json"), summary=deployed,
                       split={"train": [f"t{i}" for i in range(n_train)], "val": [f"v{i}" for i in range(n_val)]})
    fired = [f for f in optimisation.check(ev) + generalisation.check(ev)]
    assert not fired, [(f.id, f.title) for f in fired] + [(e.key, e.value, e.reason) for e in plan.entries if "warmup" in e.key or "epochs" in e.key]
    # a small validation part picks nothing (the tiny set's 5, the small set's 24); the large sets' do
    assert (planned.train.checkpoint, planned.postprocess.tune) == (("last", False) if n_val < SELECT_MIN_VAL_CASES else ("best", True))
    assert (n_val < SELECT_MIN_VAL_CASES) == (shape in ("tiny grey", "small RGB"))
    # and the warm-up the plan leaves is below the doctor's warning
    assert planned.schedule.warmup_epochs < optimisation.WARMUP_WARN * planned.train.epochs
    # Lovász joins late only with empty images and >= 640 planned optimiser steps over >= 2 epochs (accumulate is 1
    # here; the log above has its jump)
    assert ("lovasz" in planned.loss) == (empty > 0 and planned.train.epochs >= 2 and planned.train.epochs * steps >= 640)
