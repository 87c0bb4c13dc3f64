"""Augmentation presets, overrides, CLAHE and reproducibility."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest
from scipy import ndimage

from medseg.data.augment import GEOMETRIC, INTENSITY, PRESETS, TRANSFORMS, Augmenter, build_augment, clahe
from medseg.errors import MedsegError

H = W = 64
N_CH = 5  # a 2.5D stack with 2 neighbours each side: more than OpenCV's 4-channel fast path


def _burned_in():
    """A large off-centre disk; channel c = smooth field (|.| <= 0.5) + 10 * mask + c."""
    yy, xx = np.mgrid[:H, :W]
    mask = ((yy - 24) ** 2 + (xx - 38) ** 2 <= 14**2).astype(np.uint8)
    field = 0.5 * np.sin(xx / 7.0) * np.cos(yy / 9.0)
    image = np.stack([field + 10.0 * mask + c for c in range(N_CH)], axis=-1).astype(np.float32)
    return image, mask


@pytest.mark.parametrize("name", list(GEOMETRIC))
def test_geometric_transform_moves_image_channels_and_mask_together(name):
    image, mask = _burned_in()
    aug = build_augment("none", {name: 1.0})  # also checks that an override adds a transform
    moved = False
    for seed in range(3):
        aug.set_random_seed(seed)
        out = aug(image=image, mask=mask)
        # same seed on an all-ones image: where it is still exactly 1 no fill leaked in
        aug.set_random_seed(seed)
        ones = aug(image=np.ones_like(image), mask=mask)["image"][..., 0]
        valid = np.abs(ones - 1.0) < 1e-5
        img, m = out["image"], out["mask"]
        assert out["applied"] == [name]
        assert img.shape == image.shape and img.dtype == np.float32
        assert m.shape == mask.shape and m.dtype == np.uint8
        assert set(np.unique(m)) <= {0, 1}
        assert m.sum() > 0.5 * mask.sum()
        moved |= not np.array_equal(m, mask)
        # every 2.5D channel moved with the others: channel differences are unchanged
        for c in range(1, N_CH):
            np.testing.assert_allclose(img[valid, c] - img[valid, 0], c, atol=1e-3)
        # the mask moved with the image: bright (10 +- 0.5) inside it, dark (0 +- 0.5) outside;
        # a 2-pixel band at its edge is left out for interpolation blur
        inside = ndimage.binary_erosion(m, iterations=2) & valid
        outside = ~ndimage.binary_dilation(m, iterations=2) & valid
        assert inside.sum() > 100 and outside.sum() > 1000
        assert np.all(np.abs(img[inside, 0] - 10.0) <= 0.5 + 1e-3), name
        assert np.all(np.abs(img[outside, 0]) <= 0.5 + 1e-3), name
    assert moved, f"{name} left the mask where it was for every seed"


def test_same_seed_replays_and_other_seed_differs():
    image, mask = _burned_in()
    aug = build_augment("heavy")
    aug.set_random_seed(5)
    first = aug(image=image, mask=mask)
    aug.set_random_seed(6)
    other = aug(image=image, mask=mask)
    # a fresh augmenter (a resumed run) and a reused one both replay seed 5 exactly
    for a in (aug, build_augment("heavy")):
        a.set_random_seed(5)
        again = a(image=image, mask=mask)
        assert np.array_equal(again["image"], first["image"]) and np.array_equal(again["mask"], first["mask"])
        assert again["applied"] == first["applied"]
    assert not np.array_equal(other["image"], first["image"])


def test_transforms_fire_independently_and_keep_their_draws_when_others_change():
    image, mask = _burned_in()
    pair = Augmenter({"hflip": 0.5, "vflip": 0.5, "noise": 0.5, "blur": 0.5})
    alone = Augmenter({"hflip": 0.5, "noise": 0.5})
    both_flips = both_intensity = 0
    n = 400
    for seed in range(n):
        pair.set_random_seed(seed)
        fired = pair(image=image, mask=mask)["applied"]
        both_flips += {"hflip", "vflip"} <= set(fired)
        both_intensity += {"noise", "blur"} <= set(fired)
        alone.set_random_seed(seed)
        fired_alone = alone(image=image, mask=mask)["applied"]
        assert [f for f in fired if f in ("hflip", "noise")] == fired_alone
    # independent p=0.5 events co-occur a quarter of the time (sd ~0.022), not half
    assert 0.17 < both_flips / n < 0.33 and 0.17 < both_intensity / n < 0.33


@pytest.mark.parametrize("preset", ["light", "medium", "heavy"])
def test_presets_build_and_keep_shapes_and_dtypes(preset):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(48, 40, 3)).astype(np.float32)
    mask = np.zeros((48, 40), np.uint8)
    mask[10:30, 8:20] = 1
    aug = build_augment(preset)
    assert aug.probs == {k: v for k, v in PRESETS[preset].items() if v > 0}
    fired = set()
    for seed in range(12):
        aug.set_random_seed(seed)
        out = aug(image=image, mask=mask)
        assert out["image"].shape == image.shape and out["image"].dtype == np.float32
        assert out["mask"].shape == mask.shape and out["mask"].dtype == np.uint8
        assert set(np.unique(out["mask"])) <= {0, 1} and np.isfinite(out["image"]).all()
        fired |= set(out["applied"])
    assert fired <= set(PRESETS[preset]) and fired
    assert build_augment("none") is None


@pytest.mark.parametrize("name", list(INTENSITY))
def test_each_intensity_transform_fires_and_keeps_shape(name):
    rng = np.random.default_rng(1)
    image = rng.normal(size=(32, 32, 3)).astype(np.float32)
    mask = (rng.random((32, 32)) > 0.7).astype(np.uint8)
    aug = Augmenter({name: 1.0})
    aug.set_random_seed(0)
    out = aug(image=image, mask=mask)
    assert out["applied"] == [name]
    assert out["image"].shape == image.shape and out["image"].dtype == np.float32
    assert np.array_equal(out["mask"], mask)  # intensity never touches the mask
    assert not np.allclose(out["image"], image)


def test_overrides_remove_add_and_set_probabilities():
    light = build_augment("light", {"hflip": 0.0, "elastic": 0.3})
    assert "hflip" not in light.probs and light.probs["elastic"] == 0.3 and light.probs["affine"] == PRESETS["light"]["affine"]
    assert build_augment("light", {"hflip": 0, "affine": 0}) is None
    # hflip forced on, affine off: exactly a mirror image, mask mirrored with it
    image, mask = _burned_in()
    only_flip = build_augment("light", {"hflip": 1.0, "affine": 0.0})
    only_flip.set_random_seed(3)
    out = only_flip(image=image, mask=mask)
    assert np.array_equal(out["image"], image[:, ::-1]) and np.array_equal(out["mask"], mask[:, ::-1])


@pytest.mark.parametrize(
    "overrides, key",
    [({"sharpen": 0.5}, "augment.overrides.sharpen"), ({"hflip": 1.5}, "augment.overrides.hflip"),
     ({"noise": -0.1}, "augment.overrides.noise")],
)
def test_bad_overrides_name_the_key(overrides, key, one_line):
    with pytest.raises(MedsegError) as err:
        build_augment("medium", overrides)
    one_line(err, key)


def test_unknown_transform_error_lists_the_choices(one_line):
    with pytest.raises(MedsegError) as err:
        build_augment("light", {"rotate90": 0.5})
    one_line(err, "augment.overrides.rotate90", *TRANSFORMS)


def test_clahe_keeps_each_channel_range_and_shape():
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[:48, :56]
    low_contrast = 0.1 * np.sin(xx / 5.0) + 0.02 * rng.normal(size=(48, 56))
    image = np.stack([rng.normal(size=(48, 56)), 5 * low_contrast + 3, np.full((48, 56), 2.0)], axis=-1).astype(np.float32)
    out = clahe(image, clip_limit=2.0)
    assert out.shape == image.shape and out.dtype == np.float32
    for c in range(2):
        lo, hi = image[..., c].min(), image[..., c].max()
        assert out[..., c].min() >= lo - 1e-5 and out[..., c].max() <= hi + 1e-5
        assert not np.allclose(out[..., c], image[..., c], atol=1e-3)
    assert np.array_equal(out[..., 2], image[..., 2])  # a flat channel is left alone


def test_clahe_matches_opencv_on_a_full_range_channel():
    # a channel spanning exactly 0..255 maps to uint8 unchanged, so the result must be
    # albumentations' own (uint8) CLAHE with the same clip limit and tiles
    rng = np.random.default_rng(3)
    u8 = np.clip(rng.normal(100, 20, size=(64, 64)), 0, 255).astype(np.uint8)
    u8[0, 0], u8[0, 1] = 0, 255
    ref = A.CLAHE(clip_limit=(2.5, 2.5), tile_grid_size=(8, 8), p=1.0)(image=u8)["image"].reshape(64, 64)
    ours = clahe(u8.astype(np.float32)[..., None], clip_limit=2.5, tile_grid=(8, 8))[..., 0]
    np.testing.assert_allclose(ours, ref.astype(np.float32), atol=1e-3)
    assert not np.array_equal(ref, u8)
