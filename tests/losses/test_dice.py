import pytest
import torch
from monai.losses import DiceLoss as MonaiDice

from medseg.losses.dice import DiceLoss


def _inputs(seed: int, empty_first: bool = False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 1, 16, 16, generator=g) * 3
    t = (torch.rand(4, 1, 16, 16, generator=g) > 0.85).float()
    if empty_first:
        t[0] = 0
    return x, t


@pytest.mark.parametrize("reduction", ["per_image", "batch"])
@pytest.mark.parametrize("smooth", [1.0, 1e-5])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_monai(reduction, smooth, seed):
    x, t = _inputs(seed, empty_first=True)
    ref = MonaiDice(sigmoid=True, smooth_nr=smooth, smooth_dr=smooth, batch=reduction == "batch")(x, t)
    got = DiceLoss(reduction=reduction, smooth=smooth)(x, t)
    assert got.item() == pytest.approx(ref.item(), abs=1e-5)


def test_per_image_differs_from_batch():
    # one large and one tiny target: pooling lets the large one dominate
    x, t = _inputs(2)
    assert DiceLoss("per_image")(x, t).item() != pytest.approx(DiceLoss("batch")(x, t).item(), abs=1e-3)


def test_all_negative_batch_has_loss_and_gradient_pushing_down():
    x = torch.randn(2, 1, 16, 16).requires_grad_(True)
    loss = DiceLoss()(x, torch.zeros_like(x))
    s = torch.sigmoid(x.detach()).sum(dim=(1, 2, 3))
    # per image S / (S + 1), averaged
    assert loss.item() == pytest.approx((s / (s + 1)).mean().item(), rel=1e-6)
    loss.backward()
    assert (x.grad > 0).all()


def test_empty_image_with_empty_prediction_is_near_zero():
    x = torch.full((1, 1, 8, 8), -30.0)
    assert DiceLoss()(x, torch.zeros_like(x)).item() < 1e-9


def test_smooth_zero_empty_empty_is_perfect_not_nan():
    x = torch.full((1, 1, 8, 8), -1e4, requires_grad=True)
    loss = DiceLoss(smooth=0.0)(x, torch.zeros_like(x))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("smooth", [1.0, 0.0])
def test_finite_at_extremes(extreme_case, check_finite, smooth):
    check_finite(DiceLoss(smooth=smooth), *extreme_case)


@pytest.mark.parametrize("kw", [{"reduction": "mean"}, {"smooth": -1}])
def test_rejects_bad_parameters(kw):
    with pytest.raises(ValueError):
        DiceLoss(**kw)
