import warnings

import pytest
import torch
import torch.nn.functional as F

from medseg.errors import MedsegError
from medseg.losses import LOSSES, CombinedLoss, build_loss, register_loss, validate_loss_spec
from medseg.losses.bce import BCELoss
from medseg.losses.dice import DiceLoss
from medseg.losses.focal import FocalLoss
from medseg.losses.focal_tversky import FocalTverskyLoss

EXAMPLE_SIMPLE = {"bce": 3, "dice": 1, "focal": 4}
EXAMPLE_PARAMS = {
    "focal_tversky": {"weight": 0.5, "fp_weight": 0.3, "fn_weight": 0.7, "gamma": 1.33},
    "dice": 0.3,
    "bce": {"weight": 0.2, "pos_weight": "auto"},
}


def _batch(seed=0, shape=(2, 1, 16, 16)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * 2, (torch.rand(shape, generator=g) > 0.8).float()


def test_every_loss_is_registered():
    assert {"bce", "dice", "focal", "tversky", "focal_tversky", "lovasz"} <= set(LOSSES)


def test_deep_supervision_name_is_reserved():
    with pytest.raises(ValueError, match="reserved"):
        register_loss("deep_supervision")


def test_combination_is_the_weighted_sum_and_logs_terms():
    x, t = _batch()
    loss = build_loss(EXAMPLE_SIMPLE)
    value = loss(x, t)
    parts = {"bce": BCELoss()(x, t), "dice": DiceLoss()(x, t), "focal": FocalLoss()(x, t)}
    assert value.item() == pytest.approx(sum(EXAMPLE_SIMPLE[k] * v.item() for k, v in parts.items()), rel=1e-6)
    assert set(loss.last_terms) == set(parts)
    for k, v in parts.items():
        assert loss.last_terms[k] == pytest.approx(v.item(), rel=1e-6)


def test_parameterised_example_builds_with_its_parameters():
    validate_loss_spec(EXAMPLE_PARAMS)
    loss = build_loss(EXAMPLE_PARAMS, pos_fraction=0.2)
    by_name = dict(zip(loss.names, zip(loss.weights, loss.terms)))
    w, ft = by_name["focal_tversky"]
    assert w == 0.5 and isinstance(ft, FocalTverskyLoss)
    assert (ft.fp_weight, ft.fn_weight, ft.gamma) == (0.3, 0.7, 1.33)
    assert by_name["dice"][0] == 0.3
    assert by_name["bce"][0] == 0.2 and by_name["bce"][1].pos_weight == pytest.approx(4.0)
    x, t = _batch(1)
    want = 0.5 * ft(x, t) + 0.3 * DiceLoss()(x, t) + 0.2 * BCELoss(4.0)(x, t)
    assert loss(x, t).item() == pytest.approx(want.item(), rel=1e-6)


@pytest.mark.parametrize("fraction,expected", [(0.1, 9.0), (0.5, 1.0), (1e-4, 100.0), (None, 99.0)])
def test_pos_weight_auto(fraction, expected):
    loss = build_loss({"bce": {"pos_weight": "auto"}}, pos_fraction=fraction)
    assert loss.terms[0].pos_weight == pytest.approx(expected)


def test_config_accepts_the_examples():
    from medseg.config import config_from_dict

    assert config_from_dict({"loss": EXAMPLE_SIMPLE}).loss == EXAMPLE_SIMPLE
    assert config_from_dict({"loss": EXAMPLE_PARAMS}).loss["dice"] == 0.3


def _manual_deep(outputs, t, weights):
    total = 0.0
    for lg, w in zip(outputs, weights):
        tt = F.adaptive_max_pool2d(t, lg.shape[2:])
        total = total + w * (BCELoss()(lg, tt) + DiceLoss()(lg, tt))
    return total / sum(weights[: len(outputs)])


def test_deep_supervision_from_spec_entry():
    spec = {"bce": 1, "dice": 1, "deep_supervision": [1.0, 0.4, 0.2, 0.1]}
    validate_loss_spec(spec)
    x, t = _batch(2, (2, 1, 32, 32))
    outputs = [x, x[..., ::2, ::2], x[..., ::4, ::4], x[..., ::8, ::8]]
    loss = build_loss(spec)
    assert loss.deep_supervision == [1.0, 0.4, 0.2, 0.1]
    assert loss(outputs, t).item() == pytest.approx(_manual_deep(outputs, t, [1.0, 0.4, 0.2, 0.1]).item(), rel=1e-6)
    # logged terms are the full-resolution ones
    assert loss.last_terms["dice"] == pytest.approx(DiceLoss()(x, t).item(), rel=1e-6)


def test_deep_supervision_argument_wins_and_fewer_outputs_use_leading_weights():
    x, t = _batch(3, (1, 1, 16, 16))
    loss = build_loss({"bce": 1, "dice": 1, "deep_supervision": [1.0, 0.1]}, deep_supervision=[1.0, 0.5, 0.25])
    assert loss.deep_supervision == [1.0, 0.5, 0.25]
    outputs = [x, x[..., ::2, ::2]]
    assert loss(outputs, t).item() == pytest.approx(_manual_deep(outputs, t, [1.0, 0.5]).item(), rel=1e-6)


def test_deep_supervision_more_outputs_than_weights_is_an_error():
    x, t = _batch(4, (1, 1, 16, 16))
    loss = build_loss({"dice": 1}, deep_supervision=[1.0, 0.5])
    with pytest.raises(ValueError, match="3 outputs"):
        loss([x, x[..., ::2, ::2], x[..., ::4, ::4]], t)


def test_deep_supervision_keeps_a_one_pixel_lesion_at_coarse_scales():
    t = torch.zeros(1, 1, 16, 16)
    t[0, 0, 5, 7] = 1
    coarse_logits = torch.full((1, 1, 2, 2), -10.0)
    loss = build_loss({"bce": 1}, deep_supervision=[1.0, 1.0])
    full = torch.full((1, 1, 16, 16), -10.0)
    value = loss([full, coarse_logits], t)
    # the coarse head is penalised for missing the lesion, so the mean exceeds the full-scale term
    assert value.item() > loss.last_terms["bce"] * 1.5


@pytest.mark.parametrize(
    "bad,match",
    [
        ([], "non-empty list"),
        ([1.0, -0.5], ">= 0"),
        ([0.0, 1.0], "first"),
        ("1,0.5", "non-empty list"),
    ],
)
def test_bad_deep_supervision_weights(bad, match):
    with pytest.raises(ValueError, match=r"^loss\.deep_supervision: .*" + match):
        validate_loss_spec({"dice": 1, "deep_supervision": bad})
    with pytest.raises(MedsegError, match="loss.deep_supervision"):
        build_loss({"dice": 1, "deep_supervision": bad})


def test_spec_with_only_deep_supervision_is_rejected():
    with pytest.raises(ValueError, match="^loss: at least one term"):
        validate_loss_spec({"deep_supervision": [1.0]})


def test_unknown_loss_message_names_key_and_suggests():
    with pytest.raises(ValueError, match=r"^loss\.dcie: unknown loss \(did you mean 'dice'\?\); choose from bce, dice,"):
        validate_loss_spec({"dcie": 1})
    with pytest.raises(MedsegError, match=r"loss\.dcie: unknown loss"):
        build_loss({"dcie": 1})


@pytest.mark.parametrize(
    "spec,match",
    [
        ({"focal": {"alpha": 2}}, r"^loss\.focal: alpha must be in \[0, 1\]"),
        ({"tversky": {"alpha": 0.3, "fp_weight": 0.3}}, r"^loss\.tversky: give fp_weight or its alias alpha, not both"),
        ({"dice": {"nonsense": 1}}, r"^loss\.dice: "),
        ({"dice": -1}, r"^loss\.dice: weight must be >= 0"),
        ({"bce": {"pos_weight": "sometimes"}}, r"^loss\.bce: pos_weight"),
    ],
)
def test_bad_parameters_name_the_key(spec, match):
    with pytest.raises(ValueError, match=match):
        validate_loss_spec(spec)


def test_alias_warning_through_the_spec():
    with pytest.warns(UserWarning, match="beta = fn_weight"):
        validate_loss_spec({"focal_tversky": {"alpha": 0.3, "beta": 0.7}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        validate_loss_spec({"focal_tversky": {"fp_weight": 0.3, "fn_weight": 0.7}})


def test_combined_loss_runs_in_float32_under_autocast():
    x, t = _batch(5)
    loss = build_loss(EXAMPLE_PARAMS, pos_fraction=0.2)
    ref = loss(x, t).item()
    leaf = x.bfloat16().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(leaf, t)
    value.backward()
    assert value.dtype == torch.float32
    assert torch.isfinite(leaf.grad.float()).all()
    # only the bf16 rounding of the inputs differs
    assert value.item() == pytest.approx(ref, rel=2e-2)


def test_combined_loss_module_is_usable_directly():
    x, t = _batch(6)
    combo = CombinedLoss([("dice", 2.0, DiceLoss())])
    assert combo(x, t).item() == pytest.approx(2 * DiceLoss()(x, t).item(), rel=1e-6)
