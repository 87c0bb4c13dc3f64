"""segmentation_models_pytorch networks, registered only when the optional extra is installed (`medseg[smp]`).

smp needs torchvision, which must match the installed torch (on this project's CPU build it
does not import), so the registry checks for the package without importing it; the factory
imports it when a run builds one.
"""

from __future__ import annotations

from importlib.util import find_spec
from typing import TYPE_CHECKING, Optional, Sequence

from medseg.models.registry import ModelSpec, register_model

if TYPE_CHECKING:
    from torch import nn

ARCHITECTURES = {"unet": "Unet", "unetplusplus": "UnetPlusPlus", "fpn": "FPN", "deeplabv3plus": "DeepLabV3Plus"}
ENCODERS = ("resnet34", "resnet50", "efficientnet-b0", "efficientnet-b4")


def _smp(arch: str, encoder: str):
    def build(in_channels: int, channels: Optional[Sequence[int]], dropout: float, res_units: int = 2) -> "nn.Module":
        import segmentation_models_pytorch as smp

        # encoder_weights=None: nothing is downloaded; use model.pretrained for local weights
        return getattr(smp, ARCHITECTURES[arch])(encoder_name=encoder, encoder_weights=None, in_channels=in_channels, classes=1)

    return build


def available() -> bool:
    """The optional package is installed (found without importing it)."""
    return find_spec("segmentation_models_pytorch") is not None


if available():
    for _arch in ARCHITECTURES:
        for _enc in ENCODERS:
            register_model(ModelSpec(
                name=f"smp-{_arch}-{_enc}", factory=_smp(_arch, _enc), stride=32, encoder_prefixes=("encoder.",),
                description=f"segmentation_models_pytorch {ARCHITECTURES[_arch]}, {_enc} encoder",
            ))
