"""Model registry: a name in config -> a MONAI 2D network with one output channel (logits)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from medseg.errors import MedsegError

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    def deco(fn):
        MODELS[name] = fn
        return fn

    return deco


def available_models() -> list[str]:
    return list(MODELS)


@register_model("unet")
def _unet(in_channels: int, channels: list[int], dropout: float, res_units: int = 2) -> nn.Module:
    from monai.networks.nets import UNet

    chans = tuple(channels)
    return UNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=1,
        channels=chans,
        strides=(2,) * (len(chans) - 1),
        num_res_units=res_units,
        dropout=dropout,
    )


@register_model("basicunet")
def _basicunet(in_channels: int, channels: list[int], dropout: float, res_units: int = 2) -> nn.Module:
    from monai.networks.nets import BasicUNet

    feats = tuple(channels) if len(channels) == 6 else (32, 32, 64, 128, 256, 32)
    return BasicUNet(spatial_dims=2, in_channels=in_channels, out_channels=1, features=feats, dropout=dropout)


def _flex(backbone: str):
    def build(in_channels: int, channels: list[int], dropout: float, res_units: int = 2) -> nn.Module:
        from monai.networks.nets import FlexibleUNet

        return FlexibleUNet(
            in_channels=in_channels,
            out_channels=1,
            backbone=backbone,
            pretrained=False,  # weights cannot be downloaded here: use model.pretrained (a local file)
            spatial_dims=2,
            dropout=dropout,
        )

    return build


for _b in ["resnet18", "resnet34", "resnet50"] + [f"efficientnet-b{i}" for i in range(5)]:
    register_model(f"flexunet-{_b}")(_flex(_b))


def load_weights(model: nn.Module, path: Path) -> dict:
    """Load a local weights file (plain state_dict or a Lightning checkpoint) into model.

    Keys may carry a 'model.' or 'net.' prefix; shapes that do not match (e.g. a first conv
    for another channel count) are skipped and reported. Returns counts for the log.
    """
    path = Path(path)
    if not path.is_file():
        raise MedsegError(f"config error: model.pretrained: {path}: no such file")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file is a user error
        raise MedsegError(f"model.pretrained: {path}: cannot read weights ({type(e).__name__})") from None
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict):
        raise MedsegError(f"model.pretrained: {path}: not a state_dict or checkpoint")
    own = model.state_dict()
    loaded, skipped = {}, []
    for k, v in state.items():
        for prefix in ("", "net.", "model.", "net.model.", "module."):
            if k.startswith(prefix) and k[len(prefix):] in own:
                kk = k[len(prefix):]
                if own[kk].shape == v.shape:
                    loaded[kk] = v
                else:
                    skipped.append(kk)
                break
    if not loaded:
        raise MedsegError(f"model.pretrained: {path}: no tensor matches the network '{type(model).__name__}'")
    model.load_state_dict(loaded, strict=False)
    return {"loaded": len(loaded), "skipped_shape": skipped, "missing": len(own) - len(loaded)}


def create_model(name: str, in_channels: int, channels: list[int] | None = None, dropout: float = 0.0, res_units: int = 2) -> nn.Module:
    """Build a registered network with one output channel (logits).

    Args:
        name: registry name (see `available_models()`).
        in_channels: image channels (1 grey, 3 RGB, 2k+1 for 2.5D).
        channels: unet feature channels per level (basicunet: 6 features).
        dropout: dropout probability.
        res_units: unet residual units per level.
    """
    if name not in MODELS:
        raise MedsegError(f"config error: model.name: unknown model '{name}'")
    return MODELS[name](in_channels=in_channels, channels=list(channels or [16, 32, 64, 128, 256]), dropout=dropout, res_units=res_units)
