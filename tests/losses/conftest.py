"""Shared inputs for the loss tests: extreme logits/targets and a finiteness check."""

from __future__ import annotations

import pytest
import torch

SHAPE = (2, 1, 16, 16)


def _logits(kind: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    if kind == "random":
        return torch.randn(SHAPE, generator=g) * 20
    if kind == "plus_1e4":
        return torch.full(SHAPE, 1e4)
    if kind == "minus_1e4":
        return torch.full(SHAPE, -1e4)
    # +-1e4 with random signs: saturated, half of them confidently wrong
    return torch.where(torch.rand(SHAPE, generator=g) > 0.5, 1e4, -1e4)


def _target(kind: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    if kind == "random":
        return (torch.rand(SHAPE, generator=g) > 0.8).float()
    if kind == "empty":
        return torch.zeros(SHAPE)
    return torch.ones(SHAPE)


CASES = [(lk, tk) for lk in ("random", "plus_1e4", "minus_1e4", "pm_1e4") for tk in ("random", "empty", "full")]


@pytest.fixture(params=CASES, ids=[f"{a}-{b}" for a, b in CASES])
def extreme_case(request):
    """(logits float32, target float32) for every logit/target combination in CASES."""
    lk, tk = request.param
    return _logits(lk), _target(tk)


def _finite(loss_fn, leaf: torch.Tensor, target: torch.Tensor, autocast: bool) -> None:
    if autocast:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            value = loss_fn(leaf, target)
    else:
        value = loss_fn(leaf, target)
    value.backward()
    assert value.dtype == torch.float32
    assert torch.isfinite(value), f"loss value {value}"
    assert leaf.grad is not None and torch.isfinite(leaf.grad.float()).all(), "non-finite gradient"


@pytest.fixture
def check_finite():
    """check_finite(loss_fn, logits, target): value and gradient finite under bf16 autocast
    (float32 and bf16 logits) and with half-precision logits."""

    def run(loss_fn, logits: torch.Tensor, target: torch.Tensor) -> None:
        _finite(loss_fn, logits.clone().requires_grad_(True), target, autocast=True)
        _finite(loss_fn, logits.bfloat16().requires_grad_(True), target, autocast=True)
        _finite(loss_fn, logits.half().requires_grad_(True), target, autocast=False)

    return run
