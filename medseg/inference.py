"""Inference shared by training-time validation, `evaluate`, `tune`, `predict`, the report and the doctor.

One function produces probabilities everywhere, so a metric recomputed from the saved
checkpoint equals the one training reported (same precision, same batching-independent
eval-mode network).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from medseg.runtime import autocast_for, inference_device, inference_precision

if TYPE_CHECKING:
    import torch
    from torch import nn


def predict_probs(
    net: "nn.Module",
    images: np.ndarray,
    batch_size: int = 16,
    precision: str = "32-true",
    device: torch.device | str = "cpu",
    channels_last: bool = False,
    tta: bool = False,
) -> np.ndarray:
    """Sigmoid probabilities (N, H, W) float32 for images (N, C, H, W).

    Args:
        net: network returning logits (B, 1, H, W) (or a list, first = full resolution).
        images: normalised images at the network's input size.
        batch_size: images per forward pass (does not change results: the net is in eval mode).
        precision: Lightning precision string used in training, for the matching autocast.
        device: where to run.
        channels_last: use channels_last memory format.
        tta: average with the horizontally flipped prediction.
    """
    import torch  # here: the verbs that only read run folders start without torch

    device = torch.device(device)
    was_training = net.training
    net.eval()
    out = np.empty((len(images),) + images.shape[2:], dtype=np.float32)
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size], dtype=np.float32)).to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast_for(precision, device):
                logits = _forward(net, x)
                if tta:
                    logits = (logits + torch.flip(_forward(net, torch.flip(x, dims=[-1])), dims=[-1])) / 2
            out[start : start + len(x)] = torch.sigmoid(logits.float())[:, 0].cpu().numpy()
    net.train(was_training)
    return out


def run_probs(net: "nn.Module", images: np.ndarray, cfg, state: dict, tta: bool = False) -> np.ndarray:
    """`predict_probs` with a run's settings: its eval batch size, trained precision and memory format.

    Every verb that runs a saved network calls this, so the device and precision rule
    (`runtime.inference_device`, `runtime.inference_precision`) is the same for all of them.

    Args:
        net: the run's network.
        images: normalised images at the network's input size.
        cfg: the run's Config.
        state: the run's state.json (its `precision`).
        tta: average with the horizontally flipped prediction.
    """
    device = inference_device(cfg)
    precision = inference_precision(str(state.get("precision", "32-true")), device)
    return predict_probs(net, images, cfg.eval.batch_size, precision, device, cfg.train.channels_last, tta=tta)


def _forward(net: "nn.Module", x: "torch.Tensor") -> "torch.Tensor":
    y = net(x)
    if isinstance(y, (list, tuple)):
        y = y[0]
    return y
