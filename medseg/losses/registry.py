"""Loss registry and the weighted combination built from config (`loss: {bce: 3, dice: 1}`)."""

from __future__ import annotations

import difflib
from typing import Any, Callable, Optional

import torch
from torch import nn

from medseg.errors import MedsegError

LOSSES: dict[str, Callable[..., nn.Module]] = {}


def register_loss(name: str):
    def deco(factory):
        LOSSES[name] = factory
        return factory

    return deco


def _split_term(name: str, value: Any) -> tuple[float, dict]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value), {}
    if isinstance(value, dict):
        params = dict(value)
        weight = params.pop("weight", 1.0)
        if not isinstance(weight, (int, float)) or isinstance(weight, bool):
            raise ValueError(f"loss.{name}.weight: must be a number")
        return float(weight), params
    raise ValueError(f"loss.{name}: must be a weight or a mapping with 'weight' and parameters")


def validate_loss_spec(spec: dict) -> None:
    """Raise ValueError naming the key for unknown losses, bad weights or bad parameters."""
    _ensure_loaded()
    if not spec:
        raise ValueError("loss: at least one term is required")
    for name, value in spec.items():
        if name not in LOSSES:
            hint = difflib.get_close_matches(name, list(LOSSES), n=1)
            raise ValueError(
                f"loss.{name}: unknown loss" + (f" (did you mean '{hint[0]}'?)" if hint else "") + f"; choose from {', '.join(sorted(LOSSES))}"
            )
        weight, params = _split_term(name, value)
        if weight < 0 or weight != weight:
            raise ValueError(f"loss.{name}: weight must be >= 0")
        try:
            LOSSES[name](**_resolve_params(params, 0.01))
        except (TypeError, ValueError) as e:
            raise ValueError(f"loss.{name}: {e}") from None


def _resolve_params(params: dict, pos_fraction: Optional[float]) -> dict:
    out = {}
    for k, v in params.items():
        if v == "auto" and k == "pos_weight":
            # (1 - p) / p balances positive and negative pixels; capped so a 0.01% foreground
            # does not turn BCE into a pure positive-pixel loss.
            p = pos_fraction if pos_fraction and pos_fraction > 0 else 0.01
            v = float(min((1 - p) / p, 100.0))
        out[k] = v
    return out


class CombinedLoss(nn.Module):
    """Weighted sum of registered terms; remembers each term's last value for logging.

    Args:
        terms: (name, weight, module) triples.
        deep_supervision: weights for multi-scale outputs (first = full resolution).
    """

    def __init__(self, terms: list[tuple[str, float, nn.Module]], deep_supervision: Optional[list[float]] = None):
        super().__init__()
        self.names = [n for n, _, _ in terms]
        self.weights = [w for _, w, _ in terms]
        self.terms = nn.ModuleList([m for _, _, m in terms])
        self.deep_supervision = deep_supervision
        self.last_terms: dict[str, float] = {}

    def _single(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = logits.float()
        target = target.float()
        total = logits.new_zeros(())
        parts = {}
        for name, w, term in zip(self.names, self.weights, self.terms):
            v = term(logits, target)
            parts[name] = v
            total = total + w * v
        return total, parts

    def forward(self, logits, target: torch.Tensor) -> torch.Tensor:
        if isinstance(logits, (list, tuple)):
            weights = self.deep_supervision or [1.0] + [0.5**i for i in range(1, len(logits))]
            total = 0.0
            parts_all: dict[str, torch.Tensor] = {}
            for i, (lg, w) in enumerate(zip(logits, weights)):
                t = target
                if lg.shape[-2:] != target.shape[-2:]:
                    t = torch.nn.functional.interpolate(target.float(), size=lg.shape[-2:], mode="nearest")
                tot, parts = self._single(lg, t)
                total = total + w * tot
                if i == 0:
                    parts_all = parts
            loss = total / sum(weights[: len(logits)])
        else:
            loss, parts_all = self._single(logits, target)
        self.last_terms = {k: float(v.detach()) for k, v in parts_all.items()}
        return loss


def build_loss(spec: dict, pos_fraction: Optional[float] = None, deep_supervision: Optional[list[float]] = None) -> CombinedLoss:
    """Build the weighted loss from the config's `loss` mapping.

    Args:
        spec: {name: weight} or {name: {weight: w, **params}}.
        pos_fraction: training-set foreground pixel fraction, for `pos_weight: auto`.
        deep_supervision: per-scale weights when the network returns several outputs.
    """
    _ensure_loaded()
    terms = []
    for name, value in spec.items():
        if name not in LOSSES:
            raise MedsegError(f"config error: loss.{name}: unknown loss")
        weight, params = _split_term(name, value)
        terms.append((name, weight, LOSSES[name](**_resolve_params(params, pos_fraction))))
    return CombinedLoss(terms, deep_supervision)


def _ensure_loaded() -> None:
    # importing the package registers every loss module
    import medseg.losses  # noqa: F401
