"""The loss schedule of medseg.losses.combined: terms that count over part of training only (start/stop)."""

from __future__ import annotations

import math

import pytest
import torch

from medseg import runfolder as runfs
from medseg.config import config_from_dict
from medseg.errors import MedsegError
from medseg.losses import build_loss, has_schedule, validate_loss_spec
from medseg.losses.bce import BCELoss
from medseg.losses.dice import DiceLoss
from medseg.losses.lovasz import LovaszHingeLoss
from tests.conftest import make_blob_folder, tiny_config

SCHEDULED = {"bce": 1.0, "dice": {"weight": 0.5, "stop": 0.75}, "lovasz": {"weight": 2.0, "start": 0.5}}


def _batch(seed=0, shape=(3, 1, 16, 16)):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * 2
    t = (torch.rand(shape, generator=g) > 0.8).float()
    t[0] = 0  # one empty image
    return x, t


@pytest.mark.parametrize("progress, want", [
    (0.0, {"bce": 1.0, "dice": 0.5}),
    (0.49, {"bce": 1.0, "dice": 0.5}),
    (0.5, {"bce": 1.0, "dice": 0.5, "lovasz": 2.0}),  # start is inclusive
    (0.75, {"bce": 1.0, "lovasz": 2.0}),  # stop is exclusive
    (0.99, {"bce": 1.0, "lovasz": 2.0}),
    (None, {"bce": 1.0, "dice": 0.5, "lovasz": 2.0}),  # outside training (planning's step timing): every term
])
def test_terms_count_only_inside_their_window(progress, want):
    x, t = _batch()
    loss = build_loss(SCHEDULED)
    loss.set_progress(progress)
    value = loss(x, t)
    modules = {"bce": BCELoss(), "dice": DiceLoss(), "lovasz": LovaszHingeLoss()}
    expected = sum(w * modules[k](x, t) for k, w in want.items())
    assert float(value) == pytest.approx(float(expected), rel=1e-6)
    assert set(loss.last_terms) == set(want)  # a term that does not count is not logged either


def test_a_switch_hands_over_at_the_boundary():
    x, t = _batch(1)
    loss = build_loss({"bce": {"weight": 1, "stop": 0.6}, "lovasz": {"weight": 1, "start": 0.6}})
    loss.set_progress(0.6)
    assert float(loss(x, t)) == pytest.approx(float(LovaszHingeLoss()(x, t)), rel=1e-6)
    loss.set_progress(0.59)
    assert float(loss(x, t)) == pytest.approx(float(BCELoss()(x, t)), rel=1e-6)


@pytest.mark.parametrize("spec, message", [
    ({"bce": 1, "lovasz": {"start": 1.5}}, "loss.lovasz.start: must be a share of the training epochs from 0 to 1"),
    ({"bce": 1, "lovasz": {"stop": -0.1}}, "loss.lovasz.stop: must be a share"),
    ({"bce": 1, "lovasz": {"start": True}}, "loss.lovasz.start: must be a share"),
    ({"bce": 1, "lovasz": {"start": "half"}}, "loss.lovasz.start: must be a share"),
    ({"bce": 1, "lovasz": {"start": 0.7, "stop": 0.3}}, r"loss.lovasz: start \(0.7\) must come before stop \(0.3\)"),
    ({"bce": {"weight": 1, "stop": 0.3}, "lovasz": {"start": 0.5}}, "loss: no term counts from 0.3 to 0.5 of the training epochs"),
    # a zero weight does not count as covering its window
    ({"bce": {"weight": 1, "stop": 0.5}, "dice": 0, "lovasz": {"start": 0.5, "stop": 0.9}}, "loss: no term counts from 0.9 to 1"),
])
def test_bad_windows_are_refused_naming_the_key(spec, message):
    with pytest.raises(ValueError, match=message):
        validate_loss_spec(spec)
    if "no term counts" not in message:  # coverage is the config's check; build_loss still names a bad key
        with pytest.raises(MedsegError, match=message.split(":")[0]):
            build_loss(spec)


def test_has_schedule_only_for_windows_narrower_than_training():
    assert has_schedule(SCHEDULED)
    assert not has_schedule({"bce": 1, "dice": {"weight": 1, "start": 0.0, "stop": 1.0}})
    assert not has_schedule({"bce": 1, "deep_supervision": [1.0, 0.5]})


def test_config_refuses_monitoring_the_loss_when_it_changes_during_training(tmp_path):
    raw = tiny_config(tmp_path, tmp_path / "runs", loss=SCHEDULED, train={"monitor": "loss"})
    with pytest.raises(MedsegError, match="config error: train.monitor: 'loss' compares epochs under different losses"):
        config_from_dict(raw)
    raw["train"]["monitor"] = "dice"
    assert config_from_dict(raw).loss == SCHEDULED


def test_a_fit_adds_the_term_at_its_share_of_the_epochs(tmp_path):
    root = make_blob_folder(tmp_path / "data", n=12, size=32)
    raw = tiny_config(root, tmp_path / "runs", model={"name": "unet", "channels": [4, 8], "res_units": 0},
                      loss={"bce": 1, "dice": {"weight": 1, "stop": 0.75}, "lovasz": {"weight": 1, "start": 0.5}},
                      train={"epochs": 4, "batch_size": 4})
    from medseg.commands.fit import fit

    rows = runfs.read_csv(fit(config_from_dict(raw), progress=False) / runfs.EPOCHS_CSV)
    assert len(rows) == 4
    logged = [{k for k in ("bce", "dice", "lovasz") if isinstance(r.get(f"train_loss_{k}"), float) and math.isfinite(r[f"train_loss_{k}"])}
              for r in rows]
    # epochs 0 and 1 (progress 0, 0.25): bce + dice; epoch 2 (0.5): all three; epoch 3 (0.75): bce + lovasz
    assert logged == [{"bce", "dice"}, {"bce", "dice"}, {"bce", "dice", "lovasz"}, {"bce", "lovasz"}]
