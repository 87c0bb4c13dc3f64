"""MONAI's FlexibleUNet: a ResNet or EfficientNet encoder with a U-Net decoder."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

from medseg.models.registry import ModelSpec, register_model

if TYPE_CHECKING:  # the factories import torch (through MONAI) when they build
    from torch import nn

BACKBONES = ["resnet18", "resnet34", "resnet50"] + [f"efficientnet-b{i}" for i in range(5)]


def _flex(backbone: str):
    def build(in_channels: int, channels: Optional[Sequence[int]], dropout: float, res_units: int = 2) -> "nn.Module":
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


for _b in BACKBONES:
    register_model(ModelSpec(
        name=f"flexunet-{_b}", factory=_flex(_b), stride=32, encoder_prefixes=("encoder.",),
        description=f"MONAI FlexibleUNet, {_b} encoder",
    ))
