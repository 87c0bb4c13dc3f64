"""Focal Tversky loss (Abraham & Khan 2019): the Tversky loss raised to 1/gamma."""

from __future__ import annotations

from typing import Literal, Optional

import torch
from torch import nn

from medseg.losses.inputs import check_number, check_reduction
from medseg.losses.registry import register_loss
from medseg.losses.tversky import TRAITS, resolve_weights, tversky_index

# (1 - TI) is floored here before the fractional power: at an exactly perfect prediction
# d/dx x^(1/gamma) is infinite for gamma > 1, and inf * 0 (saturated sigmoid) would be NaN.
_FLOOR = 1e-7


@register_loss("focal_tversky", TRAITS)
class FocalTverskyLoss(nn.Module):
    """mean over images of (1 - TI)^(1/gamma), TI the soft Tversky index (see `tversky_index`).

    gamma follows the paper: gamma = 4/3 (exponent 0.75) raises the loss, and its gradient,
    for images that are already fairly well segmented, so training keeps working on small
    targets. gamma = 1 is the Tversky loss. (smp's `TverskyLoss(gamma=g)` uses the exponent g
    itself; `gamma: 0.75` there is `gamma: 1.33` here.) On an image with no foreground the
    loss is (fp_weight*S / (fp_weight*S + smooth))^(1/gamma), S = sum(p), whose gradient
    pushes every logit down.

    Args:
        fp_weight: weight of false positives (default 0.3).
        fn_weight: weight of false negatives (default 0.7).
        gamma: focal parameter > 0; the loss exponent is 1/gamma (default 4/3).
        smooth: added to numerator and denominator of TI (1.0).
        reduction: `per_image` (power per image, then mean) or `batch` (pooled TI).
        alpha, beta: aliases of fp_weight / fn_weight in MONAI's meaning (warns).
    """

    def __init__(
        self,
        fp_weight: Optional[float] = None,
        fn_weight: Optional[float] = None,
        gamma: float = 4.0 / 3.0,
        smooth: float = 1.0,
        reduction: Literal["per_image", "batch"] = "per_image",
        alpha: Optional[float] = None,
        beta: Optional[float] = None,
    ):
        super().__init__()
        self.fp_weight, self.fn_weight = resolve_weights("focal_tversky", fp_weight, fn_weight, alpha, beta)
        self.gamma = check_number("gamma", gamma, 0.0, low_inclusive=False)
        self.smooth = check_number("smooth", smooth, 0.0)
        self.reduction = check_reduction(reduction)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ti = tversky_index(logits, target, self.fp_weight, self.fn_weight, self.smooth, self.reduction)
        return (1.0 - ti).clamp_min(_FLOOR).pow(1.0 / self.gamma).mean()
