"""MONAI's FlexibleUNet: a ResNet or EfficientNet encoder with a U-Net decoder.

With ``model.deep_supervision: n`` the network also emits n side outputs in training: a 1x1
convolution on each of the n decoder stages above the last one (1/2, 1/4, ... resolution),
which the loss scores against a max-pooled target (``loss.deep_supervision`` weighs them).
In eval mode it returns the full-resolution logits only, so inference, TTA and export see
the plain network; the side heads are a few hundred weights, unused there.

With ``model.image_head: true`` a linear layer on the deepest encoder features (average and
max pooled) also predicts whether the image has any foreground, trained by BCE against
"the mask is not empty" (``loss.image`` weighs it), the image-level classifier the SIIM-ACR
pneumothorax winners paired with their segmenters. In eval mode the network returns the logits
of sigmoid(mask) x sigmoid(image): one map, so nothing downstream changes.
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
def _heads_class():
    """The FlexibleUNet subclass with side heads and an image head (built on first use: MONAI is imported lazily)."""
    import torch
    import torch.nn.functional as F
    from monai.networks.nets import FlexibleUNet
    from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE

    class HeadedFlexibleUNet(FlexibleUNet):
        """FlexibleUNet with deep-supervision side outputs and/or an image-level head.

        In training it returns the mask logits (a list [full resolution, 1/2, 1/4, ...] with side
        outputs), or with the image head ``{"masks": those, "image": (B, 1) logits}``. In eval mode
        it returns one map of full-resolution logits: with the image head, the logits of
        sigmoid(mask) x sigmoid(image), so every verb, TTA and an export see one probability map in
        which an image the head calls empty is scaled down as a whole.

        Args:
            side_outputs: how many decoder stages above the last get a 1x1 logit head (0..4).
            image_head: a linear layer on the deepest encoder features (global average and max
                pooled) giving the logit of "the image has foreground".
            **kwargs: FlexibleUNet's arguments.
        """

        def __init__(self, side_outputs: int = 0, image_head: bool = False, **kwargs):
            super().__init__(**kwargs)
            blocks = self.decoder.blocks
            if not 0 <= side_outputs < len(blocks):
                raise ValueError(f"side_outputs must be 0..{len(blocks) - 1}, got {side_outputs}")
            # finest first: the stage before the last (1/2) is side output 1, as the loss weighs them
            stages = [blocks[len(blocks) - 2 - i] for i in range(side_outputs)]
            outs = kwargs.get("out_channels", 1)
            self.side_heads = torch.nn.ModuleList(
                torch.nn.Conv2d(_out_channels(b), outs, kernel_size=1) for b in stages
            )
            deepest = FLEXUNET_BACKBONE.register_dict[kwargs["backbone"]]["feature_channel"][-1]
            self.image_head = torch.nn.Linear(2 * deepest, 1) if image_head else None

        def _image_logit(self, deepest):
            return self.image_head(pool_deepest(deepest))

        def forward(self, inputs):
            feats = self.encoder(inputs)
            skips = feats[:-1][::-1]
            x = feats[-1]
            stages = []
            for i, block in enumerate(self.decoder.blocks):  # UNetDecoder.forward, keeping each stage's output
                x = block(x, skips[i] if i < self.skip_connect else None)
                stages.append(x)
            masks = self.segmentation_head(x)
            if self.training and self.side_heads:
                masks = [masks] + [head(stages[len(stages) - 2 - i]) for i, head in enumerate(self.side_heads)]
            if self.image_head is None:
                return masks
            image = self._image_logit(feats[-1])
            if self.training:
                return {"masks": masks, "image": image}
            # log(p_mask * p_image) and its complement in float32; capped below 0 so the logit stays finite
            log_p = (F.logsigmoid(masks.float()) + F.logsigmoid(image.float())[:, :, None, None]).clamp(max=-1e-6)
            return log_p - torch.log1p(-torch.exp(log_p))

    return HeadedFlexibleUNet


def pool_deepest(deepest):
    """(B, 2C) features an image head reads: the deepest encoder map (B, C, h, w) average- and max-pooled."""
    import torch
    import torch.nn.functional as F

    return torch.cat([F.adaptive_avg_pool2d(deepest, 1), F.adaptive_max_pool2d(deepest, 1)], dim=1).flatten(1)


def _pad_shortcut(x, planes: int, stride: int, spatial_dims: int):
    """MONAI's type-A ResNet shortcut (every `stride`-th pixel, zero channels appended, no gradient through it)
    written with slicing and `F.pad`: MONAI builds the zeros with `torch.zeros(x.size(0), ...)`, which the ONNX
    tracer freezes at the example's batch size, so an exported flexunet-resnet* failed on any other batch."""
    import torch.nn.functional as F

    out = x[(slice(None), slice(None)) + (slice(None, None, stride),) * spatial_dims]
    return F.pad(out.detach(), [0, 0] * spatial_dims + [0, planes - out.shape[1]])


def _traceable_shortcuts(net):
    """Swap MONAI's type-A shortcut functions in a network's ResNet blocks for `_pad_shortcut` (same values)."""
    for module in net.modules():
        ds = getattr(module, "downsample", None)
        if isinstance(ds, functools.partial) and getattr(ds.func, "__name__", "") == "_downsample_basic_block":
            module.downsample = functools.partial(_pad_shortcut, **ds.keywords)
    return net


def _out_channels(block) -> int:
    """Output channels of one MONAI UpCat decoder stage (its last convolution's)."""
    convs = [m for m in block.modules() if hasattr(m, "out_channels") and hasattr(m, "kernel_size")]
    return int(convs[-1].out_channels)


def _flex(backbone: str):
    def build(in_channels: int, channels: Optional[Sequence[int]], dropout: float, res_units: int = 2,
              side_outputs: int = 0, image_head: bool = False) -> "nn.Module":
        from monai.networks.nets import FlexibleUNet

        kwargs = dict(
            in_channels=in_channels,
            out_channels=1,
            backbone=backbone,
            pretrained=False,  # weights cannot be downloaded here: use model.pretrained (a local file)
            spatial_dims=2,
            dropout=dropout,
        )
        if not side_outputs and not image_head:
            return _traceable_shortcuts(FlexibleUNet(**kwargs))
        return _traceable_shortcuts(_heads_class()(side_outputs=side_outputs, image_head=image_head, **kwargs))

    return build


for _b in BACKBONES:
    register_model(ModelSpec(
        name=f"flexunet-{_b}", factory=_flex(_b), stride=32, encoder_prefixes=("encoder.",), side_outputs=SIDE_OUTPUTS, image_head=True,
        description=f"MONAI FlexibleUNet, {_b} encoder",
    ))
