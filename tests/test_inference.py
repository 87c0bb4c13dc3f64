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
