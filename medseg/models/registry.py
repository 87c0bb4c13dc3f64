"""The model registry: each entry a `ModelSpec` carrying its factory and the facts other layers need."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional, Sequence, Union

from medseg.errors import MedsegError

if TYPE_CHECKING:  # torch is imported by the factories, so reading the registry (config validation) stays light
    from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    """A registered network and its metadata.

    Attributes:
        name: the value of ``model.name``.
        factory: (in_channels, channels, dropout, res_units) -> network returning logits (B, 1, H, W).
        stride: total downsampling factor (input sides must be multiples of it), or a function
            of the channels list for networks whose depth follows it.
        default_channels: the channels used when ``model.channels`` is null; None when the
            network has no channels knob.
        encoder_prefixes: state_dict key prefixes of the encoder (pretrained encoders, layer-wise LR).
        side_outputs: the most deep-supervision side outputs the network can emit in training
            (``model.deep_supervision``); 0: none. A factory of such a network takes `side_outputs`.
        image_head: the network can carry an image-level "has foreground" head (``model.image_head``);
            its factory then takes `image_head`.
        description: one line for `medseg models`.
    """

    name: str
    factory: Callable[..., "nn.Module"]
    stride: Union[int, Callable[[Sequence[int]], int]]
    default_channels: Optional[tuple[int, ...]] = None
    encoder_prefixes: tuple[str, ...] = ()
    side_outputs: int = 0
    image_head: bool = False
    description: str = ""

    def side_output_error(self, n: int) -> Optional[str]:
        """Why this network cannot emit `n` side outputs (`model.deep_supervision: n`), or None."""
        if n <= self.side_outputs:
            return None
        return f"model.deep_supervision: {n} side outputs, but model '{self.name}' emits " + (
            f"at most {self.side_outputs}" if self.side_outputs else "none (`medseg models` lists those that do)"
        )

    def image_head_error(self, wanted: bool) -> Optional[str]:
        """Why this network cannot carry an image head (`model.image_head: true`), or None."""
        if not wanted or self.image_head:
            return None
        return f"model.image_head: model '{self.name}' has no image head (`medseg models` lists those that do)"

    def channels(self, channels: Optional[Sequence[int]] = None) -> Optional[list[int]]:
        """The channels in force: the configured ones, else the spec's default."""
        if channels is not None:
            return list(channels)
        return list(self.default_channels) if self.default_channels is not None else None

    def output_stride(self, channels: Optional[Sequence[int]] = None) -> int:
        """Total downsampling of the network built with these channels (None: the default)."""
        if callable(self.stride):
            return int(self.stride(self.channels(channels) or []))
        return int(self.stride)


MODELS: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Make a network available as ``model.name: <spec.name>``."""
    if spec.name in MODELS:
        raise ValueError(f"model '{spec.name}' is registered twice")
    MODELS[spec.name] = spec
    return spec


def available_models() -> list[str]:
    return list(MODELS)


def get_model_spec(name: str) -> ModelSpec:
    """The registered spec, or a one-line error naming `model.name`."""
    if name not in MODELS:
        hint = difflib.get_close_matches(name, list(MODELS), n=1)
        raise MedsegError(f"config error: model.name: unknown model '{name}'" + (f" (did you mean '{hint[0]}'?)" if hint else ""))
    return MODELS[name]


def create_model(name: str, in_channels: int, channels: Optional[Sequence[int]] = None, dropout: float = 0.0, res_units: int = 2,
                 side_outputs: int = 0, image_head: bool = False) -> "nn.Module":
    """Build a registered network with one output channel (logits).

    Args:
        name: registry name (see `available_models()`).
        in_channels: image channels (1 grey, 3 RGB, 2k+1 for 2.5D).
        channels: feature channels per level (None: the model's default; ignored by models without the knob).
        dropout: dropout probability.
        res_units: unet residual units per level.
        side_outputs: deep-supervision side outputs in training (0: the network returns one tensor).
        image_head: an image-level "has foreground" head (training returns {"masks", "image"}).
    """
    spec = get_model_spec(name)
    error = spec.side_output_error(side_outputs) or spec.image_head_error(image_head)
    if error:
        raise MedsegError(f"config error: {error}")
    extra = {"side_outputs": side_outputs} if side_outputs else {}
    if image_head:
        extra["image_head"] = True
    return spec.factory(in_channels=in_channels, channels=spec.channels(channels), dropout=dropout, res_units=res_units, **extra)


def create_model_from_config(model, in_channels: int) -> "nn.Module":
    """The network a config's `model` section describes (training, the plan's step timing, a run folder).

    Args:
        model: the config's `model` section (name, channels, dropout, res_units, deep_supervision, image_head).
        in_channels: input channels of the data.
    """
    return create_model(model.name, in_channels, model.channels, model.dropout, model.res_units, model.deep_supervision,
                        model.image_head)
