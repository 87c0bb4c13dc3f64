"""The loss registry: a name in config -> a loss factory and the traits the doctor reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from torch import nn

LOSSES: dict[str, Callable[..., nn.Module]] = {}

# Top-level key of the loss spec that holds per-scale weights instead of a loss term.
DEEP_SUPERVISION_KEY = "deep_supervision"
# Top-level key that weighs the image head's BCE (model.image_head), not a per-pixel term.
IMAGE_KEY = "image"
# The keys of a loss spec that are not registered terms.
SPECIAL_KEYS = (DEEP_SUPERVISION_KEY, IMAGE_KEY)


@dataclass(frozen=True)
class LossTraits:
    """What a loss term does, for the checks that reason about a run's loss (medseg doctor).

    Attributes:
        nonnegative: the term is known to be >= 0 for targets in [0, 1] (a negative epoch loss
            then means the targets were not); False when not declared.
        pixelwise: a per-pixel classification term (BCE, focal) rather than a region/overlap
            term (Dice, Tversky, Lovász).
        fp_fn_weights: for region terms that weigh false positives and negatives separately:
            (fp parameter, fn parameter, fp default, fn default, aliases {alias: parameter}).
        precision_bias: (name, params) -> a text when the parameters make the term favour
            precision over recall, else None.
        recall_fix: params -> parameters that favour recall instead.
    """

    nonnegative: bool = False
    pixelwise: bool = False
    fp_fn_weights: Optional[tuple[str, str, float, float, dict]] = None
    precision_bias: Optional[Callable[[str, dict], Optional[str]]] = None
    recall_fix: Optional[Callable[[dict], dict]] = None

    def fp_fn(self, params: dict) -> Optional[tuple[float, float]]:
        """(fp weight, fn weight) the params give, or None for terms without them."""
        if self.fp_fn_weights is None:
            return None
        fp_key, fn_key, fp_default, fn_default, aliases = self.fp_fn_weights
        alias = {v: k for k, v in aliases.items()}
        fp = params.get(fp_key, params.get(alias.get(fp_key, ""), fp_default))
        fn = params.get(fn_key, params.get(alias.get(fn_key, ""), fn_default))
        return fp, fn


LOSS_TRAITS: dict[str, LossTraits] = {}


def is_number(v) -> bool:
    """A real, finite number (not a bool, not 'auto')."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


def without_aliases(params: dict) -> dict:
    """Parameters without MONAI's ambiguous alpha/beta names (a fix writes the explicit ones)."""
    return {k: v for k, v in params.items() if k not in ("alpha", "beta")}


def register_loss(name: str, traits: Optional[LossTraits] = None):
    """Class decorator: make a loss available in config under `name`, with its traits."""
    if name == DEEP_SUPERVISION_KEY:
        raise ValueError(f"'{name}' is reserved for deep-supervision weights")

    def deco(factory):
        LOSSES[name] = factory
        LOSS_TRAITS[name] = traits or LossTraits()
        return factory

    return deco


def loss_traits(name: str) -> LossTraits:
    """The traits of a registered loss (defaults for a name registered without them)."""
    return LOSS_TRAITS.get(name, LossTraits())
