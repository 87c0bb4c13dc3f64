"""Soft Dice loss on sigmoid probabilities."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from medseg.losses.registry import register_loss


@register_loss("dice")
class DiceLoss(nn.Module):
    """1 - soft Dice, computed per image (default) or over the whole batch.

    Args:
        reduction: `per_image` averages each image's Dice; `batch` pools all pixels.
        smooth: added to numerator and denominator (1.0), so an empty image with an empty
            prediction scores ~1 but any predicted foreground there still costs loss.
    """

    def __init__(self, reduction: Literal["per_image", "batch"] = "per_image", smooth: float = 1.0):
        super().__init__()
        if reduction not in ("per_image", "batch"):
            raise ValueError("reduction must be 'per_image' or 'batch'")
        if smooth < 0:
            raise ValueError("smooth must be >= 0")
        self.reduction = reduction
        self.smooth = float(smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(logits.float())
        t = target.float()
        dims = tuple(range(1, p.ndim)) if self.reduction == "per_image" else tuple(range(p.ndim))
        inter = (p * t).sum(dims)
        denom = p.sum(dims) + t.sum(dims)
        dice = (2 * inter + self.smooth) / (denom + self.smooth)
        return 1.0 - dice.mean()
