"""MONAI's FlexibleUNet: a ResNet or EfficientNet encoder with a U-Net decoder.

With ``model.deep_supervision: n`` the network also emits n side outputs in training: a 1x1
convolution on each of the n decoder stages above the last one (1/2, 1/4, ... resolution),
which the loss scores against a max-pooled target (``loss.deep_supervision`` weighs them).
In eval mode it returns the full-resolution logits only, so inference, TTA and export see
the plain network; the side heads are a few hundred weights, unused there.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Optional, Sequence

from medseg.models.registry import ModelSpec, register_model

if TYPE_CHECKING:  # the factories import torch (through MONAI) when they build
    from torch import nn

BACKBONES = ["resnet18", "resnet34", "resnet50"] + [f"efficientnet-b{i}" for i in range(5)]
# MONAI's decoder has 5 stages (strides 16, 8, 4, 2, 1): the 4 above the last can carry a side output
SIDE_OUTPUTS = 4


@functools.cache
def _side_output_class():
    """The FlexibleUNet subclass with side heads (built on first use: MONAI is imported lazily)."""
    import torch
    from monai.networks.nets import FlexibleUNet

    class DeepSupervisedFlexibleUNet(FlexibleUNet):
        """FlexibleUNet returning [full resolution, 1/2, 1/4, ...] logits in training.

        Args:
            side_outputs: how many decoder stages above the last get a 1x1 logit head (1..4).
            **kwargs: FlexibleUNet's arguments.
        """

        def __init__(self, side_outputs: int, **kwargs):
            super().__init__(**kwargs)
            blocks = self.decoder.blocks
            if not 1 <= side_outputs < len(blocks):
                raise ValueError(f"side_outputs must be 1..{len(blocks) - 1}, got {side_outputs}")
            # finest first: the stage before the last (1/2) is side output 1, as the loss weighs them
            stages = [blocks[len(blocks) - 2 - i] for i in range(side_outputs)]
            outs = kwargs.get("out_channels", 1)
            self.side_heads = torch.nn.ModuleList(
                torch.nn.Conv2d(_out_channels(b), outs, kernel_size=1) for b in stages
            )

        def forward(self, inputs):
            if not self.training:
                return super().forward(inputs)
            feats = self.encoder(inputs)
            skips = feats[:-1][::-1]
            x = feats[-1]
            stages = []
            for i, block in enumerate(self.decoder.blocks):  # UNetDecoder.forward, keeping each stage's output
                x = block(x, skips[i] if i < self.skip_connect else None)
                stages.append(x)
            side = [head(stages[len(stages) - 2 - i]) for i, head in enumerate(self.side_heads)]
            return [self.segmentation_head(x)] + side

    return DeepSupervisedFlexibleUNet


def _out_channels(block) -> int:
    """Output channels of one MONAI UpCat decoder stage (its last convolution's)."""
    convs = [m for m in block.modules() if hasattr(m, "out_channels") and hasattr(m, "kernel_size")]
    return int(convs[-1].out_channels)


def _flex(backbone: str):
    def build(in_channels: int, channels: Optional[Sequence[int]], dropout: float, res_units: int = 2,
              side_outputs: int = 0) -> "nn.Module":
        from monai.networks.nets import FlexibleUNet

        kwargs = dict(
            in_channels=in_channels,
            out_channels=1,
            backbone=backbone,
            pretrained=False,  # weights cannot be downloaded here: use model.pretrained (a local file)
            spatial_dims=2,
            dropout=dropout,
        )
        if not side_outputs:
            return FlexibleUNet(**kwargs)
        return _side_output_class()(side_outputs=side_outputs, **kwargs)

    return build


for _b in BACKBONES:
    register_model(ModelSpec(
        name=f"flexunet-{_b}", factory=_flex(_b), stride=32, encoder_prefixes=("encoder.",), side_outputs=SIDE_OUTPUTS,
        description=f"MONAI FlexibleUNet, {_b} encoder",
    ))
