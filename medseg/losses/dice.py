"""Soft Dice loss on sigmoid probabilities."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from medseg.losses.inputs import as_float32, check_number, check_reduction, sum_dims
from medseg.losses.registry import LossTraits, register_loss


@register_loss("dice", LossTraits(nonnegative=True))
class DiceLoss(nn.Module):
    """1 - soft Dice, computed per image (default) or over the whole batch.

    Dice = (2 * sum(p*t) + smooth) / (sum(p) + sum(t) + smooth), p = sigmoid(logits) in
    float32. This equals MONAI's `DiceLoss(sigmoid=True, smooth_nr=smooth, smooth_dr=smooth,
    batch=(reduction == 'batch'))` for binary targets.

    On an image with no foreground the loss is S / (S + smooth) with S = sum(p): zero only when
    nothing is predicted, and its gradient smooth / (S + smooth)^2 > 0 pushes every logit down
    (smp's DiceLoss returns 0 there and teaches nothing). The push weakens as S grows, which
    is why Dice is paired with BCE or focal. sigmoid saturates to exact 0/1 with zero
    gradient, so no log is needed for finite values at any logit.

    Args:
        reduction: `per_image` averages each image's Dice; `batch` pools all pixels.
        smooth: added to numerator and denominator (1.0), so an empty image with an empty
            prediction scores ~1 but any predicted foreground there still costs loss.
    """

    def __init__(self, reduction: Literal["per_image", "batch"] = "per_image", smooth: float = 1.0):
        super().__init__()
        self.reduction = check_reduction(reduction)
        self.smooth = check_number("smooth", smooth, 0.0)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x, t = as_float32(logits, target)
        p = torch.sigmoid(x)
        dims = sum_dims(p, self.reduction)
        inter = (p * t).sum(dims)
        denom = p.sum(dims) + t.sum(dims)
        # smooth=0 on an empty image with an empty prediction would be 0/0: count it as perfect
        dice = (2 * inter + self.smooth) / (denom + self.smooth).clamp_min(1e-12)
        dice = torch.where(denom + self.smooth > 0, dice, torch.ones_like(dice))
        return 1.0 - dice.mean()
