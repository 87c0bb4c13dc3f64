import numpy as np
import pytest
import torch

from medseg.losses.bce import BCELoss


def _numpy_bce(x: np.ndarray, t: np.ndarray, pos_weight: float | None) -> float:
    p = 1.0 / (1.0 + np.exp(-x))
    pw = 1.0 if pos_weight is None else pos_weight
    return float(np.mean(-(pw * t * np.log(p) + (1 - t) * np.log(1 - p))))


@pytest.mark.parametrize("pos_weight", [None, 1.0, 9.0, 0.5])
def test_matches_numpy_reference(pos_weight):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 1, 12, 12, generator=g) * 3
    t = (torch.rand(3, 1, 12, 12, generator=g) > 0.7).float()
    got = BCELoss(pos_weight)(x, t).item()
    want = _numpy_bce(x.double().numpy(), t.double().numpy(), pos_weight)
    assert got == pytest.approx(want, abs=1e-5)


def test_pos_weight_scales_only_positive_pixels():
    x = torch.zeros(1, 1, 2, 2)
    t = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    # all pixels have loss log 2; one positive weighted 4 -> (4 + 3) / 4 * log 2
    assert BCELoss(4.0)(x, t).item() == pytest.approx(7 / 4 * np.log(2), abs=1e-6)


@pytest.mark.parametrize("bad", [0, -1.0, "x", True])
def test_rejects_bad_pos_weight(bad):
    with pytest.raises(ValueError, match="pos_weight"):
        BCELoss(bad)


@pytest.mark.parametrize("pos_weight", [None, 50.0])
def test_finite_at_extremes(extreme_case, check_finite, pos_weight):
    check_finite(BCELoss(pos_weight), *extreme_case)


def test_all_negative_gradient_pushes_logits_down():
    x = torch.randn(2, 1, 8, 8).requires_grad_(True)
    BCELoss()(x, torch.zeros_like(x)).backward()
    assert (x.grad > 0).all()
