"""The weighted combination of loss terms built from config (`loss: {bce: 3, dice: 1}`), and its validation."""

from __future__ import annotations

import contextlib
import difflib
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medseg.errors import MedsegError
from medseg.losses import bce, dice, focal, focal_tversky, lovasz, tversky  # noqa: F401 — registers every loss
from medseg.losses.registry import DEEP_SUPERVISION_KEY, IMAGE_KEY, LOSSES, SPECIAL_KEYS


# The keys of a term's mapping that say when in training it counts (shares of the epochs), not parameters of the loss.
WINDOW_KEYS = ("start", "stop")


def _split_term(name: str, value: Any) -> tuple[float, dict, tuple[float, float]]:
    """(weight, the loss's parameters, (start, stop)) of one term of the spec, or raise ValueError naming the key."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value), {}, (0.0, 1.0)
    if isinstance(value, dict):
        params = dict(value)
        weight = params.pop("weight", 1.0)
        if not isinstance(weight, (int, float)) or isinstance(weight, bool):
            raise ValueError(f"loss.{name}.weight: must be a number")
        window = tuple(params.pop(k, d) for k, d in zip(WINDOW_KEYS, (0.0, 1.0)))
        for k, v in zip(WINDOW_KEYS, window):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise ValueError(f"loss.{name}.{k}: must be a share of the training epochs from 0 to 1 (got {v!r})")
        if not window[0] < window[1]:
            raise ValueError(f"loss.{name}: start ({window[0]:g}) must come before stop ({window[1]:g})")
        return float(weight), params, (float(window[0]), float(window[1]))
    raise ValueError(f"loss.{name}: must be a weight or a mapping with 'weight' and parameters")


def _active(window: tuple[float, float], progress: Optional[float]) -> bool:
    """Whether a term with this (start, stop) window counts at `progress` (None: every term counts)."""
    return progress is None or window[0] <= progress < window[1]


def _check_windows(windows: dict[str, tuple[float, float]]) -> None:
    """Raise ValueError when some part of training would have no term with a positive weight."""
    edges = sorted({0.0, 1.0, *(e for w in windows.values() for e in w)})
    for a, b in zip(edges[:-1], edges[1:]):
        if not any(_active(w, (a + b) / 2) for w in windows.values()):
            raise ValueError(f"loss: no term counts from {a:g} to {b:g} of the training epochs (see each term's start and stop)")


def has_schedule(spec: dict) -> bool:
    """Whether any term of a (valid) loss spec starts after the first epoch or stops before the last."""
    return any(_split_term(k, v)[2] != (0.0, 1.0) for k, v in spec.items() if k not in SPECIAL_KEYS)


def _check_deep_supervision(weights: Any) -> list[float]:
    """Return the per-scale weights as floats, or raise ValueError naming the key."""
    key = f"loss.{DEEP_SUPERVISION_KEY}"
    if not isinstance(weights, (list, tuple)) or not weights:
        raise ValueError(f"{key}: must be a non-empty list of weights, full resolution first, e.g. [1.0, 0.4, 0.2, 0.1]")
    for w in weights:
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not w >= 0:
            raise ValueError(f"{key}: weights must be numbers >= 0 (got {w!r})")
    if weights[0] <= 0:
        raise ValueError(f"{key}: the first (full-resolution) weight must be > 0")
    return [float(w) for w in weights]


def _check_image_weight(weight: Any) -> float:
    """The image head's loss weight as a float, or raise ValueError naming the key."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight < float("inf"):
        raise ValueError(f"loss.{IMAGE_KEY}: the image head's loss weight must be a number >= 0 (got {weight!r})")
    return float(weight)


def validate_loss_spec(spec: dict) -> None:
    """Raise ValueError naming the key for unknown losses, bad weights or bad parameters.

    Args:
        spec: the config's `loss` mapping: {name: weight | {weight, start, stop, **params}} plus an
            optional `deep_supervision: [w0, w1, ...]` entry.
    """
    if DEEP_SUPERVISION_KEY in spec:
        _check_deep_supervision(spec[DEEP_SUPERVISION_KEY])
    if IMAGE_KEY in spec:
        _check_image_weight(spec[IMAGE_KEY])
    terms = {k: v for k, v in spec.items() if k not in SPECIAL_KEYS}
    if not terms:
        raise ValueError("loss: at least one term is required")
    windows = {}
    for name, value in terms.items():
        if name not in LOSSES:
            hint = difflib.get_close_matches(name, list(LOSSES), n=1)
            raise ValueError(
                f"loss.{name}: unknown loss" + (f" (did you mean '{hint[0]}'?)" if hint else "") + f"; choose from {', '.join(sorted(LOSSES))}"
            )
        weight, params, window = _split_term(name, value)
        if not weight >= 0 or weight == float("inf"):
            raise ValueError(f"loss.{name}: weight must be >= 0 and finite (got {weight!r})")
        try:
            LOSSES[name](**_resolve_params(params, 0.01))
        except (TypeError, ValueError) as e:
            raise ValueError(f"loss.{name}: {e}") from None
        if weight > 0:
            windows[name] = window
    _check_windows(windows)


def _resolve_params(params: dict, pos_fraction: Optional[float]) -> dict:
    out = {}
    for k, v in params.items():
        if v == "auto" and k == "pos_weight":
            # (1 - p) / p balances positive and negative pixels; capped so a 0.01% foreground
            # does not turn BCE into a pure positive-pixel loss. Unknown p counts as 1%.
            p = pos_fraction if pos_fraction and pos_fraction > 0 else 0.01
            v = float(min((1 - p) / p, 100.0))
        out[k] = v
    return out


def _resize_target(target: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Target at a deep-supervision output's size.

    Downsampling keeps a pixel foreground if any pixel it covers is (max pooling), so a
    lesion smaller than the stride still exists at the coarse scale; nearest sampling would
    erase most tiny targets there and teach the coarse heads to predict nothing.
    """
    t = target.float()
    if tuple(t.shape[2:]) == tuple(size):
        return t
    if all(s <= ts for s, ts in zip(size, t.shape[2:])):
        pool = F.adaptive_max_pool3d if t.ndim == 5 else F.adaptive_max_pool2d
        return pool(t, tuple(size))
    return F.interpolate(t, size=tuple(size), mode="nearest")


def _no_autocast(x: torch.Tensor):
    # losses run in float32 even inside an autocast region (bf16 sums over an image lose
    # the few foreground pixels of a tiny target)
    if x.device.type in ("cpu", "cuda"):
        return torch.autocast(device_type=x.device.type, enabled=False)
    return contextlib.nullcontext()


class CombinedLoss(nn.Module):
    """Weighted sum of registered terms; remembers each term's last value for logging.

    A term may count only over part of training (a loss schedule, e.g. Lovász joining for the
    second half as the TGS Salt winners fine-tuned): `set_progress` tells the loss how far
    training is, and terms outside their (start, stop) window are neither computed nor logged.

    Args:
        terms: (name, weight, module) triples.
        deep_supervision: weights for multi-scale outputs (first = full resolution); None:
            1, 0.5, 0.25, ... The weighted sum is divided by the sum of the weights used.
        image_weight: weight of the BCE between an image head's logits and "the mask has
            foreground", added when the network returns {"masks": ..., "image": (B, 1)}.
        windows: per term, the (start, stop) shares of the training epochs in which it counts;
            None: every term always.
    """

    def __init__(self, terms: list[tuple[str, float, nn.Module]], deep_supervision: Optional[list[float]] = None,
                 image_weight: float = 1.0, windows: Optional[list[tuple[float, float]]] = None):
        super().__init__()
        self.windows = list(windows) if windows is not None else [(0.0, 1.0)] * len(terms)
        # None until training says otherwise: every term counts (what planning's step timing should pay for)
        self.progress: Optional[float] = None
        self.image_weight = _check_image_weight(image_weight)
        self.names = [n for n, _, _ in terms]
        self.weights = [w for _, w, _ in terms]
        self.terms = nn.ModuleList([m for _, _, m in terms])
        self.deep_supervision = None if deep_supervision is None else _check_deep_supervision(deep_supervision)
        self.last_terms: dict[str, float] = {}

    def set_progress(self, progress: Optional[float]) -> None:
        """How far training is, as the share of its epochs done before the current one (None: every term counts)."""
        self.progress = progress

    def _single(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = logits.float()
        target = target.float()
        total = logits.new_zeros(())
        parts = {}
        for name, w, term, window in zip(self.names, self.weights, self.terms, self.windows):
            if not _active(window, self.progress):
                continue
            v = term(logits, target)
            parts[name] = v
            total = total + w * v
        return total, parts

    def forward(self, logits, target: torch.Tensor) -> torch.Tensor:
        """Loss of `logits` (B,1,H,W), or of a list of such (full resolution first), against `target`;
        or of {"masks": either, "image": (B, 1) logits} from a network with an image head."""
        image = None
        if isinstance(logits, dict):
            logits, image = logits["masks"], logits["image"]
        first = logits[0] if isinstance(logits, (list, tuple)) else logits
        with _no_autocast(first):
            if isinstance(logits, (list, tuple)):
                loss, parts_all = self._deep(list(logits), target)
            else:
                loss, parts_all = self._single(logits, target)
            if image is not None:
                # the image's label: any foreground pixel in its mask
                has_fg = (target.flatten(1).amax(dim=1, keepdim=True) > 0).float()
                parts_all = {**parts_all, IMAGE_KEY: F.binary_cross_entropy_with_logits(image.float(), has_fg)}
                loss = loss + self.image_weight * parts_all[IMAGE_KEY]
        self.last_terms = {k: float(v.detach()) for k, v in parts_all.items()}
        return loss

    def _deep(self, outputs: list[torch.Tensor], target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        weights = self.deep_supervision or [1.0] + [0.5**i for i in range(1, len(outputs))]
        if len(outputs) > len(weights):
            raise ValueError(
                f"deep supervision: the network returned {len(outputs)} outputs but loss.{DEEP_SUPERVISION_KEY} "
                f"has {len(weights)} weights"
            )
        total = outputs[0].new_zeros((), dtype=torch.float32)
        parts_all: dict[str, torch.Tensor] = {}
        for i, (lg, w) in enumerate(zip(outputs, weights)):
            tot, parts = self._single(lg, _resize_target(target, lg.shape[2:]))
            total = total + w * tot
            if i == 0:
                parts_all = parts
        return total / sum(weights[: len(outputs)]), parts_all


def build_loss(spec: dict, pos_fraction: Optional[float] = None, deep_supervision: Optional[list[float]] = None) -> CombinedLoss:
    """Build the weighted loss from the config's `loss` mapping.

    Args:
        spec: {name: weight} or {name: {weight: w, start: s, stop: e, **params}} (start/stop: the
            shares of the training epochs in which the term counts, default 0 and 1), plus optionally
            `deep_supervision: [w0, w1, ...]`.
        pos_fraction: training-set foreground pixel fraction, for `pos_weight: auto`.
        deep_supervision: per-scale weights when the network returns several outputs; when
            given it takes precedence over the spec's `deep_supervision` entry.
    """
    try:
        ds = deep_supervision if deep_supervision is not None else spec.get(DEEP_SUPERVISION_KEY)
        ds = None if ds is None else _check_deep_supervision(ds)
        image_weight = _check_image_weight(spec.get(IMAGE_KEY, 1.0))
    except ValueError as e:
        raise MedsegError(f"config error: {e}") from None
    terms, windows = [], []
    for name, value in spec.items():
        if name in SPECIAL_KEYS:
            continue
        if name not in LOSSES:
            raise MedsegError(f"config error: loss.{name}: unknown loss")
        try:
            weight, params, window = _split_term(name, value)
        except ValueError as e:
            raise MedsegError(f"config error: {e}") from None
        terms.append((name, weight, LOSSES[name](**_resolve_params(params, pos_fraction))))
        windows.append(window)
    if not terms:
        raise MedsegError("config error: loss: at least one term is required")
    return CombinedLoss(terms, ds, image_weight, windows)
