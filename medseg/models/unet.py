"""MONAI's UNet (residual units, depth from the channels list) and BasicUNet."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

from medseg.models.registry import ModelSpec, register_model

if TYPE_CHECKING:  # the factories import torch (through MONAI) when they build
    from torch import nn

UNET_CHANNELS = (16, 32, 64, 128, 256)
BASICUNET_FEATURES = (32, 32, 64, 128, 256, 32)


def _unet(in_channels: int, channels: Sequence[int], dropout: float, res_units: int = 2) -> "nn.Module":
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


def _basicunet(in_channels: int, channels: Optional[Sequence[int]], dropout: float, res_units: int = 2) -> "nn.Module":
    from monai.networks.nets import BasicUNet

    feats = tuple(channels) if channels is not None and len(channels) == 6 else BASICUNET_FEATURES
    return BasicUNet(spatial_dims=2, in_channels=in_channels, out_channels=1, features=feats, dropout=dropout)


register_model(ModelSpec(
    name="unet", factory=_unet, stride=lambda chans: 2 ** max(0, len(chans) - 1), default_channels=UNET_CHANNELS,
    description="MONAI UNet with residual units; one level per entry of model.channels",
))
register_model(ModelSpec(
    name="basicunet", factory=_basicunet, stride=16, default_channels=BASICUNET_FEATURES,
    description="MONAI BasicUNet (6 feature sizes)",
))
