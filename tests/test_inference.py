"""Inference: dihedral TTA maps every prediction back exactly, sets share their passes, ensembles average probabilities."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medseg.data.tta import DIHEDRAL, FLIP
from medseg.inference import predict_prob_sets, predict_probs, tta_set


class PixelNet(nn.Module):
    """A 1x1 convolution: equivariant to every rotation and flip, so TTA must give back exactly its plain prediction."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[[[0.7]], [[-1.3]]]]))
            self.conv.bias.fill_(0.2)

    def forward(self, x):
        return self.conv(x)


class RowNet(nn.Module):
    """Not equivariant: the logit is the row index, so each transform's prediction differs and the mean is known."""

    def forward(self, x):
        h = x.shape[-2]
        rows = torch.arange(h, dtype=torch.float32).view(1, 1, h, 1).expand(x.shape[0], 1, h, x.shape[-1])
        return (rows - h / 2) / h


def test_dihedral_tta_of_an_equivariant_model_is_exact():
    x = np.random.default_rng(0).normal(size=(3, 2, 8, 6)).astype(np.float32)  # not square: rotations change the shape
    net = PixelNet()
    plain = predict_probs(net, x)
    for names in (FLIP, DIHEDRAL, ("rot90",), ("transpose", "antitranspose")):
        assert np.allclose(predict_probs(net, x, tta=names), plain, atol=1e-6), names


def test_each_transform_is_mapped_back_and_averaged_in_probability_space():
    x = np.zeros((1, 1, 6, 6), np.float32)
    net = RowNet()
    rows = (np.arange(6) - 3) / 6
    p_rows = 1 / (1 + np.exp(-rows))[:, None] * np.ones((1, 6))  # the plain prediction, a function of the row
    got = predict_probs(net, x, tta=("identity", "vflip"))
    # vflip: the network sees the rows reversed, predicts by its own rows, and the map is flipped back
    expect = (p_rows + p_rows[::-1]) / 2
    assert np.allclose(got[0], expect, atol=1e-6)
    got_rot = predict_probs(net, x, tta=("rot90",))
    assert np.allclose(got_rot[0], np.rot90(p_rows, -1), atol=1e-6)  # the rows became columns, mapped back


def test_sets_share_passes_and_equal_separate_calls():
    x = np.random.default_rng(1).normal(size=(4, 1, 8, 8)).astype(np.float32)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1))
    sets = [("identity",), FLIP, DIHEDRAL]
    together = predict_prob_sets(net, x, sets, batch_size=3)
    for names, got in zip(sets, together):
        assert np.allclose(got, predict_probs(net, x, tta=names, batch_size=2), atol=1e-6)


def test_an_ensemble_of_one_is_that_network_and_of_two_their_mean():
    x = np.random.default_rng(2).normal(size=(2, 1, 8, 8)).astype(np.float32)
    a = nn.Conv2d(1, 1, 3, padding=1)
    b = nn.Conv2d(1, 1, 3, padding=1)
    assert np.array_equal(predict_probs([a], x), predict_probs(a, x))
    assert np.allclose(predict_probs([a, b], x), (predict_probs(a, x) + predict_probs(b, x)) / 2, atol=1e-7)


def test_tta_values():
    assert tta_set(False) == ("identity",) and tta_set(True) == FLIP and tta_set(["hflip", "hflip"]) == ("hflip",)
    with pytest.raises(ValueError, match="unknown TTA transform 'spin'"):
        tta_set(["spin"])


# ---------------------------------------------------------------------------------------
# Sliding windows (eval.sliding_window)


class ConvNet(nn.Module):
    """3x3 convolutions with zero padding: a window's border pixels see its edge, so stitching order matters."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 1, 3, padding=1)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


def _window(roi, overlap=0.5, mode="gaussian"):
    from medseg.config import SlidingWindowConfig

    return SlidingWindowConfig(roi_size=roi, overlap=overlap, mode=mode)


@pytest.mark.parametrize("mode", ["gaussian", "constant"])
def test_an_image_the_size_of_one_window_predicts_as_without_windows(mode):
    x = np.random.default_rng(1).normal(size=(3, 2, 24, 32)).astype(np.float32)
    net = ConvNet()
    plain = predict_probs(net, x)
    windowed = predict_probs(net, x, batch_size=2, window=_window((24, 32), mode=mode))
    np.testing.assert_allclose(windowed, plain, rtol=0, atol=1e-6)


def test_windows_that_tile_the_image_give_the_tiles_own_predictions():
    """Constant blending without overlap: each pixel is the prediction of the one tile holding it (computed here tile by tile)."""
    x = np.random.default_rng(2).normal(size=(2, 2, 48, 64)).astype(np.float32)
    net = ConvNet()
    got = predict_probs(net, x, batch_size=3, window=_window((24, 32), overlap=0.0, mode="constant"))
    want = np.zeros((2, 48, 64), np.float32)
    for y in (0, 24):
        for xx in (0, 32):
            want[:, y : y + 24, xx : xx + 32] = predict_probs(net, np.ascontiguousarray(x[:, :, y : y + 24, xx : xx + 32]))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert np.abs(got - predict_probs(net, x)).max() > 1e-4  # the tiles' borders differ from one pass: the windows are real


def test_gaussian_windows_with_overlap_blend_and_tta_turns_a_non_square_window():
    x = np.random.default_rng(3).normal(size=(2, 2, 40, 56)).astype(np.float32)
    net = PixelNet()  # a 1x1 network: every window agrees, so any blend of them equals one pass
    plain = predict_probs(net, x)
    for tta in (False, list(DIHEDRAL)):
        got = predict_probs(net, x, window=_window((16, 24), overlap=0.5), tta=tta)
        assert got.shape == plain.shape
        np.testing.assert_allclose(got, plain, rtol=0, atol=1e-5)


def test_the_short_last_batch_is_padded_to_one_shape_and_scores_as_images_alone():
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1))
    seen = []

    class Spy(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = conv

        def forward(self, x):
            seen.append(x.shape[0])
            return self.net(x)

    x = np.random.default_rng(1).normal(size=(11, 2, 8, 8)).astype(np.float32)
    got = predict_probs(Spy(), x, batch_size=4)
    assert seen == [4, 4, 4]  # 4 + 4 + 3 padded to 4: one batch shape whatever the length
    alone = np.concatenate([predict_probs(conv, x[i: i + 1], batch_size=1) for i in range(11)])
    np.testing.assert_allclose(got, alone, atol=1e-6)
    # fewer images than one batch are not padded up to it (one image is not run as sixteen)
    seen.clear()
    predict_probs(Spy(), x[:3], batch_size=16)
    assert seen == [3]
