"""Normalisation, resize/letterbox geometry and its inverse, binary mask resizing."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from medseg.config import NormalizeConfig
from medseg.data.preprocess import normalize, resize_image, resize_mask, to_original
from medseg.errors import MedsegError


def smooth_image(h, w):
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.sin(x / w * 3.0) + np.cos(y / h * 2.0) + 0.5 * (x / w) * (y / h)


# ---------------------------------------------------------------- normalize

def test_zscore_and_percentile(rng):
    a = rng.normal(100, 20, size=(50, 60)).astype(np.float32)
    z = normalize(a, NormalizeConfig(mode="zscore"), "other")
    assert z.dtype == np.float32
    assert abs(z.mean()) < 1e-4 and abs(z.std() - 1) < 1e-4
    a[0, 0] = 1e6  # one hot pixel must not dominate percentile normalisation
    p = normalize(a, NormalizeConfig(mode="percentile", percentiles=(1, 99)), "other")
    assert p.max() < 4.0
    assert abs(p.mean()) < 1e-4
    auto = normalize(a, NormalizeConfig(mode="auto", percentiles=(1, 99)), "mr")
    np.testing.assert_allclose(auto, p)


def test_ct_window_and_auto_ct():
    hu = np.array([[-1000, -160, 40], [240, 1000, 3000]], dtype=np.float32)
    cfg = NormalizeConfig(mode="ct_window", window=(40, 400))
    np.testing.assert_allclose(normalize(hu, cfg, "ct"), [[0, 0, 0.5], [1, 1, 1]], atol=1e-6)
    np.testing.assert_allclose(normalize(hu, NormalizeConfig(window=(40, 400)), "ct"), [[0, 0, 0.5], [1, 1, 1]], atol=1e-6)


def test_minmax_and_none():
    a = np.array([[2.0, 4.0], [6.0, 10.0]])
    np.testing.assert_allclose(normalize(a, NormalizeConfig(mode="minmax"), "other"), [[0, 0.25], [0.5, 1]])
    out = normalize(a, NormalizeConfig(mode="none"), "other")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, a)


@pytest.mark.parametrize("mode", ["zscore", "percentile", "minmax", "ct_window", "auto"])
def test_constant_image_gives_zeros_without_warnings(mode):
    a = np.full((8, 8), 7.0, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = normalize(a, NormalizeConfig(mode=mode, window=(7, 0.5) if mode == "ct_window" else (40, 400)), "other")
    assert np.isfinite(out).all()
    if mode != "ct_window":
        assert not out.any()


def test_nan_names_the_file(one_line):
    a = np.ones((4, 4), dtype=np.float32)
    a[1, 2] = np.nan
    with pytest.raises(MedsegError) as e:
        normalize(a, NormalizeConfig(), "other", where="/data/x.tif")
    one_line(e, "/data/x.tif", "NaN")


# ---------------------------------------------------------------- geometry

@pytest.mark.parametrize("mode", ["resize", "letterbox"])
@pytest.mark.parametrize("orig", [(100, 60), (40, 90), (64, 64), (300, 200)])
def test_resize_then_to_original_is_inverse(mode, orig):
    img = smooth_image(*orig)
    out, info = resize_image(img[None], (64, 64), mode)
    assert out.shape == (1, 64, 64) and out.dtype == np.float32
    json.dumps(info)  # goes into sample meta
    back = to_original(out[0], info)
    assert back.shape == orig and back.dtype == np.float32
    # interior only: the outermost pixels are extrapolated by bilinear resampling
    err = np.abs(back - img)[2:-2, 2:-2]
    assert err.max() < 0.08, err.max()


def test_same_size_resize_is_exact():
    img = smooth_image(32, 48)[None]
    out, info = resize_image(img, (32, 48), "resize")
    np.testing.assert_array_equal(out, img)
    np.testing.assert_array_equal(to_original(out[0], info), img[0])


def test_letterbox_geometry_and_zero_padding():
    img = np.ones((2, 100, 50), dtype=np.float32)
    out, info = resize_image(img, (64, 64), "letterbox")
    assert info["content"] == [64, 32] and info["offset"] == [0, 16]
    assert info["orig_shape"] == [100, 50]
    np.testing.assert_allclose(info["scale"], [0.64, 0.64])
    assert out.shape == (2, 64, 64)
    assert not out[:, :, :16].any() and not out[:, :, 48:].any()
    np.testing.assert_allclose(out[:, :, 16:48], 1.0, atol=1e-6)
    # a map of ones on the content and garbage on the padding maps back to ones
    prob = np.full((64, 64), 9.0, dtype=np.float32)
    prob[:, 16:48] = 1.0
    np.testing.assert_allclose(to_original(prob, info), 1.0, atol=1e-6)


def test_spacing_mode_resamples_to_the_target_spacing_pads_and_maps_back():
    # 100x80 px at 0.5 x 0.8 mm = 50 x 64 mm; at 1 mm per pixel that is 50 x 64 px on a 64x64 canvas
    img = smooth_image(100, 80)[None]
    out, info = resize_image(img, (64, 64), "spacing", spacing=(0.5, 0.8), target=(1.0, 1.0))
    assert info["content"] == [50, 64] and info["offset"] == [7, 0] and info["fit"] == 1.0
    np.testing.assert_allclose(info["scale"], [0.5, 0.8])
    assert not out[:, :7].any() and not out[:, 57:].any()
    back = to_original(out[0], info)
    assert back.shape == (100, 80)
    assert np.abs(back - img[0])[2:-2, 2:-2].max() < 0.08
    json.dumps(info)


def test_spacing_mode_shrinks_a_case_too_large_for_the_canvas_and_letterboxes_one_without_spacing():
    # 200 x 100 mm at 1 mm needs 200 x 100 px: shrunk by one factor (64/200) to fit, aspect kept
    _, info = resize_image(np.zeros((1, 400, 200), np.float32), (64, 64), "spacing", spacing=(0.5, 0.5), target=(1.0, 1.0))
    assert info["fit"] == pytest.approx(0.32) and info["content"] == [64, 32]
    _, plain = resize_image(np.zeros((1, 400, 200), np.float32), (64, 64), "letterbox")
    _, none = resize_image(np.zeros((1, 400, 200), np.float32), (64, 64), "spacing", spacing=None, target=(1.0, 1.0))
    assert none["content"] == plain["content"] and none["offset"] == plain["offset"] and none["fit"] is None


def test_spacing_mode_gives_a_lesion_the_same_pixels_at_any_source_spacing():
    """A 6 mm disk in a 40 mm field at 0.4 mm and in a 64 mm field at 0.8 mm: pi * 6^2 px at 1 mm in both (its area)."""
    spacing_areas, resized_areas = [], []
    for sp, fov in ((0.4, 40), (0.8, 64)):
        n = int(round(fov / sp))
        yy, xx = (np.mgrid[0:n, 0:n] + 0.5) * sp
        disk = ((yy - 20) ** 2 + (xx - 20) ** 2 <= 6.0 ** 2).astype(np.uint8)
        spacing_areas.append(int(resize_mask(disk, (64, 64), "spacing", spacing=(sp, sp), target=(1.0, 1.0)).sum()))
        resized_areas.append(int(resize_mask(disk, (64, 64), "resize").sum()))
    for a in spacing_areas:
        assert abs(a - np.pi * 36) < 0.1 * np.pi * 36, spacing_areas
    # resizing both fields to 64 px instead makes the same lesion (64/40)^2 = 2.6x larger in the smaller field
    assert resized_areas[0] > 2 * resized_areas[1]


# ---------------------------------------------------------------- masks

@pytest.mark.parametrize("mode", ["resize", "letterbox"])
def test_resize_mask_binary_and_aligned_with_image(mode):
    mask = np.zeros((120, 80), dtype=np.uint8)
    mask[30:70, 20:50] = 255
    out = resize_mask(mask, (64, 64), mode)
    assert out.dtype == np.uint8 and set(np.unique(out)) <= {0, 1}
    img, info = resize_image((mask > 0).astype(np.float32)[None], (64, 64), mode)
    agree = (out == (img[0] >= 0.5)).mean()
    assert agree > 0.99
    back = to_original(out.astype(np.float32), info) >= 0.5
    inter = (back & (mask > 0)).sum()
    union = (back | (mask > 0)).sum()
    assert inter / union > 0.9


def test_resize_mask_enlarging_keeps_binary():
    mask = np.zeros((10, 10), dtype=np.uint8)
    mask[3:5, 4:7] = 1
    out = resize_mask(mask, (32, 32), "resize")
    assert set(np.unique(out)) == {0, 1}
    assert 0.5 < out.sum() / (mask.sum() * (32 / 10) ** 2) < 1.5


@pytest.mark.parametrize("mode", ["resize", "letterbox"])
def test_tiny_lesions_never_vanish(mode):
    mask = np.zeros((512, 384), dtype=np.uint8)
    mask[100, 100] = 1  # one pixel: 1/64 of an output pixel
    mask[400:402, 300] = 1  # a second, separate tiny lesion
    mask[200:203, 10:12] = 1
    out = resize_mask(mask, (64, 64), mode)
    _, info = resize_image(np.zeros((1, 512, 384), np.float32), (64, 64), mode)
    sy, sx = info["scale"]
    top, left = info["offset"]
    for r, c in [(100, 100), (400, 300), (201, 10)]:
        rr, cc = int((r + 0.5) * sy) + top, int((c + 0.5) * sx) + left
        assert out[rr, cc] == 1, (r, c)
    assert out.sum() == 3  # one pixel each, nothing else invented


def test_empty_mask_stays_empty():
    assert not resize_mask(np.zeros((50, 70)), (32, 32), "letterbox").any()
