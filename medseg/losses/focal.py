"""Sigmoid focal loss (Lin et al. 2017) from logits."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from medseg.losses.inputs import as_float32, check_number
from medseg.losses.registry import LossTraits, is_number, register_loss, without_aliases


def _precision_bias(name: str, params: dict):
    a = params.get("alpha")
    return f"loss.{name} alpha {a:g} < 0.5" if is_number(a) and a < 0.5 else None


# alpha 0.75 weighs foreground pixels 3x (Lin et al. use 0.25 for the rare class of detection; here foreground is rare)
TRAITS = LossTraits(nonnegative=True, pixelwise=True, precision_bias=_precision_bias,
                    recall_fix=lambda params: {**without_aliases(params), "alpha": 0.75})


@register_loss("focal", TRAITS)
class FocalLoss(nn.Module):
    """Mean over pixels of -a_t * (1 - p_t)^gamma * log(p_t).

    p_t = sigmoid(x) on foreground pixels and 1 - sigmoid(x) on background. Both factors are
    taken in log space: log(p_t) = logsigmoid(+-x) and (1 - p_t)^gamma =
    exp(gamma * logsigmoid(-+x)), so value and gradient are finite for any logit and any
    gamma >= 0 (a plain `(1 - p)**gamma` has an infinite gradient at p_t = 1 for gamma < 1).

    `alpha` follows MONAI's `FocalLoss(use_softmax=False, alpha=a)` and Lin et al.: a_t = alpha on
    foreground pixels and 1 - alpha on background, so alpha > 0.5 favours the foreground;
    alpha=None weights every pixel by 1 (not 0.5). Equals MONAI's value with reduction='mean'.

    Args:
        gamma: focusing exponent (>= 0; 0 with alpha=None is plain BCE).
        alpha: foreground weight in [0, 1], or None for no class weighting.
    """

    def __init__(self, gamma: float = 2.0, alpha: Optional[float] = None):
        super().__init__()
        self.gamma = check_number("gamma", gamma, 0.0)
        self.alpha = None if alpha is None else check_number("alpha", alpha, 0.0, 1.0)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x, t = as_float32(logits, target)
        bce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
        # log(1 - p_t) = logsigmoid(-x) for t=1, logsigmoid(x) for t=0 (same for soft t via 2t-1)
        log_one_minus_pt = F.logsigmoid(-x * (2 * t - 1))
        loss = torch.exp(self.gamma * log_one_minus_pt) * bce
        if self.alpha is not None:
            loss = (t * self.alpha + (1 - t) * (1 - self.alpha)) * loss
        return loss.mean()
