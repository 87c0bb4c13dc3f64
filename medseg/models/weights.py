"""Weights files from disk, loaded without running code from them.

A run folder or a weights file is something people share, so nothing is unpickled beyond
tensors and plain containers: `torch.load(weights_only=True)` refuses any other object, and
medseg turns that refusal into one line naming the file.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

from medseg.errors import MedsegError

# the share of the network's tensors a pretrained file must fill before it is used (model.pretrained_min_share)
DEFAULT_MIN_SHARE = 0.5


def load_torch_file(path: Path, what: str) -> dict:
    """A checkpoint or state_dict file read with `weights_only=True`; a one-line error otherwise.

    Args:
        path: the file.
        what: how the message names it (a config key, or the run file).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise MedsegError(f"{what}: {path}: no such file")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only refuses anything but tensors and plain containers: the file wants to run code
        first = (str(e).strip().splitlines() or [""])[0][:120]
        raise MedsegError(f"{what}: {path}: refused, it holds objects beyond tensors and plain containers, which "
                          f"would run code when loaded ({first})") from None
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file is the user's to fix
        raise MedsegError(f"{what}: {path}: unreadable ({type(e).__name__}: {str(e).strip()[:120]})") from None
    if not isinstance(blob, dict):
        raise MedsegError(f"{what}: {path}: not a state_dict or checkpoint (a {type(blob).__name__})")
    return blob


# wrappers other tools put around a network's keys (Lightning's module attribute, DataParallel, hub dicts)
WRAPPER_PREFIXES = ("", "net.", "model.", "module.", "net.model.", "model.module.")
# MONAI numbers EfficientNet blocks per stage (_blocks.STAGE.BLOCK.), lukemelas' checkpoints globally (_blocks.BLOCK.)
_STAGE_INDEX = re.compile(r"(.+)\.\d+(\.\d+\..+)")


def _state_of(blob: dict) -> dict:
    for key in ("state_dict", "model", "model_state_dict", "net"):
        inner = blob.get(key)
        if isinstance(inner, dict) and any(hasattr(v, "shape") for v in inner.values()):
            return inner
    return blob


def adapt_input_conv(weight, in_channels: int):
    """A first-convolution weight made for another number of input channels (timm's rule).

    RGB weights on a grey input are summed over their channels (a grey image is R = G = B);
    otherwise the RGB filters are repeated and scaled so the activation keeps its size.
    """
    import torch

    have = weight.shape[1]
    if have == in_channels:
        return weight
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = -(-in_channels // have)
    return torch.cat([weight] * reps, dim=1)[:, :in_channels] * (have / in_channels)


def _fits(own, value) -> bool:
    """value fills own as it is, or as a first convolution for another channel count."""
    if not hasattr(value, "shape"):
        return False
    if tuple(own.shape) == tuple(value.shape):
        return True
    return own.ndim == 4 and value.ndim == 4 and own.shape[0] == value.shape[0] and own.shape[2:] == value.shape[2:]


def _by_names(state: dict, own: dict, encoder_prefixes: tuple[str, ...]) -> tuple[dict, list[str]]:
    """Match file keys to the network's by name: wrapper prefixes, encoder-only files, MONAI's EfficientNet stage index."""
    alias: dict[str, str] = {}
    for k in own:
        alias.setdefault(k, k)
        for ep in encoder_prefixes:
            if k.startswith(ep):
                bare = k[len(ep):]
                alias.setdefault(bare, k)
                alias.setdefault(_STAGE_INDEX.sub(r"\1\2", bare), k)
    loaded, skipped = {}, []
    for k, v in state.items():
        for prefix in WRAPPER_PREFIXES:
            target = alias.get(k[len(prefix):]) if k.startswith(prefix) else None
            if target is not None:
                if _fits(own[target], v):
                    loaded[target] = v
                else:
                    skipped.append(target)
                break
    return loaded, skipped


def _by_order(state: dict, own: dict, encoder_prefixes: tuple[str, ...]) -> dict:
    """Match an encoder-only file whose names follow another library (timm, torchvision) by tensor order and shape.

    The same architecture registers its tensors in the same order whatever the names; the
    first tensor whose shape does not fit ends the match.
    """
    encoder = [k for k in own if any(k.startswith(ep) for ep in encoder_prefixes)]
    values = [v for v in state.values() if hasattr(v, "shape")]
    loaded = {}
    for k, v in zip(encoder, values):
        if not _fits(own[k], v):
            break
        loaded[k] = v
    return loaded


def load_weights(model, path: Path, min_share: float = DEFAULT_MIN_SHARE, encoder_prefixes: tuple[str, ...] = ()) -> dict:
    """Load a local weights file into model: a whole network, or an encoder alone.

    Accepted: medseg's own checkpoints and state_dicts (keys may carry 'net.', 'model.' or
    'module.'); encoder-only state_dicts as torchvision and timm save them for ResNets
    (`conv1`, `layer1.0.conv1`, ...; the classifier is skipped) and lukemelas/MONAI
    EfficientNets (`_conv_stem`, `_blocks.N.`); other encoder-only files of the same
    architecture (timm or torchvision EfficientNet names) by tensor order and shape. A first
    convolution made for RGB is adapted to the input's channels (summed for grey). A file that
    fills less than `min_share` of the network's tensors (or, for an encoder-only file, of the
    encoder's) is refused: it was made for another network.

    Args:
        model: the network.
        path: the weights file.
        min_share: the smallest share of the network's (encoder's) tensors the file must fill.
        encoder_prefixes: key prefixes of the network's encoder (its `ModelSpec`).

    Returns:
        counts for the log: loaded, skipped_shape (names matched, shapes not), missing,
        share (of the network), encoder_share (of the encoder; None without one), method.
    """
    blob = load_torch_file(path, "model.pretrained")
    state = _state_of(blob)
    own = model.state_dict()
    loaded, skipped = _by_names(state, own, encoder_prefixes)
    method = "names"
    encoder = [k for k in own if any(k.startswith(ep) for ep in encoder_prefixes)]
    if encoder and len([k for k in loaded if k in set(encoder)]) < min_share * len(encoder):
        by_order = _by_order(state, own, encoder_prefixes)
        if len(by_order) > len(loaded):
            loaded, skipped, method = by_order, [], "order"
    if not loaded:
        raise MedsegError(f"model.pretrained: {path}: no tensor matches the network '{type(model).__name__}'")
    share = len(loaded) / max(1, len(own))
    encoder_share = len(set(loaded) & set(encoder)) / len(encoder) if encoder else None
    best = max(share, encoder_share or 0.0)
    if best < min_share:
        whose = f"the network's {len(own)} tensors" + (f" ({len(set(loaded) & set(encoder))} of its encoder's {len(encoder)})" if encoder else "")
        raise MedsegError(
            f"model.pretrained: {path}: fills only {len(loaded)} of {whose} ({best:.0%} < model.pretrained_min_share "
            f"{min_share:g}); {len(skipped)} matched by name but not by shape"
        )
    fitted = {k: adapt_input_conv(v, own[k].shape[1]) if tuple(v.shape) != tuple(own[k].shape) else v for k, v in loaded.items()}
    model.load_state_dict(fitted, strict=False)
    return {"loaded": len(loaded), "skipped_shape": skipped, "missing": len(own) - len(loaded), "share": share,
            "encoder_share": encoder_share, "method": method}
