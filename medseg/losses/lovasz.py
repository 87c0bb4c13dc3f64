"""Lovász hinge loss (Berman et al. 2018): a convex surrogate of the Jaccard (IoU) loss."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from medseg.losses.inputs import as_float32, check_reduction
from medseg.losses.registry import LossTraits, register_loss


def lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovász extension of the Jaccard loss for rows of sorted binary labels.

    Row-wise: J_i = 1 - (G - cumsum(gt)_i) / (G + cumsum(1 - gt)_i), G = sum(gt), and the
    gradient is J_1, J_2 - J_1, ... (Berman et al., Alg. 1). Counts are integers so the
    cumulative sums stay exact for any image size.

    Args:
        gt_sorted: (R, N) binary labels ordered by decreasing error.
    """
    gt = gt_sorted.round().long()
    gts = gt.sum(dim=1, keepdim=True)
    cum_gt = gt.cumsum(dim=1)
    ranks = torch.arange(1, gt.shape[1] + 1, device=gt.device).unsqueeze(0)
    intersection = gts - cum_gt
    union = gts + ranks - cum_gt  # >= 1 always: rank counts at least the current pixel
    jaccard = 1.0 - intersection.float() / union.float()
    return torch.cat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], dim=1)


@register_loss("lovasz", LossTraits(nonnegative=True))
class LovaszHingeLoss(nn.Module):
    """Lovász hinge on logits, per image (default) as in Berman et al.'s `lovasz_hinge`.

    Per image: errors e = 1 - x * (2t - 1) sorted in decreasing order, loss = sum of
    relu(e_sorted) * lovasz_grad(t_sorted). The loss is piecewise linear in the logits, so it
    needs no log or exp and is finite for any logit (it grows like |x|).

    An image without foreground has Jaccard loss 1 as soon as anything is predicted; its
    Lovász extension reduces to relu(1 + max logit): zero once every logit is below -1, and
    otherwise a gradient of +1 on the single most confident false positive. Such images are
    thus handled, but slowly; pair with BCE or focal for dense background supervision.

    Args:
        reduction: `per_image` (mean of per-image losses) or `batch` (one ranking over all pixels).
    """

    def __init__(self, reduction: Literal["per_image", "batch"] = "per_image"):
        super().__init__()
        self.reduction = check_reduction(reduction)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x, t = as_float32(logits, target)
        rows = x.shape[0] if self.reduction == "per_image" else 1
        x = x.reshape(rows, -1)
        t = t.reshape(rows, -1)
        errors = 1.0 - x * (2.0 * t - 1.0)
        errors_sorted, order = torch.sort(errors, dim=1, descending=True)
        grad = lovasz_grad(torch.gather(t, 1, order))
        return (F.relu(errors_sorted) * grad).sum(dim=1).mean()
