"""training.progressive: the epochs' sizes, the batch resize, the training step, and the budget's epoch count."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import medseg.training.module as module_mod
from medseg import runfolder as runfs
from medseg.config import config_from_dict
from medseg.errors import MedsegError
from medseg.planning import plan as P
from medseg.planning.stepcost import StepCost
from medseg.training.module import SegModule
from medseg.training.progressive import epochs_within, pixel_shares, progressive_size, resize_batch, train_cost_bounds
from tests.conftest import make_blob_folder, tiny_config


def test_sizes_rise_linearly_over_the_share_then_stay_full():
    # 10 epochs, ramp over round(0.4 * 10) = 4 of them: scales 0.5, 0.625, 0.75, 0.875, then 1; sides in
    # multiples of 16, rounded half to even: 64 -> 2, 2.5 -> 2, 3, 3.5 -> 4; 96 -> 3, 3.75 -> 4, 4.5 -> 4, 5.25 -> 5
    want_64 = [32, 32, 48, 64, 64, 64, 64, 64, 64, 64]
    want_96 = [48, 64, 64, 80, 96, 96, 96, 96, 96, 96]
    sizes = [progressive_size((64, 96), e, 10, 0.5, 0.4, 16) for e in range(10)]
    assert sizes == list(zip(want_64, want_96))
    shares = pixel_shares((64, 96), 10, 0.5, 0.4, 16)
    assert shares == pytest.approx([h * w / (64 * 96) for h, w in sizes])
    # never below one multiple, never above the side
    assert progressive_size((64, 64), 0, 10, 0.01, 0.5, 32) == (32, 32)
    assert progressive_size((48, 48), 9, 10, 0.5, 0.5, 16) == (48, 48)


def test_resize_batch_averages_masks_so_thin_structures_keep_their_share():
    x = torch.rand(2, 3, 32, 32)
    y = torch.zeros(2, 1, 32, 32)
    y[:, :, :, 7] = 1.0  # a one-pixel line: nearest sampling at half size can drop it entirely
    xs, ys = resize_batch(x, y, (16, 16))
    assert xs.shape == (2, 3, 16, 16) and ys.shape == (2, 1, 16, 16)
    # independently: a 2x2 mean is the area average at an integer factor
    assert torch.allclose(ys, F.avg_pool2d(y, 2))
    assert float(ys.sum()) * 4 == pytest.approx(float(y.sum()))
    assert set(np.unique(ys.numpy())) == {0.0, 0.5}
    # at full size the batch is untouched
    same = resize_batch(x, y, (32, 32))
    assert same[0] is x and same[1] is y


def test_epochs_within_sums_each_candidate_run_in_full():
    flat = lambda n: np.ones(n)  # noqa: E731
    # no resizing: the plain floor of the rest over an epoch's cost
    assert epochs_within(100.0, 3, 4.0, 6.0, flat, 1000) == 3 + 10
    assert epochs_within(100.0, 0, 1.0, 1.0, flat, 20) == 20  # the cap
    # resizing: brute force over candidate lengths by hand
    shares = lambda n: pixel_shares((64, 64), n, 0.5, 0.5, 16)  # noqa: E731
    got = epochs_within(200.0, 0, 2.0, 10.0, shares, 1000)
    costs = {n: sum(2.0 + 10.0 * s for s in shares(n)) for n in range(1, 40)}
    assert costs[got] <= 200.0 < costs[got + 1]
    assert got > 200 // 12  # more than the full-size run holds


def test_train_cost_bounds_bracket_an_affine_cost_until_two_sizes_pin_it():
    cost = lambda s: 6.0 + 20.0 * s  # noqa: E731 (loading and the optimiser step do not shrink with the side)
    low, high = train_cost_bounds([cost(0.25)], [0.25])
    assert low == pytest.approx((11.0, 0.0)) and high == pytest.approx((0.0, 44.0))
    for s in (0.5, 0.75, 1.0):  # every larger epoch lies between the two models
        assert low[0] + low[1] * s <= cost(s) <= high[0] + high[1] * s
    low, high = train_cost_bounds([cost(0.25), cost(0.39), cost(1.0), cost(1.0)], [0.25, 0.39, 1.0, 1.0])
    assert low == pytest.approx((6.0, 20.0)) and high == low
    # noise that would give a negative slope cannot make big epochs cheaper than small ones
    low, _ = train_cost_bounds([10.0, 9.0], [0.25, 0.5])
    assert low[1] == 0.0 and low[0] == pytest.approx(9.5)


def _cost() -> StepCost:
    return StepCost(method="formula", device="cpu", device_name="test", train_size=(64, 64), val_size=(64, 64),
                    step_s_fixed=0.2, train_s_per_image=0.1, val_s_per_image=0.02, mem_fixed_bytes=0.0,
                    mem_per_image_bytes=2**20, mem_available_bytes=2**30, macs_per_image=1.0)


def test_the_plan_counts_small_epochs_as_cheaper_and_only_their_training_steps():
    cost, n_train, n_val, batch = _cost(), 80, 20, 8
    flat = P.budget_epochs(cost, batch, n_train, n_val, None, 2.0)
    shares = lambda n: pixel_shares((64, 64), n, 0.5, 0.5, 16)  # noqa: E731
    prog = P.budget_epochs(cost, batch, n_train, n_val, None, 2.0, shares)
    # independently: 10 steps of 0.2 s fixed + 0.8 s scaled, 20 x 0.02 s validation, the 0.5 s epoch overhead
    epoch = lambda s: 10 * (0.2 + 0.1 * 8 * s) + 20 * 0.02 + 0.5  # noqa: E731
    assert flat == int(120 // epoch(1.0))
    assert sum(epoch(s) for s in shares(prog)) <= 120 < sum(epoch(s) for s in shares(prog + 1))
    assert prog > flat


def test_config_refuses_scales_outside_their_ranges():
    for bad, key in (({"start_scale": 0}, "start_scale"), ({"start_scale": 1.5}, "start_scale"), ({"share": 1.0}, "share"),
                     ({"sahre": 0.5}, "sahre")):
        with pytest.raises(MedsegError, match=f"train.progressive.{key}"):
            config_from_dict(tiny_config("d", "r", train={"epochs": 3, "progressive": bad}))


def test_a_fit_trains_small_first_and_validates_at_full_size(tmp_path, monkeypatch):
    root = make_blob_folder(tmp_path / "data", n=16, size=64)
    raw = tiny_config(root, tmp_path / "runs", model={"name": "unet", "channels": [4, 8, 16], "res_units": 0},
                      train={"epochs": 6, "batch_size": 4, "progressive": {"start_scale": 0.5, "share": 0.5}})
    seen: list[tuple] = []
    real_step = SegModule.training_step

    def step(self, batch, batch_idx):
        seen.append(tuple(batch[0].shape[2:]))  # what the loader gave
        return real_step(self, batch, batch_idx)

    monkeypatch.setattr(SegModule, "training_step", step)
    shapes: list[tuple] = []
    orig_create = module_mod.create_model_from_config

    def create(*a, **k):
        net = orig_create(*a, **k)
        net.register_forward_pre_hook(lambda m, inp: shapes.append((m.training, tuple(inp[0].shape[2:]))))
        return net

    monkeypatch.setattr(module_mod, "create_model_from_config", create)
    from medseg.commands.fit import fit

    run = fit(config_from_dict(raw), progress=False)
    rows = runfs.read_csv(run / runfs.EPOCHS_CSV)
    # the unet's stride with 3 levels is 4: 32, then 0.5 + 0.5/3 = 0.667 -> 44, 0.833 -> 52 (round 10.67 -> 11, 13.33 -> 13)
    want = [(32, 32), (44, 44), (52, 52), (64, 64), (64, 64), (64, 64)]
    assert [r["train_pixel_share"] for r in rows] == pytest.approx([h * w / 64**2 for h, w in want])
    train_shapes = [s for training, s in shapes if training]
    eval_shapes = {s for training, s in shapes if not training}
    assert set(train_shapes) == set(want)
    assert eval_shapes == {(64, 64)}  # validation at full size
    assert set(seen) == {(64, 64)}  # the loader is unchanged: the step resizes
