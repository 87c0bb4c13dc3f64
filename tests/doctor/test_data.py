"""Data checks on evidence built in memory; numbers checked against numpy/scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from medseg.data.fingerprint import _q
from medseg.doctor import data as D
from medseg.doctor.evidence import intensity_stats, thumbnails
from tests.doctor.conftest import make_evidence


def _rows(**cols):
    n = len(next(iter(cols.values())))
    return [{"epoch": i, **{k: float(v[i]) for k, v in cols.items()}} for i in range(n)]


def test_masks_reaching_the_loss_as_0_255_are_serious():
    fp = {"raw_mask_values": [0, 255], "mask_values_binary01": False}
    ev = make_evidence(fingerprint=fp, epochs=_rows(batch_pos_pixel_share_mean=[7.9, 8.1], train_loss=[-3.0, -40.0]))
    f = D.mask_values(ev)
    assert f.id == "data.mask_values_in_loss" and f.severity == "serious"
    assert f.numbers["batch_pos_pixel_share_max"] == 8.1 and f.numbers["train_loss_min"] == -40.0
    assert "8.1" in f.evidence and "-40" in f.evidence


def test_masks_stored_0_255_but_binarised_are_info_only():
    fp = {"raw_mask_values": [0, 255], "mask_values_binary01": False}
    f = D.mask_values(make_evidence(fingerprint=fp, epochs=_rows(batch_pos_pixel_share_mean=[0.03], train_loss=[1.2])))
    assert f.id == "data.mask_values_scaled" and f.severity == "info"


@pytest.mark.parametrize("values,expected,severity", [
    ([0, 1, 2, 3], "data.mask_labels_merged", "warning"),
    (list(range(0, 256, 5)), "data.mask_values_blurred", "serious"),
])
def test_mask_labels_and_blurred_edges(values, expected, severity):
    f = D.mask_values(make_evidence(fingerprint={"raw_mask_values": values}))
    assert (f.id, f.severity) == (expected, severity)


def test_binary_masks_give_no_finding():
    assert D.mask_values(make_evidence(fingerprint={"raw_mask_values": [0, 1]})) is None


def test_share_below_matches_the_true_share_of_lesion_areas():
    rng = np.random.default_rng(1)
    areas = rng.uniform(2, 100, 4000)
    q = _q(areas)
    for x in (5, 16, 40, 90):
        assert D._share_below(q, x) == pytest.approx(np.mean(areas < x), abs=0.02)
    assert D._share_below(q, 1) == 0.0 and D._share_below(q, 1000) == 1.0


def test_tiny_lesions_after_shrinking_suggest_a_larger_input():
    areas = np.array([3, 4, 6, 8, 9, 12, 14, 20, 30, 60], float)
    fp = {"lesion_area_px_at_input": _q(areas), "n_lesions": 10, "input_size": [32, 32],
          "orig_height": {"q50": 128.0}, "orig_width": {"q50": 128.0}}
    f = D.tiny_lesions(make_evidence(fingerprint=fp, config={"model": {"name": "unet", "channels": [8, 16, 32]}}))
    assert f.severity == "serious"  # median 10.5 px < 16
    assert f.fix_key == "data.input_size" and f.fix_value == [64, 64]
    assert f.numbers["network_stride"] == 4 and f.numbers["input_scale"] == 0.25
    assert f.numbers["median_area_px_original"] == pytest.approx(np.median(areas) * 16)
    # fingerprint v2 measures both directly: they take precedence over the estimate
    fp2 = {**fp, "input_scale_median": [0.5, 0.25], "lesion_area_px_original": {"q50": 99.0}}
    f2 = D.tiny_lesions(make_evidence(fingerprint=fp2))
    assert f2.numbers["input_scale"] == 0.25 and f2.numbers["median_area_px_original"] == 99.0


def test_large_lesions_give_no_tiny_lesion_finding():
    fp = {"lesion_area_px_at_input": _q(np.arange(100, 400)), "input_size": [64, 64]}
    assert D.tiny_lesions(make_evidence(fingerprint=fp)) is None


def test_thumbnails_are_z_scored_block_means():
    rng = np.random.default_rng(0)
    imgs = rng.normal(size=(3, 2, 32, 48)).astype(np.float32)
    imgs[2] = 5.0  # flat image: no defined correlation
    t = thumbnails(imgs, side=16)
    ref = imgs[0].mean(0).reshape(16, 2, 16, 3).mean(axis=(1, 3)).ravel().astype(np.float64)
    ref = (ref - ref.mean()) / ref.std()
    np.testing.assert_allclose(t[0], ref, atol=1e-5)
    assert np.isnan(t[2]).all()


def test_duplicate_pairs_finds_planted_copies_with_pearson_r():
    rng = np.random.default_rng(2)
    train = rng.normal(size=(20, 1, 32, 32)).astype(np.float32)
    val = rng.normal(size=(6, 1, 32, 32)).astype(np.float32)
    val[1] = train[7]
    val[4] = train[3] * 1.5 + 0.2 + rng.normal(0, 0.01, (1, 32, 32))  # re-scaled, slightly noisy copy
    tv, tt = thumbnails(val), thumbnails(train)
    pairs = D.duplicate_pairs(tv, tt)
    assert [(i, j) for i, j, _ in pairs] == [(1, 7), (4, 3)]
    for i, j, r in pairs:
        assert r == pytest.approx(np.corrcoef(tv[i], tt[j])[0, 1], abs=1e-9)


def test_duplicate_pairs_in_blocks_find_what_the_whole_matrix_finds():
    rng = np.random.default_rng(3)
    tt = rng.normal(size=(40, 256))
    tv = rng.normal(size=(2 * D.DUPLICATE_BLOCK + 7, 256))
    copies = [3, D.DUPLICATE_BLOCK, 2 * D.DUPLICATE_BLOCK + 6]  # one in each block, the last one partial
    for k, i in enumerate(copies):
        tv[i] = tt[k] + rng.normal(0, 0.05, 256)
    z = lambda a: (a - a.mean(1, keepdims=True)) / a.std(1, keepdims=True)  # noqa: E731
    tv, tt = z(tv), z(tt)
    full = np.corrcoef(tv, tt)[: len(tv), len(tv):]  # independent: numpy's whole matrix
    want = [(i, int(full[i].argmax()), float(full[i].max())) for i in range(len(tv)) if full[i].max() >= D.DUPLICATE_CORRELATION]
    got = D.duplicate_pairs(tv, tt)
    assert [(i, j) for i, j, _ in got] == [(i, j) for i, j, _ in want] == [(i, k) for k, i in enumerate(copies)]
    assert [r for *_, r in got] == pytest.approx([r for *_, r in want], abs=1e-9)


def test_split_intensity_shift_reported_with_ks_p():
    from medseg.doctor.evidence import EvalEvidence

    rng = np.random.default_rng(3)
    train = rng.normal(100, 5, (40, 1, 8, 8)) + rng.normal(0, 3, (40, 1, 1, 1))
    val = rng.normal(50, 5, (12, 1, 8, 8)) + rng.normal(0, 3, (12, 1, 1, 1))
    it, iv = intensity_stats(train), intensity_stats(val)
    np.testing.assert_allclose(it[:, 0], train.reshape(40, -1).mean(1))
    e = EvalEvidence(**{**_empty_eval(), "intensity_train": it, "intensity_val": iv})
    f = D.split_intensity(make_evidence(eval=e, config={"data": {"normalize": {"mode": "none"}}}))
    assert f.id == "data.split_intensity" and f.fix_key == "data.normalize.mode" and f.fix_value == "percentile"
    k = D.STAT_NAMES.index(f.numbers["statistic"])
    assert f.numbers["ks_p"] == pytest.approx(stats.ks_2samp(it[:, k], iv[:, k]).pvalue)
    same = EvalEvidence(**{**_empty_eval(), "intensity_train": it, "intensity_val": intensity_stats(train[:12] + 0.1)})
    assert D.split_intensity(make_evidence(eval=same)) is None


def test_case_in_two_splits():
    f = D.split_overlap(make_evidence(split={"train": ["a", "b"], "val": ["b", "c"], "test": []}))
    assert f.severity == "serious" and f.numbers["n_shared"] == 1
    assert D.split_overlap(make_evidence(split={"train": ["a"], "val": ["c"]})) is None


def _empty_eval() -> dict:
    z = np.zeros((0, 4))
    return dict(prob_max=0.0, mid_probability_share=0.0, val_ids=[], train_ids=[], probs_finite=True,
                hard_rows=[], hard_summary={}, soft_dice=float("nan"), sweep=None, found_lesion_dice=[],
                thumbs_train=np.zeros((0, 256)), thumbs_val=np.zeros((0, 256)), intensity_train=z, intensity_val=z,
                mask_values=[0.0, 1.0], train_positive_share=float("nan"), best_epoch=0)


def test_empty_share():
    assert D.empty_share(make_evidence(fingerprint={"empty_image_fraction": 1.0, "n_images": 9})).severity == "serious"
    f = D.empty_share(make_evidence(fingerprint={"empty_image_fraction": 0.95, "n_images": 100}))
    assert (f.id, f.severity, f.fix_key, f.fix_value) == ("data.mostly_empty", "info", "sampler.positive_share", 0.5)
    assert D.empty_share(make_evidence(fingerprint={"empty_image_fraction": 0.25})) is None


def test_split_intensity_from_fingerprint_without_evaluation():
    def part(mean_q50):
        return {"normalised_intensity_mean": {"q25": mean_q50 - 0.1, "q50": mean_q50, "q75": mean_q50 + 0.1},
                "normalised_intensity_std": {"q25": 0.9, "q50": 1.0, "q75": 1.1}}

    fp = {"by_split": {"train": part(0.0), "val": part(2.0)}}
    f = D.split_intensity(make_evidence(fingerprint=fp))
    # spread = max(IQR / 1.349, 0.05 * max(1, |median|)) = 0.2 / 1.349
    assert f.severity == "warning" and f.numbers["shift_spreads"] == pytest.approx(2.0 / (0.2 / 1.349))
    assert np.isnan(f.numbers["ks_p"]) and "fingerprint" in f.evidence
    fp_same = {"by_split": {"train": part(0.0), "val": part(0.05)}}
    assert D.split_intensity(make_evidence(fingerprint=fp_same)) is None


def test_lesions_below_one_deepest_cell_in_heavily_shrunk_images_are_a_warning():
    # BUSI-like at a 32x32 input: few lesions under 16 px, but the median (57 px) is below one 16x16 cell
    areas = np.concatenate([np.full(19, 8.0), np.linspace(20, 320, 81)])
    fp = {"lesion_area_px_at_input": _q(areas), "n_lesions": 100, "input_size": [32, 32],
          "orig_height": {"q50": 425.0}, "orig_width": {"q50": 512.0}}
    unet16 = {"model": {"name": "unet", "channels": [16, 32, 64, 128, 256]}}
    f = D.tiny_lesions(make_evidence(fingerprint=fp, config=unet16))
    assert f.numbers["network_stride"] == 16 and f.numbers["share_below_px"] < 0.25
    assert f.severity == "warning" and "smaller than one 16x16 cell" in f.title
    assert f.fix_key == "data.input_size" and f.fix_value == [64, 64]
    # the same lesions at half the original size (a 2x shrink): information only
    mild = {**fp, "orig_height": {"q50": 64.0}, "orig_width": {"q50": 64.0}}
    assert D.tiny_lesions(make_evidence(fingerprint=mild, config=unet16)).severity == "info"
