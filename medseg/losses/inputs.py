"""Input handling shared by every loss: float32 upcast, shape check, reduction axes."""

from __future__ import annotations

import torch

REDUCTIONS = ("per_image", "batch")


def as_float32(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (logits, target) as float32 tensors of the same shape.

    Half or bfloat16 logits (mixed precision) are upcast first, so sums over a whole image
    and the log-sigmoid terms never overflow or lose the small foreground signal.

    Args:
        logits: raw network outputs, (B, 1, H, W) or any shape with batch first.
        target: binary mask of the same shape (any dtype).
    """
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in shape")
    return logits.float(), target.float()


def check_reduction(reduction: str) -> str:
    """Validate a `per_image` / `batch` reduction name (raises ValueError)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)} (got {reduction!r})")
    return reduction


def sum_dims(x: torch.Tensor, reduction: str) -> tuple[int, ...]:
    """Axes to sum over: all but the batch axis for `per_image`, all axes for `batch`.

    Args:
        x: tensor with the batch axis first.
        reduction: `per_image` or `batch`.
    """
    return tuple(range(1, x.ndim)) if reduction == "per_image" else tuple(range(x.ndim))


def check_number(name: str, value, low: float = 0.0, high: float | None = None, low_inclusive: bool = True) -> float:
    """Return `value` as float, or raise ValueError naming the parameter if out of range.

    Args:
        name: parameter name used in the message.
        value: the configured value.
        low, high: allowed range (high=None: unbounded).
        low_inclusive: whether `low` itself is allowed.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be a finite number (got {value!r})")
    ok_low = value >= low if low_inclusive else value > low
    if not ok_low or (high is not None and value > high):
        rng = f"{'[' if low_inclusive else '('}{low:g}, {'inf)' if high is None else f'{high:g}]'}"
        raise ValueError(f"{name} must be in {rng} (got {value!r})")
    return float(value)
