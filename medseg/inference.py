"""Inference shared by training-time validation, `evaluate`, `tune`, `predict`, the report and the doctor.

One function produces probabilities everywhere, so a metric recomputed from the saved
checkpoint equals the one training reported (same precision, same batching-independent
eval-mode network).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence, Union

import numpy as np

from medseg.data.arrays import take
from medseg.data.tta import DIHEDRAL, FLIP, check_tta_names
from medseg.metrics.validation import case_chunks
from medseg.runtime import autocast_for, inference_device, inference_precision

__all__ = ["DIHEDRAL", "FLIP", "predict_prob_sets", "predict_probs", "run_prob_sets", "run_probs", "run_probs_by_case", "tta_set"]

if TYPE_CHECKING:
    import torch
    from torch import nn


# The dihedral group of the square (`data.tta`), applied in-plane to the last two axes of an (N, C, H, W)
# tensor: for 2.5D inputs the channels are neighbouring slices, so in-plane transforms are valid there too.


def _transform(name: str, x, inverse: bool = False):
    import torch

    if name == "identity":
        return x
    if name == "hflip":
        return torch.flip(x, dims=[-1])
    if name == "vflip":
        return torch.flip(x, dims=[-2])
    if name == "rot180":
        return torch.rot90(x, 2, dims=[-2, -1])
    if name in ("rot90", "rot270"):
        k = 1 if name == "rot90" else 3
        return torch.rot90(x, -k if inverse else k, dims=[-2, -1])
    if name == "transpose":
        return x.transpose(-2, -1)
    if name == "antitranspose":
        return torch.rot90(x, 2, dims=[-2, -1]).transpose(-2, -1)
    raise ValueError(f"unknown TTA transform '{name}'; choose from {', '.join(DIHEDRAL)}")


def tta_set(tta: Union[bool, None, Sequence[str]]) -> tuple[str, ...]:
    """The transforms a `tta` value means: False/None -> identity only, True -> identity + hflip, a list as given."""
    if tta is None or tta is False:
        return ("identity",)
    if tta is True:
        return FLIP
    return check_tta_names(tta) or ("identity",)


def predict_probs(
    net: Union["nn.Module", Sequence["nn.Module"]],
    images: np.ndarray,
    batch_size: int = 16,
    precision: str = "32-true",
    device: torch.device | str = "cpu",
    channels_last: bool = False,
    tta: Union[bool, None, Sequence[str]] = False,
    window=None,
) -> np.ndarray:
    """Sigmoid probabilities (N, H, W) float32 for images (N, C, H, W), one network or the mean of several.

    Args:
        net: a network returning logits (B, 1, H, W) (or a list, first = full resolution), or a
            list of networks (an ensemble: their probabilities are averaged).
        images: normalised images at the network's input size.
        batch_size: images per forward pass (does not change results: the nets are in eval mode).
        precision: Lightning precision string used in training, for the matching autocast.
        device: where to run.
        channels_last: use channels_last memory format.
        tta: test-time augmentation: False (none), True (horizontal flip), or transform names
            from `DIHEDRAL`; each transformed prediction is mapped back and the probabilities are
            averaged (in probability space, not logits).
        window: `config.SlidingWindowConfig` (or None): with a roi_size, each image is predicted
            window by window (`monai.inferers.sliding_window_inference`, `batch_size` windows per
            pass) and the windows blended; TTA transforms the whole image, then slides.
    """
    return predict_prob_sets(net, images, [tta_set(tta)], batch_size, precision, device, channels_last, window)[0]


def predict_prob_sets(
    net: Union["nn.Module", Sequence["nn.Module"]],
    images: np.ndarray,
    sets: Sequence[Sequence[str]],
    batch_size: int = 16,
    precision: str = "32-true",
    device: torch.device | str = "cpu",
    channels_last: bool = False,
    window=None,
) -> list[np.ndarray]:
    """`predict_probs` for several TTA sets at once: each transform runs once per batch and feeds every set holding it.

    Args:
        sets: TTA sets (lists of `DIHEDRAL` names); the result has one (N, H, W) array per set.
        (the rest as `predict_probs`)
    """
    import torch  # here: the verbs that only read run folders start without torch

    nets = list(net) if isinstance(net, (list, tuple)) else [net]
    sets = [tta_set(s) for s in sets]
    needed = list(dict.fromkeys(t for s in sets for t in s))
    device = torch.device(device)
    was_training = [n.training for n in nets]
    # the nets run where the images go; each returns to where it was (a caller's network is not moved for good)
    homes = [next(iter(n.parameters()), torch.empty(0)).device for n in nets]
    for n in nets:
        n.eval()
        n.to(device)
    outs = [np.empty((len(images),) + images.shape[2:], dtype=np.float32) for _ in sets]
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = np.ascontiguousarray(images[start : start + batch_size], dtype=np.float32)
            real = len(batch)
            if real < batch_size <= len(images):
                # the short last batch padded to the full one: every new batch shape makes the CPU backend
                # (oneDNN) cache more primitives and scratch memory, which then grows with the number of
                # distinct volume lengths scored (+150 MiB over 15 new shapes for a small U-Net at 256²,
                # bench/evaluate_memory_probes.py)
                batch = np.concatenate([batch, np.zeros((batch_size - real, *batch.shape[1:]), np.float32)])
            x = torch.from_numpy(batch).to(device)
            probs = {}
            for name in needed:
                xt = _transform(name, x)
                if channels_last:
                    xt = xt.contiguous(memory_format=torch.channels_last)
                total = None
                for n in nets:
                    with autocast_for(precision, device):
                        logits = _windowed(n, xt, window, batch_size, swap=name in _SWAPS_AXES)
                    p = torch.sigmoid(logits.float())
                    total = p if total is None else total + p
                probs[name] = _transform(name, total / len(nets), inverse=True)[:, 0]
            for out, s in zip(outs, sets):
                out[start : start + real] = (sum(probs[t] for t in s) / len(s))[:real].cpu().numpy()
    for n, was, home in zip(nets, was_training, homes):
        n.train(was)
        if home != device:
            n.to(home)
    return outs


def run_probs(net, images: np.ndarray, cfg, state: dict, tta: Union[bool, None, Sequence[str]] = False) -> np.ndarray:
    """`predict_probs` with a run's settings: its eval batch size, trained precision, memory format and sliding window.

    Every verb that runs a saved network calls this, so the device and precision rule
    (`runtime.inference_device`, `runtime.inference_precision`) is the same for all of them.

    Args:
        net: the run's network.
        images: normalised images at the network's input size.
        cfg: the run's Config.
        state: the run's state.json (its `precision`).
        tta: test-time augmentation, as `predict_probs`.
    """
    device = inference_device(cfg)
    precision = inference_precision(str(state.get("precision", "32-true")), device)
    return predict_probs(net, images, cfg.eval.batch_size, precision, device, cfg.train.channels_last, tta=tta,
                         window=cfg.eval.sliding_window)


def run_probs_by_case(net, part, cfg, state: dict):
    """`run_probs` over a split part a chunk of whole cases at a time (`metrics.validation.case_chunks`).

    What evaluate, the report and the doctor go through a part with, so memory holds one chunk
    (a few eval batches of images, or one volume), never the part's probabilities.

    Args:
        part: `data.arrays.SplitArrays` (in memory or read from the cache).
        net / cfg / state: as `run_probs`.

    Yields:
        (sample indices, their images, probabilities, masks (uint8), meta) per chunk.
    """
    for idx in case_chunks(part.meta, cfg.eval.batch_size):
        images = take(part.images, idx)  # read a batch at a time by whoever runs the network on them
        yield idx, images, run_probs(net, images, cfg, state), np.asarray(part.masks[idx]), [part.meta[i] for i in idx]


def _forward(net: "nn.Module", x: "torch.Tensor") -> "torch.Tensor":
    y = net(x)
    if isinstance(y, (list, tuple)):
        y = y[0]
    return y


# transforms after which an image's height and width are swapped (a non-square window swaps too)
_SWAPS_AXES = ("rot90", "rot270", "transpose", "antitranspose")


def _windowed(net: "nn.Module", x: "torch.Tensor", window, batch_size: int, swap: bool = False) -> "torch.Tensor":
    """The network's logits of x: in one pass, or window by window when `window.roi_size` is set."""
    roi = getattr(window, "roi_size", None)
    if roi is None:
        return _forward(net, x)
    from monai.inferers import sliding_window_inference

    roi = tuple(int(r) for r in (roi[::-1] if swap else roi))
    return sliding_window_inference(
        x, roi_size=roi, sw_batch_size=max(1, int(batch_size)), predictor=lambda t: _forward(net, t),
        overlap=float(window.overlap), mode=window.mode, sigma_scale=float(window.sigma_scale),
    )


def run_prob_sets(net, images: np.ndarray, cfg, state: dict, sets: Sequence[Sequence[str]]) -> list[np.ndarray]:
    """`predict_prob_sets` with a run's settings (see `run_probs`)."""
    device = inference_device(cfg)
    precision = inference_precision(str(state.get("precision", "32-true")), device)
    return predict_prob_sets(net, images, sets, cfg.eval.batch_size, precision, device, cfg.train.channels_last,
                             cfg.eval.sliding_window)
