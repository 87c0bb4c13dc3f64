import pytest
import torch
from monai.losses import FocalLoss as MonaiFocal

from medseg.losses.focal import FocalLoss


@pytest.mark.parametrize("alpha", [None, 0.25, 0.75])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_matches_monai(alpha, gamma):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 1, 16, 16, generator=g) * 4
    t = (torch.rand(3, 1, 16, 16, generator=g) > 0.8).float()
    ref = MonaiFocal(use_softmax=False, gamma=gamma, alpha=alpha, reduction="mean")(x, t)
    assert FocalLoss(gamma=gamma, alpha=alpha)(x, t).item() == pytest.approx(ref.item(), abs=1e-5)


def test_alpha_weighs_foreground():
    # same confidence on one foreground and one background pixel: alpha moves weight to the foreground
    x = torch.tensor([[[[0.0, 0.0]]]])
    t = torch.tensor([[[[1.0, 0.0]]]])
    base = FocalLoss(gamma=2.0)(x, t).item()
    assert FocalLoss(gamma=2.0, alpha=0.5)(x, t).item() == pytest.approx(base * 0.5, rel=1e-6)
    fg_only = FocalLoss(gamma=2.0, alpha=1.0)(x, t).item()
    assert fg_only == pytest.approx(FocalLoss(gamma=2.0)(x[..., :1], t[..., :1]).item() / 2, rel=1e-6)


def test_gamma_zero_is_bce():
    x = torch.randn(2, 1, 8, 8) * 5
    t = (torch.rand(2, 1, 8, 8) > 0.5).float()
    want = torch.nn.functional.binary_cross_entropy_with_logits(x, t)
    assert FocalLoss(gamma=0.0)(x, t).item() == pytest.approx(want.item(), rel=1e-6)


@pytest.mark.parametrize("params", [{"gamma": 2.0}, {"gamma": 0.5, "alpha": 0.25}])
def test_finite_at_extremes(extreme_case, check_finite, params):
    check_finite(FocalLoss(**params), *extreme_case)


def test_all_negative_gradient_pushes_logits_down():
    x = torch.randn(2, 1, 8, 8).requires_grad_(True)
    FocalLoss(alpha=0.25)(x, torch.zeros_like(x)).backward()
    assert (x.grad > 0).all()


@pytest.mark.parametrize("kw", [{"alpha": 1.5}, {"alpha": -0.1}, {"gamma": -1}, {"gamma": "2"}])
def test_rejects_bad_parameters(kw):
    with pytest.raises(ValueError):
        FocalLoss(**kw)
