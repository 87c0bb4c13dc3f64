"""Every registered network: exported to ONNX at batch 1, does it run a batch of 3 and match torch?

Also checks that the flexunet family's traceable ResNet shortcut (medseg.models.flexunet) gives MONAI's
values and gradients exactly, on each flexunet backbone with a type-A shortcut or none.

    .venv/bin/python bench/export_batch_check.py
"""

from __future__ import annotations

import functools
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medseg.models import available_models, create_model  # noqa: E402
from medseg.models.flexunet import _traceable_shortcuts  # noqa: E402


def onnx_batch_check(name: str, folder: Path) -> str:
    import onnxruntime as ort

    torch.manual_seed(0)
    net = create_model(name, 1).eval()
    path = folder / f"{name}.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.zeros(1, 1, 64, 64), str(path), input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "b"}, "y": {0: "b"}}, dynamo=False)
    x = torch.randn(3, 1, 64, 64)
    try:
        got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    except Exception as e:  # noqa: BLE001 — the failure is the finding
        return f"FAILS at batch 3: {str(e)[:120]}"
    with torch.no_grad():
        ref = net(x).numpy()
    return f"batch 3 ok, max |onnx - torch| {float(np.abs(got - ref).max()):.1e}"


def shortcut_check(backbone: str) -> str:
    from monai.networks.nets import FlexibleUNet

    kwargs = dict(in_channels=3, out_channels=1, backbone=backbone, pretrained=False, spatial_dims=2)
    torch.manual_seed(0)
    monai_net = FlexibleUNet(**kwargs)
    ours = FlexibleUNet(**kwargs)
    ours.load_state_dict(monai_net.state_dict())
    swapped = sum(isinstance(getattr(m, "downsample", None), functools.partial) for m in monai_net.modules())
    _traceable_shortcuts(ours)
    x = torch.randn(2, 3, 64, 64)
    torch.manual_seed(1)  # the same drop-connect draws in both (efficientnet)
    a = monai_net(x)
    torch.manual_seed(1)
    b = ours(x)
    a.sum().backward()
    b.sum().backward()
    grad = max(float((p.grad - q.grad).abs().max()) for p, q in zip(monai_net.parameters(), ours.parameters()) if p.grad is not None)
    return f"{swapped} type-A shortcuts, max |forward diff| {float((a - b).detach().abs().max()):.1e}, max |grad diff| {grad:.1e}"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for name in available_models():
            print(f"{name:28s} {onnx_batch_check(name, Path(tmp))}", flush=True)
    for backbone in ("resnet18", "resnet34", "resnet50", "efficientnet-b0"):
        print(f"shortcut {backbone:19s} {shortcut_check(backbone)}", flush=True)


if __name__ == "__main__":
    main()
