import numpy as np
import pytest
import torch

from medseg.losses.lovasz import LovaszHingeLoss


def _numpy_lovasz_hinge_flat(logits: np.ndarray, labels: np.ndarray) -> float:
    """Berman et al. 2018, Algorithm 1 with the hinge errors, written out loop by loop."""
    signs = 2.0 * labels - 1.0
    errors = 1.0 - logits * signs
    order = np.argsort(-errors, kind="stable")
    errors_sorted = errors[order]
    gt_sorted = labels[order]
    p = len(gt_sorted)
    gts = gt_sorted.sum()
    jaccard = np.empty(p)
    for i in range(p):
        inter = gts - gt_sorted[: i + 1].sum()
        union = gts + (1.0 - gt_sorted[: i + 1]).sum()
        jaccard[i] = 1.0 - inter / union
    grad = jaccard.copy()
    grad[1:] = jaccard[1:] - jaccard[:-1]
    return float(np.sum(np.maximum(errors_sorted, 0.0) * grad))


def _reference(x: torch.Tensor, t: torch.Tensor, per_image: bool) -> float:
    xs, ts = x.double().numpy(), t.double().numpy()
    if per_image:
        return float(np.mean([_numpy_lovasz_hinge_flat(a.ravel(), b.ravel()) for a, b in zip(xs, ts)]))
    return _numpy_lovasz_hinge_flat(xs.ravel(), ts.ravel())


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("reduction", ["per_image", "batch"])
def test_matches_numpy_reference(seed, reduction):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 1, 10, 10, generator=g) * 2
    t = (torch.rand(3, 1, 10, 10, generator=g) > 0.8).float()
    t[2] = 0  # an all-empty image
    got = LovaszHingeLoss(reduction)(x, t).item()
    assert got == pytest.approx(_reference(x, t, reduction == "per_image"), abs=1e-5)


def test_perfect_margin_gives_zero():
    t = (torch.rand(2, 1, 8, 8) > 0.5).float()
    x = (2 * t - 1) * 5.0
    assert LovaszHingeLoss()(x, t).item() == 0.0


def test_empty_image_is_hinge_of_max_logit():
    # documented behaviour: relu(1 + max logit), gradient +1 on the most confident false positive only
    x = torch.full((1, 1, 4, 4), -3.0)
    x[0, 0, 1, 2] = 0.5
    x.requires_grad_(True)
    loss = LovaszHingeLoss()(x, torch.zeros_like(x))
    assert loss.item() == pytest.approx(1.5)
    loss.backward()
    expected = torch.zeros_like(x)
    expected[0, 0, 1, 2] = 1.0
    assert torch.equal(x.grad, expected)


def test_empty_image_with_margin_costs_nothing():
    x = torch.full((1, 1, 4, 4), -1.5)
    assert LovaszHingeLoss()(x, torch.zeros_like(x)).item() == 0.0


def test_finite_at_extremes(extreme_case, check_finite):
    check_finite(LovaszHingeLoss(), *extreme_case)


def test_rejects_bad_reduction():
    with pytest.raises(ValueError):
        LovaszHingeLoss("mean")
