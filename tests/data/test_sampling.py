"""Positive-aware sampler, foreground-biased crops, and the epoch composition audit."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from medseg import runfolder as runfs
from medseg.commands.fit import fit
from medseg.config import SamplerConfig, config_from_dict
from medseg.data.augment import build_augment
from medseg.data.dataset import SeededSampler, SegDataset
from medseg.data.sampling import (
    AUDIT_TOLERANCE,
    CropDataset,
    PositiveAwareSampler,
    audit_warning,
    build_train_dataset,
    build_train_sampler,
    check_sampler_pool,
    composition_columns,
    crop_window,
    epoch_target,
    positive_images,
    scheduled_target,
)
from medseg.errors import MedsegError
from tests.conftest import make_blob_folder, tiny_config


def _masks_with_positives(n: int, n_pos: int, size: int = 8, seed: int = 0) -> np.ndarray:
    """n masks, n_pos of them (at random places) with one foreground pixel."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), np.uint8)
    for i in rng.choice(n, n_pos, replace=False):
        masks[i, rng.integers(size), rng.integers(size)] = 1
    return masks


def _batches(sampler, batch_size: int) -> list[list[int]]:
    idx = [i for i, _ in sampler]
    return [idx[k : k + batch_size] for k in range(0, len(idx), batch_size)]


# -- batch composition -------------------------------------------------------------------


def test_rare_positives_are_rebalanced_to_the_target_in_every_batch():
    masks = _masks_with_positives(400, 20)  # 5% positive
    is_pos = masks.reshape(400, -1).sum(1) > 0  # independent of positive_images
    assert np.array_equal(positive_images(masks), is_pos)
    sampler = PositiveAwareSampler(is_pos, batch_size=8, seed=3, schedule=[0.5], epochs=5, num_samples=400)
    per_batch = []
    for epoch in range(5):
        sampler.set_epoch(epoch)
        per_batch += [int(is_pos[b].sum()) for b in _batches(sampler, 8)]
    assert len(per_batch) == 250 and all(3 <= k <= 5 for k in per_batch)
    n_images = 8 * len(per_batch)
    mean_share = sum(per_batch) / n_images
    # within a 99.9% binomial bound of the target (the sampler is tighter than that)
    assert abs(mean_share - 0.5) <= 3.3 * math.sqrt(0.25 / n_images)


def test_fractional_targets_round_per_batch_and_hold_the_epoch_mean():
    is_pos = positive_images(_masks_with_positives(300, 60))
    sampler = PositiveAwareSampler(is_pos, batch_size=8, seed=0, schedule=[0.3], num_samples=808)
    totals, patterns = [], set()
    for epoch in range(20):
        sampler.set_epoch(epoch)
        counts = [int(is_pos[b].sum()) for b in _batches(sampler, 8)]
        assert set(counts) <= {2, 3}  # floor / ceil of 0.3 * 8 = 2.4
        assert sum(counts) in (242, 243)  # the epoch itself holds 0.3 * 808 = 242.4, within one image
        totals.append(sum(counts))
        patterns.add(tuple(counts))
    assert set(totals) == {242, 243} and len(patterns) == 20  # seeded rounding, no fixed pattern


def test_pools_are_drawn_without_replacement_when_they_allow_it():
    is_pos = positive_images(_masks_with_positives(400, 20))
    sampler = PositiveAwareSampler(is_pos, batch_size=8, seed=1, schedule=[0.5], num_samples=400)
    sampler.set_epoch(4)
    drawn = Counter(i for i, _ in sampler)
    # 200 positive draws from a pool of 20: every positive exactly 10 times
    assert sorted(i for i in drawn if is_pos[i]) == list(np.flatnonzero(is_pos))
    assert {drawn[i] for i in np.flatnonzero(is_pos)} == {10}
    # 200 negative draws from a pool of 380: no repeats
    assert all(drawn[i] == 1 for i in drawn if not is_pos[i]) and sum(1 for i in drawn if not is_pos[i]) == 200


def test_target_zero_and_one_give_pure_batches():
    is_pos = positive_images(_masks_with_positives(64, 16))
    for target, want in ((0.0, False), (1.0, True)):
        sampler = PositiveAwareSampler(is_pos, batch_size=4, seed=0, schedule=[target], num_samples=64)
        assert all(bool(is_pos[i]) == want for i, _ in sampler)


# -- schedule ----------------------------------------------------------------------------


def test_schedule_is_piecewise_constant_over_the_epochs():
    got = [scheduled_target([0.8, 0.6, 0.4], e, 30) for e in range(30)]
    assert got == [0.8] * 10 + [0.6] * 10 + [0.4] * 10
    assert scheduled_target([0.8, 0.6, 0.4], 45, 30) == 0.4  # resumed past the plan: the last value
    assert [scheduled_target([0.8, 0.6, 0.4], e, 4) for e in range(4)] == [0.8, 0.8, 0.6, 0.4]
    assert epoch_target(SamplerConfig(schedule=[0.9, 0.1]), 1, 2) == 0.1
    assert epoch_target(SamplerConfig(positive_share=0.25), 7, 10) == 0.25
    assert epoch_target(SamplerConfig(), 3, 10) is None


def test_sampler_follows_the_schedule_epoch_by_epoch():
    is_pos = positive_images(_masks_with_positives(200, 50))
    sampler = PositiveAwareSampler(is_pos, batch_size=10, seed=2, schedule=[0.8, 0.6, 0.4], epochs=6, num_samples=200)
    realised = []
    for epoch in range(6):
        sampler.set_epoch(epoch)
        realised.append(np.mean([is_pos[i] for i, _ in sampler]))
    assert realised == pytest.approx([0.8, 0.8, 0.6, 0.6, 0.4, 0.4], abs=1 / 200)


# -- determinism and ranks ---------------------------------------------------------------


def test_draws_depend_only_on_seed_epoch_and_position():
    is_pos = positive_images(_masks_with_positives(50, 5))
    a = PositiveAwareSampler(is_pos, batch_size=5, seed=9, schedule=[0.4], num_samples=60)
    a.set_epoch(3)
    first = list(a)
    b = PositiveAwareSampler(is_pos, batch_size=5, seed=9, schedule=[0.4], num_samples=60)
    for epoch in range(3):  # a run that went through the earlier epochs ...
        b.set_epoch(epoch)
        list(b)
    b.set_epoch(3)
    assert list(b) == first  # ... replays epoch 3 exactly like a resumed one
    b.set_epoch(4)
    assert [i for i, _ in b] != [i for i, _ in first]
    c = PositiveAwareSampler(is_pos, batch_size=5, seed=10, schedule=[0.4], num_samples=60)
    c.set_epoch(3)
    assert list(c) != first
    assert len(first) == len(a) == 60


def test_ranks_split_every_batch_and_their_micro_batches_make_the_single_process_batch():
    is_pos = positive_images(_masks_with_positives(90, 30))
    world, bs, n_batches = 3, 6, 5
    whole = PositiveAwareSampler(is_pos, batch_size=bs, seed=4, schedule=[0.5], num_samples=bs * n_batches)
    whole.set_epoch(2)
    everything = list(whole)
    per_rank = []
    for rank in range(world):
        s = PositiveAwareSampler(is_pos, batch_size=bs, seed=4, schedule=[0.5], num_samples=bs * n_batches, rank=rank, world_size=world)
        s.set_epoch(2)
        draws = list(s)
        assert len(draws) == len(s) == bs // world * n_batches
        per_rank.append(draws)
    for b in range(n_batches):
        # step b: the ranks' micro-batches (bs / world each) are together single-process batch b, seeds included
        step = [d for r in per_rank for d in r[b * (bs // world) : (b + 1) * (bs // world)]]
        assert Counter(step) == Counter(everything[b * bs : (b + 1) * bs])
        assert int(is_pos[[i for i, _ in step]].sum()) == bs // 2  # the step's batch on target
    assert len({seed for r in per_rank for _, seed in r}) == len(everything)


def test_null_positive_share_keeps_the_natural_order_sampler():
    masks = _masks_with_positives(20, 3)
    s = build_train_sampler(SamplerConfig(), positive_images(masks), batch_size=4, seed=5, epochs=3, num_samples=20)
    ref = SeededSampler(20, 5, num_samples=20)
    assert isinstance(s, SeededSampler)
    s.set_epoch(1)
    ref.set_epoch(1)
    assert list(s) == list(ref)
    assert isinstance(build_train_sampler(SamplerConfig(positive_share=0.5), positive_images(masks), 4, 5, 3, 20), PositiveAwareSampler)


def test_positive_target_without_positive_images_is_a_config_error():
    empty = positive_images(np.zeros((6, 8, 8), np.uint8))
    with pytest.raises(MedsegError, match="sampler.positive_share"):
        check_sampler_pool(SamplerConfig(positive_share=0.5), 10, empty)
    with pytest.raises(MedsegError, match="sampler.schedule"):
        check_sampler_pool(SamplerConfig(schedule=[0.5, 0.0]), 10, empty)
    check_sampler_pool(SamplerConfig(positive_share=0.0), 10, empty)
    check_sampler_pool(SamplerConfig(), 10, empty)


def test_sampler_config_is_validated():
    for bad, key in (
        ({"positive_share": 1.2}, "sampler.positive_share"),
        ({"schedule": []}, "sampler.schedule"),
        ({"schedule": [0.5, -0.1]}, "sampler.schedule"),
        ({"positive_share": 0.5, "schedule": [0.5]}, "sampler.schedule"),
        ({"crop_size": [40, 32]}, "sampler.crop_size"),
        ({"crop_size": [128, 512]}, "sampler.crop_size"),
        ({"foreground_crop_share": 1.5}, "sampler.foreground_crop_share"),
    ):
        with pytest.raises(MedsegError, match=key):
            config_from_dict({"data": {"input_size": [256, 256]}, "sampler": bad})


# -- crops -------------------------------------------------------------------------------


def _disk_masks(n: int, size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        r = rng.integers(1, 4)
        cy, cx = rng.integers(0, size, size=2)  # also at the border and in corners
        masks[i] = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    return masks


def _coordinate_images(n: int, size: int) -> np.ndarray:
    """Channel 0 holds the row, channel 1 the column: a crop tells where it came from."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    return np.repeat(np.stack([yy, xx])[None], n, axis=0)


def test_crops_have_the_size_and_come_from_one_place_of_image_and_mask():
    masks = _disk_masks(6, 64)
    ds = CropDataset(_coordinate_images(6, 64), masks, None, crop_size=(32, 16), foreground_share=0.5)
    for i in range(6):
        x, y, idx = ds[(i, 1000 + i)]
        assert x.shape == (2, 32, 16) and y.shape == (1, 32, 16) and idx == i
        y0, x0 = int(x[0, 0, 0]), int(x[1, 0, 0])
        assert np.array_equal(x[0].numpy(), np.arange(y0, y0 + 32, dtype=np.float32)[:, None].repeat(16, 1))
        assert np.array_equal(y[0].numpy(), masks[i, y0 : y0 + 32, x0 : x0 + 16].astype(np.float32))
        again = ds[(i, 1000 + i)]
        assert np.array_equal(again[0].numpy(), x.numpy())  # seeded per sample


def test_foreground_share_one_always_shows_foreground():
    masks = _disk_masks(40, 64, seed=1)
    ds = CropDataset(_coordinate_images(40, 64), masks, None, crop_size=(16, 16), foreground_share=1.0)
    for i in range(40):
        for seed in range(5):
            assert ds[(i, seed)][1].sum() > 0


def test_foreground_crops_follow_the_augmented_mask():
    masks = _disk_masks(10, 64, seed=2)
    images = _coordinate_images(10, 64)
    aug = build_augment("light")
    full = SegDataset(images, masks, aug)
    ds = CropDataset(images, masks, aug, crop_size=(16, 16), foreground_share=1.0)
    for i in range(10):
        for seed in range(4):
            has_fg = full[(i, seed)][1].sum() > 0
            assert (ds[(i, seed)][1].sum() > 0) == has_fg


@pytest.mark.parametrize("share", [0.0, 0.5])
def test_crop_foreground_rate_matches_the_exact_expectation(share):
    mask = np.zeros((64, 64), np.uint8)
    mask[40:44, 10:13] = 1
    size = (16, 16)
    # exact: the share of all 49 x 49 window positions that overlap the lesion
    p_uniform = sliding_window_view(mask, size).any(axis=(2, 3)).mean()
    expected = share + (1 - share) * p_uniform
    rng = np.random.default_rng(0)
    n = 3000
    hits = 0
    for _ in range(n):
        y0, x0 = crop_window(mask, size, share, rng)
        assert 0 <= y0 <= 48 and 0 <= x0 <= 48
        hits += mask[y0 : y0 + 16, x0 : x0 + 16].any()
    assert abs(hits / n - expected) <= 3.3 * math.sqrt(expected * (1 - expected) / n)


def test_build_train_dataset_crops_only_when_asked():
    masks = _disk_masks(2, 32)
    images = _coordinate_images(2, 32)
    assert type(build_train_dataset(images, masks, None, SamplerConfig())) is SegDataset
    assert type(build_train_dataset(images, masks, None, SamplerConfig(crop_size=(32, 32)))) is SegDataset
    ds = build_train_dataset(images, masks, None, SamplerConfig(crop_size=(16, 16), foreground_crop_share=0.2))
    assert isinstance(ds, CropDataset) and ds.foreground_share == 0.2 and ds[(0, 1)][0].shape == (2, 16, 16)


# -- audit -------------------------------------------------------------------------------


def test_composition_columns_and_warning_threshold():
    img, px = [0.5, 0.25, 0.75], [0.01, 0.0, 0.03]
    cols = composition_columns(img, px, 0.5)
    assert cols["batch_pos_image_share_mean"] == pytest.approx(0.5) and cols["batch_pos_image_share_min"] == 0.25
    assert cols["batch_pos_image_share_max"] == 0.75
    assert cols["batch_pos_pixel_share_mean"] == pytest.approx(np.mean(px))
    assert (cols["batch_pos_pixel_share_min"], cols["batch_pos_pixel_share_max"]) == (0.0, 0.03)
    assert cols["sampler_target_pos_share"] == 0.5
    assert math.isnan(composition_columns([], [], None)["sampler_target_pos_share"])
    assert audit_warning(0, 0.5 - AUDIT_TOLERANCE - 0.01, 0.5) is not None
    assert audit_warning(0, 0.5 + AUDIT_TOLERANCE - 0.01, 0.5) is None
    assert audit_warning(0, 0.9, None) is None


# -- through fit -------------------------------------------------------------------------


@pytest.mark.slow
def test_fit_logs_the_realised_composition_against_the_target(tmp_path):
    data = make_blob_folder(tmp_path / "d", n=16)
    cfg = config_from_dict(
        tiny_config(data, tmp_path / "runs", name="bal", train__epochs=2, augment__preset="none", sampler={"schedule": [0.5, 0.75]})
    )
    run = fit(cfg, progress=False)
    rows = runfs.read_csv(run / runfs.EPOCHS_CSV)
    assert [r["sampler_target_pos_share"] for r in rows] == [0.5, 0.75]  # Lightning's set_epoch reaches the sampler
    for r in rows:
        # batch 4, no augmentation: every batch the model saw held exactly target * 4 positives
        assert r["batch_pos_image_share_min"] == r["batch_pos_image_share_max"] == r["sampler_target_pos_share"]
        assert 0 < r["batch_pos_pixel_share_min"] <= r["batch_pos_pixel_share_mean"] <= r["batch_pos_pixel_share_max"] < 1
    log = (run / runfs.LOGS / "train.log").read_text()
    assert "sampler: positive share scheduled [0.5, 0.75]" in log and "WARNING" not in log


@pytest.mark.slow
def test_fit_warns_when_crops_miss_the_target(tmp_path, capsys):
    from rich.console import Console

    data = make_blob_folder(tmp_path / "d", n=16)
    raw = tiny_config(
        data, tmp_path / "runs", name="crop", train__epochs=2, augment__preset="none",
        sampler={"positive_share": 1.0, "crop_size": [16, 16], "foreground_crop_share": 0.0},
    )
    console = Console(stderr=True, width=200)
    run = fit(config_from_dict(raw), progress=False, console=console)
    rows = runfs.read_csv(run / runfs.EPOCHS_CSV)
    # uniform 16x16 crops of 64x64 images mostly miss the small disks: far below the target of 1
    assert all(r["batch_pos_image_share_mean"] < 0.9 for r in rows)
    warnings = [line for line in (run / runfs.LOGS / "train.log").read_text().splitlines() if " WARNING " in line]
    assert len(warnings) == len(rows) and "target 100.0%" in warnings[0]
    assert "WARNING epoch 0" in capsys.readouterr().err
    # a default config has no target
    plain = fit(config_from_dict(tiny_config(data, tmp_path / "runs", name="plain", train__epochs=2)), progress=False)
    assert all(math.isnan(r["sampler_target_pos_share"]) for r in runfs.read_csv(plain / runfs.EPOCHS_CSV))


def test_fit_rejects_a_positive_target_without_positive_images(tmp_path):
    data = make_blob_folder(tmp_path / "d", n=8, empty_every=1)  # every mask empty
    raw = tiny_config(data, tmp_path / "runs", sampler={"positive_share": 0.5})
    with pytest.raises(MedsegError, match="sampler.positive_share"):
        fit(config_from_dict(raw), progress=False)
    assert not (tmp_path / "runs" / "t").exists()
