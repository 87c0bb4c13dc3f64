"""Losses: one file per loss, a registry, and the weighted combination built from config."""

from medseg.losses.registry import LOSSES, CombinedLoss, build_loss, register_loss, validate_loss_spec
from medseg.losses import bce, dice, focal, focal_tversky, lovasz, tversky  # noqa: F401  (registers)

__all__ = ["LOSSES", "CombinedLoss", "build_loss", "register_loss", "validate_loss_spec"]
