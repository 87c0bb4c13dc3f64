"""Weights files from disk, loaded without running code from them.

A run folder or a weights file is something people share, so nothing is unpickled beyond
tensors and plain containers: `torch.load(weights_only=True)` refuses any other object, and
medseg turns that refusal into one line naming the file.
"""

from __future__ import annotations

import pickle
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


def load_weights(model, path: Path, min_share: float = DEFAULT_MIN_SHARE) -> dict:
    """Load a local weights file (plain state_dict or a Lightning checkpoint) into model.

    Keys may carry a 'model.', 'net.' or 'module.' prefix; shapes that do not match (e.g. a
    first conv for another channel count) are skipped and reported. A file that fills less
    than `min_share` of the network's tensors is refused: it was most likely made for another
    network. Returns the counts for the log.

    Args:
        model: the network.
        path: the weights file.
        min_share: the smallest share of the network's tensors the file must fill.
    """
    blob = load_torch_file(path, "model.pretrained")
    state = blob.get("state_dict", blob)
    if not isinstance(state, dict):
        raise MedsegError(f"model.pretrained: {path}: not a state_dict or checkpoint")
    own = model.state_dict()
    loaded, skipped = {}, []
    for k, v in state.items():
        for prefix in ("", "net.", "model.", "net.model.", "module."):
            if k.startswith(prefix) and k[len(prefix):] in own:
                kk = k[len(prefix):]
                if hasattr(v, "shape") and own[kk].shape == v.shape:
                    loaded[kk] = v
                else:
                    skipped.append(kk)
                break
    share = len(loaded) / max(1, len(own))
    if not loaded:
        raise MedsegError(f"model.pretrained: {path}: no tensor matches the network '{type(model).__name__}'")
    if share < min_share:
        raise MedsegError(
            f"model.pretrained: {path}: fills only {len(loaded)} of the network's {len(own)} tensors ({share:.0%} < "
            f"model.pretrained_min_share {min_share:g}); {len(skipped)} matched by name but not by shape"
        )
    model.load_state_dict(loaded, strict=False)
    return {"loaded": len(loaded), "skipped_shape": skipped, "missing": len(own) - len(loaded), "share": share}
