"""Progressive resizing (`train.progressive`): the first epochs train on smaller copies of each batch.

The side of the training inputs rises linearly from `start_scale` of the full side at the first
epoch to the full side after `share` of the run's epochs; the rest train at full size, and
validation is always at full size. Each side is rounded to a multiple of the network's output
stride. The small epochs are cheaper (a convolution's cost is linear in the pixels), so a time
budget holds more epochs: the plan counts an epoch's training steps (less their fixed cost) in
proportion to its pixel share, and `callbacks.BudgetSchedule` corrects the count from the epochs'
measured times (`train_cost_bounds`, `epochs_within`).

Resizing happens on the batch inside the training step, after loading and augmentation, so the
cache, the sampler and the augmentation are unchanged. Images are resized bilinearly (antialiased
in 2D); masks by area averaging, so a structure thinner than the new pixel keeps its share of
coverage as a soft target instead of vanishing (nearest) or thickening (max pooling).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F


def _sides(size: Sequence[int], epoch: np.ndarray, epochs: int, start_scale: float, share: float, multiple: int) -> np.ndarray:
    """(len(epoch), len(size)) training sides of the given epochs (0-based) of a run of `epochs`: the scale is
    `start_scale` at epoch 0, rising linearly to 1 at epoch round(share * epochs) and staying there; each side
    is rounded (half to even) to a multiple of `multiple`, at least one multiple, at most the side itself."""
    ramp = max(1, int(round(share * epochs)))
    e = np.asarray(epoch, np.float64)
    scale = np.where(e >= ramp, 1.0, start_scale + (1.0 - start_scale) * e / ramp)
    full = np.asarray([int(v) for v in size], np.float64)
    return np.clip(np.round(scale[:, None] * full / multiple) * multiple, multiple, full)


def progressive_size(size: Sequence[int], epoch: int, epochs: int, start_scale: float, share: float, multiple: int) -> tuple[int, ...]:
    """The training input size of epoch `epoch` of a run of `epochs` (see `_sides`)."""
    return tuple(int(v) for v in _sides(size, np.array([epoch]), epochs, start_scale, share, multiple)[0])


def pixel_shares(size: Sequence[int], epochs: int, start_scale: float, share: float, multiple: int) -> np.ndarray:
    """Each epoch's training pixels as a share of the full size's, for a run of `epochs` epochs."""
    sides = _sides(size, np.arange(epochs), epochs, start_scale, share, multiple)
    return np.prod(sides / np.asarray([int(v) for v in size], np.float64), axis=1)


def shares_for(progressive, size: Sequence[int], multiple: int) -> Callable[[int], np.ndarray]:
    """E -> `pixel_shares` of a run of E epochs under `train.progressive` (the plan's and the budget's count)."""
    return lambda epochs: pixel_shares(size, epochs, progressive.start_scale, progressive.share, multiple)


def epochs_within(seconds: float, done: int, other_s: float, train_s: float, shares: Callable[[int], np.ndarray],
                  most: int) -> int:
    """The most epochs (>= done, <= most) whose epochs from `done` on fit in `seconds`.

    Epoch e of a run of E epochs costs other_s + train_s * shares(E)[e] (validation and overheads do not
    scale with the training size; the training steps do). The share of an epoch depends on E (the ramp is
    a share of the run), so each candidate E is summed in full.

    Args:
        seconds: the time left.
        done: epochs already trained.
        other_s: seconds per epoch that do not scale (validation, loading, checkpoints).
        train_s: seconds of a full-size epoch's training steps.
        shares: E -> the pixel shares of a run of E epochs (`pixel_shares`).
        most: the cap (MAX_EPOCHS).
    """
    best = done
    for total in range(done + 1, most + 1):
        need = (total - done) * other_s + train_s * float(np.sum(shares(total)[done:]))
        if need > seconds:
            break
        best = total
    return best


def train_cost_bounds(seconds: Sequence[float], shares: Sequence[float]) -> tuple[tuple[float, float], tuple[float, float]]:
    """Two models (fixed s, s per full-size share) of an epoch's training time, from epochs measured at pixel shares.

    Loading, augmentation and the optimiser step do not shrink with the batch's side, so the time is
    affine in the share, not proportional (BUSI, 2 cores: an epoch at 0.25 of the pixels took half a
    full one's time). With epochs at two or more shares, the least-squares line (clipped to non-negative
    parts) is both models. With one share s0 measured at c0 s, the affine cost of a larger epoch lies between
    c0 (all fixed: the low model) and c0 * s / s0 (all scaled: the high model).

    Returns:
        (low, high): (fixed, scaled) pairs; an epoch at share s costs fixed + scaled * s.
    """
    t = np.asarray(seconds, np.float64)
    s = np.asarray(shares, np.float64)
    if len(t) and np.ptp(s) > 1e-6:
        scaled, fixed = np.polyfit(s, t, 1)
        scaled = max(0.0, float(scaled))
        fixed = max(0.0, float(np.mean(t) - scaled * np.mean(s)))
        return (fixed, scaled), (fixed, scaled)
    c0, s0 = (float(np.mean(t)), float(np.mean(s))) if len(t) else (0.0, 1.0)
    return (c0, 0.0), (0.0, c0 / max(s0, 1e-9))


def resize_batch(x: torch.Tensor, y: torch.Tensor, size: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch at `size`: images bilinear/trilinear (antialiased in 2D), masks by area averaging (soft)."""
    if tuple(x.shape[2:]) == tuple(size):
        return x, y
    if x.ndim == 4:
        xs = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    else:
        xs = F.interpolate(x, size=size, mode="trilinear", align_corners=False)
    pool = F.adaptive_avg_pool3d if y.ndim == 5 else F.adaptive_avg_pool2d
    ys = pool(y.float(), size)
    return xs, ys


def size_for(cfg, size: Sequence[int], epoch: int, epochs: int, multiple: int) -> Optional[tuple[int, ...]]:
    """`progressive_size` under `cfg.train.progressive`, or None when it is off."""
    p = cfg.train.progressive
    if p is None:
        return None
    return progressive_size(size, epoch, epochs, p.start_scale, p.share, multiple)
