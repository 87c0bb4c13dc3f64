"""Tversky loss (Salehi et al. 2017): Dice with separate false-positive and false-negative weights."""

from __future__ import annotations

import warnings
from typing import Literal, Optional

import torch
from torch import nn

from medseg.losses.inputs import as_float32, check_number, check_reduction, sum_dims
from medseg.losses.registry import LossTraits, is_number, register_loss, without_aliases


def _precision_bias(name: str, params: dict):
    fp, fn = TRAITS.fp_fn(params)
    return f"loss.{name} fp_weight {fp:g} > fn_weight {fn:g}" if is_number(fp) and is_number(fn) and fp > fn else None


# Salehi et al.'s recall-favouring default
TRAITS = LossTraits(
    nonnegative=True,
    fp_fn_weights=("fp_weight", "fn_weight", 0.3, 0.7, {"alpha": "fp_weight", "beta": "fn_weight"}),
    precision_bias=_precision_bias,
    recall_fix=lambda params: {**without_aliases(params), "fp_weight": 0.3, "fn_weight": 0.7},
)


def resolve_weights(
    loss: str, fp_weight: Optional[float], fn_weight: Optional[float], alpha: Optional[float], beta: Optional[float]
) -> tuple[float, float]:
    """Return (fp_weight, fn_weight), accepting MONAI's `alpha`/`beta` names as aliases.

    The Tversky literature is split on which of alpha/beta weighs false positives, so medseg
    names them explicitly; an alias is read as in MONAI's TverskyLoss (alpha: false
    positives, beta: false negatives) and a warning says so.

    Args:
        loss: loss name for messages.
        fp_weight, fn_weight: the explicit weights (None: not given).
        alpha, beta: aliases of fp_weight and fn_weight (None: not given).
    """
    if alpha is not None and fp_weight is not None:
        raise ValueError("give fp_weight or its alias alpha, not both")
    if beta is not None and fn_weight is not None:
        raise ValueError("give fn_weight or its alias beta, not both")
    if alpha is not None or beta is not None:
        used = [n for n, v in (("alpha", alpha), ("beta", beta)) if v is not None]
        warnings.warn(
            f"loss.{loss}: {' and '.join(used)} read as in MONAI's TverskyLoss: alpha = fp_weight (weight of "
            "false positives), beta = fn_weight (weight of false negatives); use fp_weight/fn_weight to be explicit",
            UserWarning,
            stacklevel=3,
        )
    fp = alpha if alpha is not None else (0.3 if fp_weight is None else fp_weight)
    fn = beta if beta is not None else (0.7 if fn_weight is None else fn_weight)
    fp = check_number("fp_weight", fp, 0.0)
    fn = check_number("fn_weight", fn, 0.0)
    if fp + fn == 0:
        raise ValueError("fp_weight + fn_weight must be > 0")
    return fp, fn


def tversky_index(logits: torch.Tensor, target: torch.Tensor, fp_weight: float, fn_weight: float, smooth: float, reduction: str) -> torch.Tensor:
    """Soft Tversky index per image (`per_image`, shape (B,)) or for the batch (`batch`, scalar).

    TI = (TP + smooth) / (TP + fp_weight*FP + fn_weight*FN + smooth) with p = sigmoid(logits)
    in float32, TP = sum(p*t), FP = sum(p*(1-t)), FN = sum((1-p)*t).

    Args:
        logits, target: same shape, batch first.
        fp_weight, fn_weight: weights of false positives / false negatives.
        smooth: added to numerator and denominator.
        reduction: `per_image` or `batch`.
    """
    x, t = as_float32(logits, target)
    p = torch.sigmoid(x)
    dims = sum_dims(p, reduction)
    tp = (p * t).sum(dims)
    fp = (p * (1 - t)).sum(dims)
    fn = ((1 - p) * t).sum(dims)
    denom = tp + fp_weight * fp + fn_weight * fn + smooth
    ti = (tp + smooth) / denom.clamp_min(1e-12)
    # smooth=0 with nothing predicted on an empty image is 0/0: count it as perfect
    return torch.where(denom > 0, ti, torch.ones_like(ti))


@register_loss("tversky", TRAITS)
class TverskyLoss(nn.Module):
    """1 - soft Tversky index, averaged over images (or pooled over the batch).

    Equals MONAI's `TverskyLoss(sigmoid=True, alpha=fp_weight, beta=fn_weight,
    smooth_nr=smooth, smooth_dr=smooth, batch=(reduction == 'batch'))` for binary targets.
    fp_weight = fn_weight = 0.5 is the Dice loss with Dice's smooth = 2 * smooth. On an image with no foreground the loss is
    fp_weight*S / (fp_weight*S + smooth), S = sum(p), whose gradient pushes every logit down
    (for fp_weight > 0); smooth=1 keeps that push from vanishing as MONAI's 1e-5 would.

    Args:
        fp_weight: weight of false positives (default 0.3, Salehi et al.).
        fn_weight: weight of false negatives (default 0.7: favour recall of small targets).
        smooth: added to numerator and denominator (1.0).
        reduction: `per_image` (mean of per-image indices) or `batch` (pooled pixels).
        alpha, beta: aliases of fp_weight / fn_weight in MONAI's meaning (warns).
    """

    def __init__(
        self,
        fp_weight: Optional[float] = None,
        fn_weight: Optional[float] = None,
        smooth: float = 1.0,
        reduction: Literal["per_image", "batch"] = "per_image",
        alpha: Optional[float] = None,
        beta: Optional[float] = None,
    ):
        super().__init__()
        self.fp_weight, self.fn_weight = resolve_weights("tversky", fp_weight, fn_weight, alpha, beta)
        self.smooth = check_number("smooth", smooth, 0.0)
        self.reduction = check_reduction(reduction)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ti = tversky_index(logits, target, self.fp_weight, self.fn_weight, self.smooth, self.reduction)
        return 1.0 - ti.mean()
