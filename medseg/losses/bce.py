"""Binary cross-entropy from logits, with optional positive-pixel weight."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from medseg.losses.inputs import as_float32, check_number
from medseg.losses.registry import LossTraits, is_number, register_loss, without_aliases


def _precision_bias(name: str, params: dict):
    pw = params.get("pos_weight")
    return f"loss.{name} pos_weight {pw:g} < 1" if is_number(pw) and pw < 1 else None


TRAITS = LossTraits(nonnegative=True, pixelwise=True, precision_bias=_precision_bias,
                    recall_fix=lambda params: {**without_aliases(params), "pos_weight": "auto"})


@register_loss("bce", TRAITS)
class BCELoss(nn.Module):
    """Mean BCE over all pixels, from logits in float32.

    PyTorch's `binary_cross_entropy_with_logits` uses the log-sum-exp form
    (max(x, 0) - x*t + log(1 + exp(-|x|))), so value and gradient stay finite for any logit.

    Args:
        pos_weight: weight of positive pixels (a number, or `auto` in config: (1-p)/p of the
            training foreground fraction p, capped at 100; see `build_loss`).
    """

    def __init__(self, pos_weight: Optional[float] = None):
        super().__init__()
        if pos_weight is not None:
            try:
                check_number("pos_weight", pos_weight, 0.0, low_inclusive=False)
            except ValueError:
                raise ValueError(f"pos_weight must be a positive number or 'auto' (got {pos_weight!r})") from None
        self.pos_weight = None if pos_weight is None else float(pos_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x, t = as_float32(logits, target)
        # built from the float32 logits, so half-precision inputs do not round the weight
        pw = None if self.pos_weight is None else x.new_tensor(self.pos_weight)
        return F.binary_cross_entropy_with_logits(x, t, pos_weight=pw)
