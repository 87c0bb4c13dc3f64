"""One split part of a loaded dataset as stacked arrays (what training, evaluation and the doctor score)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from medseg.data.cache import LazyArray
from medseg.data.sources import LoadedData


class SampleStack:
    """The images of a split part as one (N, C, H, W) array that reads each sample from the cache when indexed.

    What training and validation index the images with works: an int (one image), a slice or
    an index list/array (stacked), iteration, ``len``, ``shape``, ``dtype``; ``np.asarray``
    reads them all. The network inputs of a cached dataset then live on disk, not in memory.

    Args:
        items: one array per sample (`cache.LazyArray`s), all of one shape.
        dtype: the dtype an indexed read returns.
    """

    def __init__(self, items: list, dtype=np.float32):
        self.items, self.dtype = list(items), np.dtype(dtype)
        self.shape = (len(self.items), *tuple(self.items[0].shape)) if self.items else (0,)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def __len__(self) -> int:
        return len(self.items)

    def _one(self, i: int) -> np.ndarray:
        return np.asarray(self.items[i], dtype=self.dtype)

    def __getitem__(self, key):
        rest: tuple = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        if isinstance(key, (int, np.integer)):
            out = self._one(int(key))
            return out[rest] if rest else out
        if isinstance(key, slice):
            idx = list(range(*key.indices(len(self))))
        else:
            arr = np.asarray(key)
            idx = list(np.flatnonzero(arr) if arr.dtype == bool else arr.astype(int).ravel())
        out = np.stack([self._one(int(i)) for i in idx]) if idx else np.zeros((0, *self.shape[1:]), self.dtype)
        return out[(slice(None), *rest)] if rest else out

    def __iter__(self):
        for i in range(len(self)):
            yield self._one(i)

    def __array__(self, dtype=None, copy=None):
        a = self[:]
        return a if dtype is None else a.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"SampleStack(shape={self.shape}, dtype={self.dtype})"


@dataclass
class SplitArrays:
    """Arrays of one split part, with the samples' meta in the same order.

    ``images`` is an ndarray for data in memory and a `SampleStack` (read on use) for data from
    the on-disk cache; ``masks`` is always an ndarray (uint8, a quarter of a grey float image).
    """

    images: "np.ndarray | SampleStack"
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
    if all(isinstance(s.image, LazyArray) for s in chosen):
        images = SampleStack([s.image for s in chosen])  # from the cache: read when indexed
    else:
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


def sample_hashes(*parts: SplitArrays) -> dict[str, str]:
    """{sample id: a short content hash of its network input and mask}: what a run was trained and validated on.

    Content, not file names or times: a dataset copied to another machine is the same data; a
    re-exported image, a changed mask or a new preprocessing is not.
    """
    out = {}
    for part in parts:
        for img, mask, meta in zip(part.images, part.masks, part.meta):
            h = hashlib.sha256(np.ascontiguousarray(img, dtype=np.float32).tobytes())
            h.update(np.ascontiguousarray(mask, dtype=np.uint8).tobytes())
            out[meta["sample_id"]] = h.hexdigest()[:16]
    return out


def combined_hash(hashes: dict[str, str]) -> str:
    """One hash of all samples (ids and contents), order-independent."""
    h = hashlib.sha256()
    for sid in sorted(hashes):
        h.update(f"{sid}:{hashes[sid]};".encode())
    return h.hexdigest()[:32]


def describe_changes(before: dict[str, str], now: dict[str, str], limit: int = 3) -> str:
    """'2 samples changed (a, b), 1 added (c), 0 removed' for the one-line refusal of a resume."""
    changed = sorted(k for k in before.keys() & now.keys() if before[k] != now[k])
    added, removed = sorted(now.keys() - before.keys()), sorted(before.keys() - now.keys())
    parts = []
    for n, ids in (("changed", changed), ("added", added), ("removed", removed)):
        if ids:
            parts.append(f"{len(ids)} {n} ({', '.join(ids[:limit])}{', ...' if len(ids) > limit else ''})")
    return "; ".join(parts) or "no sample differs"
