"""data.copy_paste: what is pasted, where, how often, and that a run replays it."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.data.copy_paste import FEATHER_SIGMA, SCALE, STREAM_PASTE, LesionCopyPaste, build_copy_paste
from medseg.data.dataset import SegDataset


def _set(n_pos: int = 3, n_empty: int = 2, size: int = 96):
    """Targets have a lesion in the top-left corner (value 0 around, 0 inside); donors a 12x12 lesion of value 5 on -3."""
    images = np.zeros((n_pos + n_empty, 2, size, size), np.float32)
    masks = np.zeros((n_pos + n_empty, size, size), np.uint8)
    for i in range(n_pos):
        images[i] = -3.0
        y, x = 40 + 4 * i, 30 + 5 * i
        images[i, :, y : y + 12, x : x + 12] = 5.0
        masks[i, y : y + 12, x : x + 12] = 1
    return images, masks


def _target(size: int = 96):
    img = np.zeros((2, size, size), np.float32)
    mask = np.zeros((size, size), np.uint8)
    mask[2:10, 2:10] = 1
    return img, mask


def test_the_pasted_lesion_is_a_donor_component_scaled_with_its_pixels_and_nothing_else_changes():
    images, masks = _set()
    paste = LesionCopyPaste(1.0, donors=[0, 1, 2])
    m = int(np.ceil(3 * FEATHER_SIGMA))
    seen = 0
    for seed in range(30):
        img, mask = _target()
        out, new_mask, pasted = paste(img, mask, idx=99, images=images, masks=masks, rng=np.random.default_rng(seed))
        if not pasted:
            continue
        seen += 1
        added = (new_mask > 0) & ~(mask > 0)
        assert np.array_equal(new_mask[mask > 0], mask[mask > 0])  # the target's own lesion is kept
        area = int(added.sum())
        lo, hi = (12 * SCALE[0] - 1) ** 2, (12 * SCALE[1] + 1) ** 2
        assert lo <= area <= hi, area
        ys, xs = np.nonzero(added)
        # the pasted lesion keeps clear of the target's lesion (rows/cols 2..9) by the feather's width
        assert ys.min() > 9 + m or xs.min() > 9 + m
        # deep inside the pasted lesion the image is the donor's lesion value; far outside, untouched
        core = added.copy()
        for _ in range(m + 1):
            core[1:-1, 1:-1] &= core[:-2, 1:-1] & core[2:, 1:-1] & core[1:-1, :-2] & core[1:-1, 2:]
        if core.any():
            assert np.allclose(out[:, core], 5.0, atol=1e-4)
        far = np.ones_like(added)
        far[max(0, ys.min() - 2 * m) : ys.max() + 2 * m + 1, max(0, xs.min() - 2 * m) : xs.max() + 2 * m + 1] = False
        assert np.array_equal(out[:, far], img[:, far])
        assert out.dtype == np.float32 and out.shape == img.shape
    assert seen >= 25  # placement fails only when no spot is free, which here is rare


def test_an_empty_image_stays_empty_and_p_zero_or_no_donor_builds_nothing():
    images, masks = _set()
    paste = LesionCopyPaste(1.0, donors=[0, 1, 2])
    empty_img, empty_mask = images[3], masks[3]
    for seed in range(10):
        out, m, pasted = paste(empty_img, empty_mask, 3, images, masks, np.random.default_rng(seed))
        assert not pasted and out is empty_img and m is empty_mask
    assert build_copy_paste(0.0, np.array([True, False])) is None
    assert build_copy_paste(0.5, np.array([False, False])) is None
    assert isinstance(build_copy_paste(0.5, np.array([True, False])), LesionCopyPaste)


def test_an_image_is_never_its_own_donor():
    images, masks = _set(n_pos=1, n_empty=1)
    paste = build_copy_paste(1.0, masks.reshape(2, -1).any(axis=1))
    for seed in range(10):
        _, _, pasted = paste(images[0], masks[0], 0, images, masks, np.random.default_rng(seed))
        assert not pasted


def test_it_fires_with_its_probability():
    images, masks = _set()
    paste = LesionCopyPaste(0.3, donors=[0, 1, 2])
    img, mask = _target(160)  # plenty of room: placement never fails
    fired = [paste(img, mask, 99, images, masks, np.random.default_rng(s))[2] for s in range(600)]
    # binomial(600, 0.3): sd 11.2, so 180 +- 45 is a 4-sigma band
    assert 135 <= sum(fired) <= 225


def test_a_lesion_larger_than_the_target_is_shrunk_to_fit():
    images = np.full((1, 1, 64, 64), 2.0, np.float32)
    masks = np.ones((1, 64, 64), np.uint8)
    paste = LesionCopyPaste(1.0, donors=[0])
    img, mask = np.zeros((1, 40, 40), np.float32), np.zeros((40, 40), np.uint8)
    mask[0, 0] = 1
    for seed in range(5):
        out, m, pasted = paste(img, mask, 7, images, masks, np.random.default_rng(seed))
        assert m.shape == (40, 40) and out.shape == (1, 40, 40)  # no crash, shapes kept; placement may fail


def test_the_dataset_replays_a_paste_from_the_sample_seed_and_skips_it_without_one():
    images, masks = _set()
    ds = SegDataset(images, masks, None, LesionCopyPaste(1.0, donors=[0, 1, 2]))
    x1, y1, _ = ds[(0, 1234)]
    x2, y2, _ = ds[(0, 1234)]
    assert np.array_equal(x1.numpy(), x2.numpy()) and np.array_equal(y1.numpy(), y2.numpy())
    assert y1.sum() > masks[0].sum()  # one more lesion
    # the same draw as the copy-paste step called with the dataset's stream
    _, expect, _ = ds.paste(images[0], masks[0], 0, images, masks, np.random.default_rng([1234, STREAM_PASTE]))
    assert np.array_equal(y1.numpy()[0], expect.astype(np.float32))
    placements = {tuple(np.argwhere(ds[(0, s)][1].numpy()[0] > masks[0]).min(axis=0)) for s in range(8) if ds[(0, s)][1].sum() > masks[0].sum()}
    assert len(placements) > 1
    x0, y0, _ = ds[0]  # no augmentation seed (validation-style access): no paste
    assert np.array_equal(y0.numpy()[0], masks[0].astype(np.float32))


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_a_probability_outside_0_1_is_a_config_error_naming_the_key(p):
    from medseg.config import load_config
    from medseg.errors import MedsegError

    with pytest.raises(MedsegError, match="augment.copy_paste"):
        load_config(None, [f"augment.copy_paste={p}"])
