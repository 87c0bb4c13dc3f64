"""Losses: one file per loss, a registry with each loss's traits, and the weighted combination built from config."""

from medseg.losses.combined import CombinedLoss, build_loss, has_schedule, validate_loss_spec
from medseg.losses.registry import DEEP_SUPERVISION_KEY, IMAGE_KEY, LOSS_TRAITS, SPECIAL_KEYS, LOSSES, LossTraits, loss_traits, register_loss

__all__ = ["CombinedLoss", "DEEP_SUPERVISION_KEY", "IMAGE_KEY", "LOSSES", "LOSS_TRAITS", "LossTraits", "SPECIAL_KEYS", "build_loss", "has_schedule",
           "loss_traits", "register_loss", "validate_loss_spec"]
