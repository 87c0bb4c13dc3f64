"""Local weights files into a network (weights cannot be downloaded here)."""

from __future__ import annotations

from pathlib import Path

from medseg.errors import MedsegError


def load_weights(model, path: Path) -> dict:
    """Load a local weights file (plain state_dict or a Lightning checkpoint) into model.

    Keys may carry a 'model.' or 'net.' prefix; shapes that do not match (e.g. a first conv
    for another channel count) are skipped and reported. Returns counts for the log.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise MedsegError(f"config error: model.pretrained: {path}: no such file")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file is a user error
        raise MedsegError(f"model.pretrained: {path}: cannot read weights ({type(e).__name__})") from None
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict):
        raise MedsegError(f"model.pretrained: {path}: not a state_dict or checkpoint")
    own = model.state_dict()
    loaded, skipped = {}, []
    for k, v in state.items():
        for prefix in ("", "net.", "model.", "net.model.", "module."):
            if k.startswith(prefix) and k[len(prefix):] in own:
                kk = k[len(prefix):]
                if own[kk].shape == v.shape:
                    loaded[kk] = v
                else:
                    skipped.append(kk)
                break
    if not loaded:
        raise MedsegError(f"model.pretrained: {path}: no tensor matches the network '{type(model).__name__}'")
    model.load_state_dict(loaded, strict=False)
    return {"loaded": len(loaded), "skipped_shape": skipped, "missing": len(own) - len(loaded)}
