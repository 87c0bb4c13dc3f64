"""The plan: its rules on synthetic fingerprints, user-set keys, the budget, `medseg plan` and fit's plan.json."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from medseg.config import config_from_dict
from medseg.data import load_data
from medseg.data.fingerprint import compute_fingerprint
from medseg.data.split import make_split
from medseg.planning import plan as P
from medseg.planning.stepcost import StepCost, measure_cost
from tests.conftest import make_blob_folder, tiny_config, write_config


def write_mostly_empty(root, n=20, positives=(1, 5, 9, 13, 17), size=64):
    """images/ + masks/ PNGs: a bright 10x10 square lesion in the listed images only."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    for i in range(n):
        mask = np.zeros((size, size), np.uint8)
        if i in positives:
            mask[20:30, 24:34] = 1
        img = rng.normal(80, 10, (size, size)) + 100 * mask
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / "images" / f"c{i:02d}.png")
        Image.fromarray(mask * 255).save(root / "masks" / f"c{i:02d}.png")
    return root


def fp_with(empty: float, fg_mean: float = 0.02, fg_median: float | None = None, n: int = 100) -> dict:
    train = {
        "n_images": n, "empty_image_fraction": empty,
        "foreground_fraction_positive": {"q50": fg_median if fg_median is not None else fg_mean, "mean": fg_mean},
    }
    return {"n_images": n, "by_split": {"train": train}}


def fingerprint_of(cfg):
    loaded = load_data(cfg.data)
    split = make_split([s.case_id for s in loaded.samples], cfg.split, cfg.seed)
    return compute_fingerprint(loaded, split)


# ---------------------------------------------------------------------------------------
# Rules


def test_sampler_share_follows_the_empty_fraction():
    share, why = P.plan_positive_share(fp_with(empty=0.9))
    assert share == 0.5 and "90%" in why and "empty" in why
    share, why = P.plan_positive_share(fp_with(empty=0.3))
    assert share is None and "70%" in why
    assert P.plan_positive_share(fp_with(empty=1.0))[0] is None  # nothing to rebalance with


@pytest.mark.parametrize("empty, fg_mean, fg_median, share", [
    (0.9, 0.004, 0.004, 0.5), (0.0, 0.2, 0.2, None), (0.0, 0.45, 0.45, None), (0.5, 0.03, 0.008, None),
    (0.0, 0.009, 0.02, None), (0.17, 0.093, 0.055, None),  # just below 1% foreground; BUSI's figures
])
def test_pos_weight_and_focal_follow_the_foreground(empty, fg_mean, fg_median, share):
    loss, why, pos_weight = P.plan_loss(fp_with(empty, fg_mean, fg_median), share)
    p = (share if share is not None else 1 - empty) * fg_mean
    ratio = math.sqrt((1 - p) / p)
    if p >= 0.01 or ratio < P.POS_WEIGHT_MIN:
        assert pos_weight is None and loss["bce"] == 1.0
    else:
        assert pos_weight == pytest.approx(min(ratio, P.POS_WEIGHT_CAP), abs=0.01)
        assert loss["bce"] == {"weight": 1.0, "pos_weight": pos_weight}
        assert ("capped" in why) == (ratio > P.POS_WEIGHT_CAP)
    assert loss["dice"] == 1.0
    assert ("focal" in loss) == (fg_median < P.FOCAL_BELOW_FG)


@pytest.mark.parametrize("empty, epochs, steps, joins", [
    (0.18, 20, 32, True), (0.18, 20, 31, False), (0.18, 13, 66, True),  # 640 steps, 620, the slow box's 858 (§5p)
    (0.18, 12, 46, False),  # the 3-minute demo's 552 (§5n)
    (0.18, 1, 1000, False),  # one epoch has no second half for the schedule
    (0.05, 100, 100, True), (0.049, 100, 100, False), (0.0, 100, 100, False),
    (1.0, 100, 100, False),  # nothing to segment
])
def test_lovasz_joins_late_only_with_empty_images_and_enough_optimiser_steps(empty, epochs, steps, joins):
    term, why = P.plan_lovasz(fp_with(empty, 0.05), epochs, steps)
    assert term == ({"weight": 1.0, "start": 0.5} if joins else None)
    assert why.startswith("Lovász hinge from 50%" if joins else "no Lovász")
    if 0.05 <= empty < 1:
        assert f"{epochs * steps} " in why


def _sizes(h, w, a05):
    fp = {"orig_height": {"q50": h}, "orig_width": {"q50": w}}
    if a05 is not None:
        fp["lesion_area_px_original"] = {"q05": a05}
    return fp


def test_input_size_keeps_the_smallest_lesions_visible_within_the_device_cap():
    # 16 px target, 20 px lesions at 1024: scale sqrt(16/20) -> 915.9 px -> 928 (multiple of 32)
    size, why = P.plan_input_size(_sizes(1024, 1024, 20.0), "gpu", 16.0, None, None)
    assert size == [928, 928] and "enlarged" in why
    size, why = P.plan_input_size(_sizes(1024, 1024, 20.0), "cpu", 16.0, None, None)
    assert size == [256, 256] and "capped at 256" in why and "below the target" in why
    # big lesions: the 256 px base; small images keep their size; aspect ratio kept
    assert P.plan_input_size(_sizes(1024, 1024, 5000.0), "gpu", 16.0, None, None)[0] == [256, 256]
    assert P.plan_input_size(_sizes(64, 64, 30.0), "gpu", 16.0, None, None)[0] == [64, 64]
    assert P.plan_input_size(_sizes(512, 768, None), "gpu", 16.0, None, None)[0] == [192, 256]
    assert P.plan_input_size(_sizes(64, 64, 30.0), "cpu", 16.0, None, (96, 96))[0] == [96, 96]
    assert P.plan_input_size(_sizes(1024, 1024, 20.0), "gpu", 16.0, 512, None)[0] == [512, 512]


def test_patches_when_the_smallest_lesions_need_more_than_the_whole_image_cap():
    # 20 px lesions at 1024: 928 px needed, above the CPU's 256 px cap -> 928 px images, 256 px crops and windows
    (size, crop), why = P.plan_patches(_sizes(1024, 1024, 20.0), "cpu", 16.0, None)
    assert size == [928, 928] and crop == [256, 256] and "sliding windows" in why
    # tiny lesions on a huge image: kept at most 1024 px on a CPU
    assert P.plan_patches(_sizes(4000, 3000, 2.0), "cpu", 16.0, None)[0] == ([1024, 1024], [256, 256])
    # the whole-image cap already keeps them, or there is nothing to keep: resize
    assert P.plan_patches(_sizes(1024, 1024, 20.0), "gpu", 16.0, None)[0] is None
    assert P.plan_patches(_sizes(1024, 1024, 5000.0), "cpu", 16.0, None)[0] is None
    assert P.plan_patches(_sizes(1024, 1024, None), "cpu", 16.0, None)[0] is None
    # never above the original image
    assert P.plan_patches(_sizes(300, 400, 1.0), "cpu", 16.0, None)[0] == ([320, 416], [256, 256])


def test_augmentation_by_number_of_training_images():
    assert P.plan_augment(fp_with(0.5, n=50))[0] == "medium"  # heavy is never planned (BENCHMARKS §5k)
    assert P.plan_augment(fp_with(0.5, n=500))[0] == "medium"
    assert P.plan_augment(fp_with(0.5, n=1999))[0] == "medium"
    assert P.plan_augment(fp_with(0.5, n=5000))[0] == "light"


def test_the_last_epoch_untuned_below_the_validation_cases_that_can_pick(tmp_path):
    from medseg.training import SELECT_MIN_VAL_CASES as N

    def with_val(cases, images):
        return {"by_split": {"val": {"n_cases": cases, "n_images": images}}}

    assert P.plan_checkpoint(with_val(N - 1, N - 1))[0] == "last"
    assert P.plan_checkpoint(with_val(N, N))[0] == "best"
    assert P.plan_checkpoint({})[0] == "last"  # no validation part: nothing to pick from
    # volumes count once, however many slices they hold: 5 CT volumes cannot pick an epoch
    kind, why = P.plan_checkpoint(with_val(5, 2000))
    assert kind == "last" and why.startswith(f"5 validation cases (< {N})")
    # in a plan: both keys follow, and a user's value wins with the plan's reason beside it
    data = make_blob_folder(tmp_path / "d", n=12)  # 3 validation images
    raw = tiny_config(data, tmp_path / "runs", plan={"enabled": True, "measure": False})
    cfg = config_from_dict(raw)
    plan, planned = P.make_plan(cfg, fingerprint_of(cfg))
    assert (planned.train.checkpoint, planned.postprocess.tune) == ("last", False)
    assert plan.entry("train.checkpoint").set_by == plan.entry("postprocess.tune").set_by == "plan"
    user = config_from_dict({**raw, "train": {**raw["train"], "checkpoint": "best"}})
    plan2, planned2 = P.make_plan(user, fingerprint_of(user))
    e = plan2.entry("train.checkpoint")
    assert planned2.train.checkpoint == "best" and e.set_by == "user" and "would choose last" in e.reason
    assert planned2.postprocess.tune is False


def _cost(per_image_mib=100.0, available_gib=1.0, s_per_image=0.01, device="gpu"):
    return StepCost(
        method="formula", device=device, device_name="test", train_size=(64, 64), val_size=(64, 64),
        step_s_fixed=0.0, train_s_per_image=s_per_image, val_s_per_image=s_per_image / 3,
        mem_fixed_bytes=0.0, mem_per_image_bytes=per_image_mib * 2**20, mem_available_bytes=available_gib * 2**30, macs_per_image=1.0,
    )


def test_batch_size_is_the_tightest_limit_rounded_down_to_a_power_of_two():
    batch, why = P.plan_batch_size(_cost(per_image_mib=100), n_train=1000, n_val=10, steps_per_epoch=None, budget_minutes=None)
    assert batch == 8 and "memory" in why  # 1024 MiB / 100 MiB = 10 images
    batch, why = P.plan_batch_size(_cost(per_image_mib=1), n_train=40, n_val=10, steps_per_epoch=None, budget_minutes=None)
    assert batch == 4 and "steps per epoch" in why  # 40 / 8 = 5
    assert P.plan_batch_size(_cost(per_image_mib=1, device="cpu"), 10_000, 10, None, None)[0] == P.MAX_BATCH["cpu"]
    # a budget that holds one epoch (10000 x 0.05 s > 5 min): batch 32 gives 312 steps < 500, batch 16 gives 625
    batch, why = P.plan_batch_size(_cost(per_image_mib=1, s_per_image=0.05), 10_000, 10, None, budget_minutes=5)
    assert batch == 16 and "halved" in why
    # 3000 images in one epoch: 93, 187, 375 steps at 32, 16, 8; the halving stops at 4 (750 steps)
    assert P.plan_batch_size(_cost(per_image_mib=1, s_per_image=0.05), 3000, 10, None, budget_minutes=1)[0] == 4
    # a long budget keeps the largest batch
    assert P.plan_batch_size(_cost(per_image_mib=1, s_per_image=0.05), 3000, 10, None, budget_minutes=600)[0] == 32


# ---------------------------------------------------------------------------------------
# Whole plans


def test_user_set_keys_are_exactly_the_given_leaves(tmp_path):
    cfg = config_from_dict({"data": {"root": str(tmp_path), "input_size": [64, 64]}, "train": {"epochs": 3}, "loss": {"dice": 1.0}})
    keys = P.user_set_keys(cfg)
    assert {"data.input_size", "train.epochs", "loss"} <= keys
    assert not keys & {"train.batch_size", "sampler.positive_share", "augment.preset", "data.resize_mode"}


def test_unset_keys_are_planned_and_user_values_kept(tmp_path):
    data = write_mostly_empty(tmp_path / "d")
    raw = tiny_config(data, tmp_path / "runs", plan={"enabled": True, "measure": False})
    for k in ("loss", "augment"):
        raw.pop(k)
    raw["train"].pop("batch_size")
    cfg = config_from_dict(raw)
    fp = fingerprint_of(cfg)
    train = fp["by_split"]["train"]
    assert 0 < train["n_positive_images"] < train["n_images"] / 2
    plan, planned = P.make_plan(cfg, fp)
    share = plan.entry("sampler.positive_share")
    assert share.set_by == "plan" and share.value == 0.5 and planned.sampler.positive_share == 0.5
    assert "empty" in share.reason and f"{train['empty_image_fraction']:.0%}" in share.reason
    assert plan.entry("augment.preset").value == planned.augment.preset == "medium"
    assert plan.entry("loss").value == planned.loss == P.plan_loss(fp, 0.5)[0]
    assert plan.entry("train.batch_size").set_by == "plan"
    size = plan.entry("data.input_size")
    assert size.set_by == "user" and size.value == [64, 64] and size.reason.startswith("set by user")
    assert plan.entry("train.epochs").set_by == "user"  # tiny_config sets epochs
    # the same data with the share set by the user: kept, and the plan says what it would choose
    user = config_from_dict(raw | {"sampler": {"positive_share": 0.2}})
    plan2, planned2 = P.make_plan(user, fp)
    e = plan2.entry("sampler.positive_share")
    assert e.set_by == "user" and e.value == 0.2 and planned2.sampler.positive_share == 0.2
    assert e.reason.startswith("set by user") and "would choose 0.5" in e.reason and e.planned == 0.5
    # enough optimiser steps: Lovász joins the planned loss for the second half, in the loss's own entry and place
    keys = [e.key for e in plan.entries]
    spe = max(1, train["n_images"] // planned.train.batch_size)  # the planned batch, independent of the epochs
    enough = -(-P.LOVASZ_MIN_STEPS // spe)
    long = config_from_dict(raw | {"train": {"epochs": enough}})
    plan3, planned3 = P.make_plan(long, fp)
    assert planned3.train.batch_size == planned.train.batch_size
    assert planned3.loss == {**P.plan_loss(fp, 0.5)[0], "lovasz": {"weight": 1.0, "start": 0.5}}
    assert plan3.entry("loss").value == planned3.loss
    assert f"Lovász hinge from 50% of the {enough} epochs on ({enough * spe} planned" in plan3.entry("loss").reason
    assert [e.key for e in plan3.entries] == keys
    # one epoch fewer, or the same epochs with gradients accumulated over 2 batches (half the optimiser steps): none
    for short in (raw | {"train": {"epochs": enough - 1}}, raw | {"train": {"epochs": enough, "accumulate": 2}}):
        plan5, planned5 = P.make_plan(config_from_dict(short), fp)
        assert "lovasz" not in planned5.loss and "no Lovász" in plan5.entry("loss").reason
    # a loss set by the user is kept whole
    own = config_from_dict(raw | {"train": {"epochs": enough}, "loss": {"bce": 1.0, "dice": 1.0}})
    plan4, planned4 = P.make_plan(own, fp)
    assert planned4.loss == {"bce": 1.0, "dice": 1.0} and plan4.entry("loss").set_by == "user"
    assert [e.key for e in plan4.entries] == keys


def test_budget_sets_epochs_monotonically(tmp_path):
    data = make_blob_folder(tmp_path / "d", n=16)
    raw = tiny_config(data, tmp_path / "runs", plan={"enabled": True, "measure": False})
    raw["train"] = {"batch_size": 4}
    fp = fingerprint_of(config_from_dict(raw))
    epochs = []
    for budget in (0.05, 0.2, 1.0, 4.0):
        raw["train"]["budget_minutes"] = budget
        plan, planned = P.make_plan(config_from_dict(raw), fp)
        e = plan.entry("train.epochs")
        assert e.set_by == "plan" and f"{budget:g} min budget" in e.reason
        # independent arithmetic from the plan's own per-epoch estimate
        assert e.value == min(P.MAX_EPOCHS, max(1, math.floor(budget * 60 / plan.estimates["epoch_seconds"])))
        assert planned.schedule.warmup_epochs < planned.train.epochs
        epochs.append(planned.train.epochs)
    assert epochs == sorted(epochs) and epochs[-1] > epochs[0]
    # a budget of one epoch: the default warm-up shrinks, a warm-up set by the user raises the epochs
    raw["train"]["budget_minutes"] = 1e-4
    raw.pop("schedule")
    plan, planned = P.make_plan(config_from_dict(raw), fp)
    assert planned.train.epochs == 1 and planned.schedule.warmup_epochs == pytest.approx(0.1)
    assert plan.entry("schedule.warmup_epochs").set_by == "plan"
    plan, planned = P.make_plan(config_from_dict(raw | {"schedule": {"warmup_epochs": 1.0}}), fp)
    assert planned.train.epochs == 2 and "warmup" in plan.entry("train.epochs").reason
    # without a budget the configured epochs stay, marked as the default
    raw["train"].pop("budget_minutes")
    plan, planned = P.make_plan(config_from_dict(raw), fp)
    assert plan.entry("train.epochs").set_by == "default" and planned.train.epochs == 30


def test_the_plan_lets_a_budget_lengthen_only_the_epochs_it_chose(tmp_path):
    data = make_blob_folder(tmp_path / "d", n=16)
    raw = tiny_config(data, tmp_path / "runs", plan={"enabled": True, "measure": False})
    raw["train"] = {"batch_size": 4, "budget_minutes": 1.0}
    fp = fingerprint_of(config_from_dict(raw))
    plan, planned = P.make_plan(config_from_dict(raw), fp)
    assert planned.schedule.fill_budget and plan.entry("schedule.fill_budget").set_by == "plan"
    # epochs set by the user are the most that run; so without a budget, and when the user switched it off
    for train, schedule in (({"epochs": 7, "budget_minutes": 1.0}, {}), ({}, {}), ({"budget_minutes": 1.0}, {"fill_budget": False})):
        cfg = config_from_dict(raw | {"train": {"batch_size": 4, **train}, "schedule": {**raw.get("schedule", {}), **schedule}})
        plan, planned = P.make_plan(cfg, fp)
        assert not planned.schedule.fill_budget, (train, schedule)
    assert plan.entry("schedule.fill_budget").set_by == "user"


def test_a_ddp_plan_splits_its_batch_evenly_over_the_processes(tmp_path):
    data = make_blob_folder(tmp_path / "d", n=8)
    raw = tiny_config(data, tmp_path / "runs", plan={"enabled": True, "measure": False})
    raw["train"].pop("batch_size", None)
    cfg = config_from_dict(raw)
    alone, _ = P.make_plan(cfg, fingerprint_of(cfg))
    single = alone.entry("train.batch_size").value
    plan, planned = P.make_plan(cfg, fingerprint_of(cfg), world=3)
    assert planned.train.batch_size % 3 == 0 and single <= planned.train.batch_size < single + 3
    assert "multiple of the 3 DDP processes" in plan.entry("train.batch_size").reason
    # a power-of-two world divides the planned power-of-two batch: nothing changes
    assert P.make_plan(cfg, fingerprint_of(cfg), world=2)[1].train.batch_size == single


def test_measured_cost_times_this_machine_and_restores_the_random_state(tmp_path):
    cfg = config_from_dict(tiny_config(tmp_path, tmp_path / "runs", model={"name": "unet", "channels": [4, 8], "res_units": 0}))
    torch.manual_seed(123)
    state = torch.get_rng_state()
    cost = measure_cost(cfg, 1, (32, 32), (32, 32), measure=True)
    assert torch.equal(state, torch.get_rng_state())
    assert cost.method == "measured" and cost.train_s_per_image > 0 and cost.val_s_per_image > 0
    assert cost.step_s(4) == pytest.approx(cost.step_s_fixed + 4 * cost.train_s_per_image)
    formula = measure_cost(cfg, 1, (32, 32), (32, 32), measure=False)
    assert formula.method == "formula" and formula.macs_per_image > 0 and formula.mem_per_image_bytes > 0


def test_measured_cost_warms_up_every_batch_size_and_keeps_the_fastest_timed_step(tmp_path, monkeypatch):
    """A cold first step (kernels built for a new shape) or one slowed by another process must not
    set the cost: each batch size is warmed up, then the fastest timed step is kept."""
    import medseg.planning.stepcost as sc
    from medseg.training import SegModule

    cfg = config_from_dict(tiny_config(tmp_path, tmp_path / "runs", model={"name": "unet", "channels": [4, 8], "res_units": 0}))
    seen, timed_at = [], []  # the batch size of every training step; where each timed one began
    real_step = SegModule.training_step
    def counting_step(self, batch, idx):
        seen.append(batch[0].shape[0])
        return real_step(self, batch, idx)
    monkeypatch.setattr(SegModule, "training_step", counting_step)
    # scripted seconds: slow first timed steps, as a contended or cold step would be
    script = {2: iter([0.9, 0.3, 0.5]), 4: iter([1.0, 0.5, 0.7]), "val": iter([0.8, 0.4, 0.6])}
    def fake_timed(fn, device):
        n = len(seen)
        fn()
        if len(seen) == n:  # a validation forward: no training step ran
            return next(script["val"])
        timed_at.append(n)
        return next(script[seen[-1]])
    monkeypatch.setattr(sc, "_timed", fake_timed)
    cost = measure_cost(cfg, 1, (32, 32), (32, 32), measure=True)
    assert len(timed_at) == 2 * sc.TIMED_STEPS
    for first in (timed_at[0], timed_at[sc.TIMED_STEPS]):  # the steps before each batch size's first timed one
        b = seen[first]
        assert seen[first - sc.WARMUP_STEPS:first] == [b] * sc.WARMUP_STEPS, seen
    assert cost.train_s_per_image == pytest.approx(0.1)  # (0.5 - 0.3) / 2, from the fastest at each size
    assert cost.step_s_fixed == pytest.approx(0.1)
    assert cost.val_s_per_image == pytest.approx(0.4 / 4)


# ---------------------------------------------------------------------------------------
# `medseg plan` and fit


def _main(monkeypatch, *args) -> int:
    from medseg.cli import main

    monkeypatch.setattr(sys, "argv", ["medseg", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        main()
    return int(e.value.code or 0)


def test_plan_verb_writes_plan_and_fingerprint_and_never_overwrites(tmp_path, monkeypatch, capsys):
    data = make_blob_folder(tmp_path / "d", n=16)
    cfg = write_config(tmp_path / "c.yaml", {"data": {"root": str(data)}, "model": {"name": "unet", "channels": [8, 16, 32]}})
    out = tmp_path / "plan"
    assert _main(monkeypatch, "plan", cfg, "--out", out, "--no-measure", "--no-progress", "--set", "train.budget_minutes=1") == 0
    plan = json.loads((out / "plan.json").read_text())
    fp = json.loads((out / "fingerprint.json").read_text())
    assert fp["n_images"] == 16 and fp["raw_mask_values"] == [0, 255]
    entries = plan["entries"]
    assert entries["data.input_size"] == {**entries["data.input_size"], "value": [64, 64], "set_by": "plan"}
    assert fp["input_size"] == [64, 64]  # the data were read again at the planned size
    assert entries["train.epochs"]["set_by"] == "plan" and plan["cost"]["method"] == "formula"
    planned = yaml.safe_load((out / "config.yaml").read_text())
    assert planned["train"]["epochs"] == entries["train.epochs"]["value"] and planned["data"]["input_size"] == [64, 64]
    assert "data.input_size" in capsys.readouterr().out  # the table
    before = (out / "plan.json").read_text()
    assert _main(monkeypatch, "plan", cfg, "--out", out, "--no-measure", "--no-progress") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already holds" in err and (out / "plan.json").read_text() == before


def test_plan_verb_bad_config_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    cfg = write_config(tmp_path / "c.yaml", {"data": {"root": str(tmp_path)}, "train": {"budget_minutes": -3}})
    assert _main(monkeypatch, "plan", cfg, "--out", tmp_path / "o", "--no-progress") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train.budget_minutes" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_fit_plans_first_and_writes_plan_json(tmp_path):
    from medseg import runfolder as runfs
    from medseg.commands.fit import fit
    from medseg.runfolder import load_run_config

    data = write_mostly_empty(tmp_path / "d")
    raw = tiny_config(data, tmp_path / "runs", plan={"enabled": True, "measure": False}, train__epochs=1, schedule__warmup_epochs=0.5)
    run = fit(config_from_dict(raw), progress=False)
    plan = json.loads((run / P.PLAN_JSON).read_text())
    assert plan["applied_by_fit"] is True
    assert plan["entries"]["sampler.positive_share"]["value"] == 0.5
    assert plan["entries"]["train.epochs"] == {**plan["entries"]["train.epochs"], "set_by": "user", "value": 1}
    saved = load_run_config(run)
    assert saved.sampler.positive_share == 0.5
    assert len(runfs.read_csv(run / runfs.EPOCHS_CSV)) == 1
    # switched off: no plan, the config trains as written
    off = fit(config_from_dict(raw | {"name": "off", "plan": {"enabled": False}}), progress=False)
    assert not (off / P.PLAN_JSON).exists() and load_run_config(off).sampler.positive_share is None


@pytest.mark.parametrize("size, roi, overlap", [((512, 512), (256, 256), 0.5), ((928, 928), (256, 256), 0.5),
                                                ((224, 256), (256, 256), 0.5), ((300, 700), (96, 128), 0.25)])
def test_the_plan_counts_the_windows_monai_slides(size, roi, overlap):
    """The budget's validation cost counts one forward pass per window: the count MONAI's inferer makes."""
    import torch
    from monai.inferers import sliding_window_inference

    seen = []
    sliding_window_inference(torch.zeros(1, 1, *size), roi, 1, lambda t: seen.append(len(t)) or t, overlap=overlap)
    assert P.window_count(size, roi, overlap) == sum(seen)


def test_plan_patches_auto_keeps_small_lesions_by_crops_and_windows_and_budgets_the_windows():
    from medseg.config import config_from_dict
    from medseg.planning import make_plan

    fp = {"n_images": 400, "in_channels": 1, "orig_height": {"q50": 1024}, "orig_width": {"q50": 1024},
          "lesion_area_px_original": {"q05": 20.0}, "empty_image_fraction": 0.5, "foreground_fraction_positive": {"q50": 0.004, "mean": 0.006},
          "by_split": {"train": {"n_images": 320, "empty_image_fraction": 0.5, "foreground_fraction_positive": {"q50": 0.004, "mean": 0.006}},
                       "val": {"n_images": 80}}}
    raw = {"train": {"accelerator": "cpu", "budget_minutes": 30}}
    plan, resized = make_plan(config_from_dict(raw), fp, measure=False)
    assert resized.data.input_size == (256, 256) and resized.sampler.crop_size is None and resized.eval.sliding_window.roi_size is None
    plan_p, patched = make_plan(config_from_dict({**raw, "plan": {"patches": "auto"}}), fp, measure=False)
    assert patched.data.input_size == (928, 928) and patched.sampler.crop_size == (256, 256)
    assert patched.eval.sliding_window.roi_size == (256, 256)
    why = {e.key: e.reason for e in plan_p.entries}
    assert "sliding windows" in why["eval.sliding_window.roi_size"]
    # validation slides 49 windows of 256² over a 928² image (overlap 0.5): the plan costs each image as 49 windows
    assert plan_p.cost.val_size == (256, 256) and plan_p.cost.train_size == (256, 256)
    assert plan_p.cost.val_s_per_image == pytest.approx(49 * plan.cost.val_s_per_image, rel=1e-9)


def test_plan_patches_on_volumes_resamples_every_slice_to_the_median_spacing_at_the_planned_size():
    from medseg.config import config_from_dict
    from medseg.planning import make_plan

    vol = {"n_images": 400, "n_volumes": 4, "n_with_spacing": 400, "in_channels": 3, "orig_height": {"q50": 512},
           "orig_width": {"q50": 512}, "spacing_row": {"q50": 0.7}, "spacing_col": {"q50": 0.8},
           "lesion_area_px_original": {"q05": 20.0}, "empty_image_fraction": 0.5,
           "foreground_fraction_positive": {"q50": 0.004, "mean": 0.006}}
    raw = {"train": {"accelerator": "cpu", "budget_minutes": 30}, "plan": {"patches": "auto"}}
    plan, cfg = make_plan(config_from_dict(raw), vol, measure=False)
    h, w = cfg.data.input_size
    assert cfg.data.resize_mode == "spacing" and cfg.sampler.crop_size == (256, 256)
    # the median 512² slice at 0.7 x 0.8 mm maps onto the planned input exactly
    assert cfg.data.target_spacing == pytest.approx((0.7 * 512 / h, 0.8 * 512 / w), abs=1e-4)
    assert "mm" in {e.key: e.reason for e in plan.entries}["data.target_spacing"]
    # 2D images, slices without spacing, the resize (no patches) mode and a user's resize_mode: no resampling
    for fp, extra in (({**vol, "n_volumes": 0}, {}), ({**vol, "n_with_spacing": 399}, {}), (vol, {"plan": {"patches": "never"}}),
                      (vol, {"data": {"resize_mode": "letterbox"}})):
        _, other = make_plan(config_from_dict({**raw, **extra}), fp, measure=False)
        assert other.data.resize_mode != "spacing" and other.data.target_spacing is None

