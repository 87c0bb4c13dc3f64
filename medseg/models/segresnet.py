"""MONAI's SegResNet (Myronenko 2018) in 2D: the registration example of docs/ARCHITECTURE.md."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

from medseg.models.registry import ModelSpec, register_model

if TYPE_CHECKING:  # the factories import torch (through MONAI) when they build
    from torch import nn

BLOCKS_DOWN = (1, 2, 2, 4)  # MONAI's default: three 2x downsamplings


def _segresnet(in_channels: int, channels: Optional[Sequence[int]], dropout: float, res_units: int = 2) -> "nn.Module":
    from monai.networks.nets import SegResNet

    return SegResNet(spatial_dims=2, in_channels=in_channels, out_channels=1, init_filters=16, blocks_down=BLOCKS_DOWN,
                     dropout_prob=dropout or None)


register_model(ModelSpec(
    name="segresnet", factory=_segresnet, stride=2 ** (len(BLOCKS_DOWN) - 1), encoder_prefixes=("convInit.", "down_layers."),
    description="MONAI SegResNet, 16 initial filters",
))
