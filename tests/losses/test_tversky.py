import pytest
import torch
from monai.losses import TverskyLoss as MonaiTversky

from medseg.losses.focal_tversky import FocalTverskyLoss
from medseg.losses.tversky import TverskyLoss


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 1, 16, 16, generator=g) * 3
    t = (torch.rand(4, 1, 16, 16, generator=g) > 0.85).float()
    t[1] = 0  # one all-negative image
    return x, t


def _monai(fp, fn, smooth, reduction, red="mean"):
    return MonaiTversky(sigmoid=True, alpha=fp, beta=fn, smooth_nr=smooth, smooth_dr=smooth, batch=reduction == "batch", reduction=red)


@pytest.mark.parametrize("fp,fn", [(0.3, 0.7), (0.7, 0.3), (0.5, 0.5), (0.0, 1.0)])
@pytest.mark.parametrize("reduction", ["per_image", "batch"])
@pytest.mark.parametrize("smooth", [1.0, 1e-5])
def test_tversky_matches_monai(fp, fn, reduction, smooth):
    x, t = _inputs()
    ref = _monai(fp, fn, smooth, reduction)(x, t)
    got = TverskyLoss(fp_weight=fp, fn_weight=fn, smooth=smooth, reduction=reduction)(x, t)
    assert got.item() == pytest.approx(ref.item(), abs=1e-5)


@pytest.mark.parametrize("gamma", [1.0, 4 / 3, 3.0, 0.75])
@pytest.mark.parametrize("reduction", ["per_image", "batch"])
def test_focal_tversky_is_monai_tversky_to_one_over_gamma(gamma, reduction):
    x, t = _inputs(1)
    per = _monai(0.3, 0.7, 1.0, reduction, red="none")(x, t)  # (B,1) or (1,1) scores
    ref = (per ** (1 / gamma)).mean()
    got = FocalTverskyLoss(fp_weight=0.3, fn_weight=0.7, gamma=gamma, reduction=reduction)(x, t)
    assert got.item() == pytest.approx(ref.item(), abs=1e-5)


def test_equal_weights_half_is_dice():
    from medseg.losses.dice import DiceLoss

    x, t = _inputs(2)
    # (tp + s) / (tp + fp/2 + fn/2 + s) is Dice with smoothing 2s
    assert TverskyLoss(fp_weight=0.5, fn_weight=0.5, smooth=0.5)(x, t).item() == pytest.approx(DiceLoss()(x, t).item(), abs=1e-6)


def test_fn_weight_penalises_missed_foreground_more():
    t = torch.zeros(1, 1, 4, 4)
    t[..., :2, :] = 1
    miss = torch.where(t > 0, -3.0, -3.0)  # predicts nothing: all errors are false negatives
    recall_heavy = TverskyLoss(fp_weight=0.3, fn_weight=0.7)(miss, t).item()
    precision_heavy = TverskyLoss(fp_weight=0.7, fn_weight=0.3)(miss, t).item()
    assert recall_heavy > precision_heavy


@pytest.mark.parametrize("cls", [TverskyLoss, FocalTverskyLoss])
def test_all_negative_batch_gradient_pushes_logits_down(cls):
    x = torch.randn(2, 1, 16, 16).requires_grad_(True)
    loss = cls()(x, torch.zeros_like(x))
    assert loss.item() > 0
    loss.backward()
    assert (x.grad > 0).all()


def test_zero_fp_weight_ignores_all_negative_image():
    # documented: with fp_weight=0 false positives cost nothing, so an empty image teaches nothing
    x = torch.randn(1, 1, 8, 8).requires_grad_(True)
    loss = TverskyLoss(fp_weight=0.0, fn_weight=1.0)(x, torch.zeros_like(x))
    loss.backward()
    assert loss.item() == 0.0 and (x.grad == 0).all()


@pytest.mark.parametrize("cls", [TverskyLoss, FocalTverskyLoss])
def test_aliases_follow_monai_and_warn(cls):
    x, t = _inputs(3)
    explicit = cls(fp_weight=0.2, fn_weight=0.8)(x, t)
    with pytest.warns(UserWarning, match=r"alpha = fp_weight \(weight of false positives\)"):
        aliased = cls(alpha=0.2, beta=0.8)
    assert aliased.fp_weight == 0.2 and aliased.fn_weight == 0.8
    assert aliased(x, t).item() == pytest.approx(explicit.item(), abs=1e-7)


@pytest.mark.parametrize("kw", [{"alpha": 0.3, "fp_weight": 0.3}, {"beta": 0.7, "fn_weight": 0.7}])
def test_alias_and_name_together_is_an_error(kw):
    with pytest.raises(ValueError, match="not both"):
        TverskyLoss(**kw)


@pytest.mark.parametrize(
    "cls,kw",
    [
        (TverskyLoss, {"fp_weight": -0.1}),
        (TverskyLoss, {"fp_weight": 0.0, "fn_weight": 0.0}),
        (TverskyLoss, {"reduction": "sum"}),
        (FocalTverskyLoss, {"gamma": 0.0}),
    ],
)
def test_rejects_bad_parameters(cls, kw):
    with pytest.raises(ValueError):
        cls(**kw)


@pytest.mark.parametrize(
    "make",
    [lambda: TverskyLoss(), lambda: TverskyLoss(smooth=0.0), lambda: FocalTverskyLoss(gamma=4 / 3), lambda: FocalTverskyLoss(gamma=3.0, smooth=0.0)],
    ids=["tversky", "tversky-smooth0", "focal_tversky", "focal_tversky-g3-smooth0"],
)
def test_finite_at_extremes(extreme_case, check_finite, make):
    check_finite(make(), *extreme_case)
