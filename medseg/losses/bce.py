"""Binary cross-entropy from logits, with optional positive-pixel weight."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from medseg.losses.registry import register_loss


@register_loss("bce")
class BCELoss(nn.Module):
    """BCE on logits (log-sigmoid form, stable for any logit).

    Args:
        pos_weight: weight of positive pixels (a number, or `auto` in config: (1-p)/p of the
            training foreground fraction p, capped at 100).
    """

    def __init__(self, pos_weight: Optional[float] = None):
        super().__init__()
        if pos_weight is not None and (not isinstance(pos_weight, (int, float)) or pos_weight <= 0):
            raise ValueError("pos_weight must be a positive number or 'auto'")
        self.pos_weight = None if pos_weight is None else float(pos_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pw = None if self.pos_weight is None else logits.new_tensor(self.pos_weight)
        return F.binary_cross_entropy_with_logits(logits.float(), target.float(), pos_weight=pw)
