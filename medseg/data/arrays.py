"""One split part of a loaded dataset as stacked arrays (what training, evaluation and the doctor score)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medseg.data.sources import LoadedData


@dataclass
class SplitArrays:
    """Stacked arrays of one split part, with the samples' meta in the same order."""

    images: np.ndarray
    masks: np.ndarray
    meta: list[dict]


def stack_part(loaded: LoadedData, case_ids: list[str]) -> SplitArrays:
    """The samples of these cases, in load order, with the spacing at network input size in their meta.

    Args:
        loaded: `load_data` output.
        case_ids: the split part's case ids (split.json).
    """
    wanted = set(case_ids)
    chosen = [s for s in loaded.samples if s.case_id in wanted]
    if not chosen:
        return SplitArrays(np.zeros((0, loaded.in_channels, 1, 1), np.float32), np.zeros((0, 1, 1), np.uint8), [])
    images = np.stack([s.image for s in chosen]).astype(np.float32, copy=False)
    masks = np.stack([s.mask for s in chosen]).astype(np.uint8, copy=False)
    meta = []
    for s in chosen:
        m = {"sample_id": s.sample_id, "case_id": s.case_id, **s.meta}
        # metrics are computed at network input size, so distances need the spacing there
        sy, sx = (m.get("resize") or {}).get("scale", (1.0, 1.0))
        if m.get("spacing"):
            m["spacing_input"] = [m["spacing"][0] / sy, m["spacing"][1] / sx]
        vol = m.get("volume")
        if vol is not None and vol in loaded.volumes and loaded.volumes[vol].get("spacing"):
            z, r, c = loaded.volumes[vol]["spacing"]
            m["volume_spacing"] = [z, r / sy, c / sx]
        meta.append(m)
    return SplitArrays(images, masks, meta)
