"""One split part of a loaded dataset as stacked arrays (what training, evaluation and the doctor score)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from medseg.data.cache import LazyArray, foreground_pixels
from medseg.data.sources import LoadedData


class SampleStack:
    """The images (N, C, H, W) or masks (N, H, W) of a split part as one array that reads each sample from the cache when indexed.

    What training and validation index the images with works: an int (one image), a slice or
    an index list/array (stacked), iteration, ``len``, ``shape``, ``dtype``; ``np.asarray``
    reads them all. The samples of a cached dataset then live on disk, not in memory.

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
        # filled in place: a list of reads and then np.stack would hold the chunk twice
        out = np.empty((len(idx), *self.shape[1:]), self.dtype)
        for j, i in enumerate(idx):
            out[j] = self._one(int(i))
        return out[(slice(None), *rest)] if rest else out

    def take(self, idx) -> "SampleStack":
        """The samples `idx` as a SampleStack of their own, read only when indexed."""
        return SampleStack([self.items[int(i)] for i in idx], self.dtype)

    def __iter__(self):
        for i in range(len(self)):
            yield self._one(i)

    def __array__(self, dtype=None, copy=None):
        a = self[:]
        return a if dtype is None else a.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"SampleStack(shape={self.shape}, dtype={self.dtype})"


def take(array, idx):
    """Samples `idx` of a part's images or masks as what `predict_probs` reads a batch at a time.

    A `SampleStack` gives a SampleStack of those samples (nothing is read until a batch is
    indexed), so a long volume's 2.5D images never sit in memory whole; an in-memory array gives
    its rows.
    """
    if isinstance(array, SampleStack):
        return array.take(idx)
    return np.asarray(array[idx])


@dataclass
class SplitArrays:
    """Arrays of one split part, with the samples' meta in the same order.

    ``images`` (float32) and ``masks`` (uint8) are ndarrays for data in memory and
    `SampleStack`s (read on use) for data from the on-disk cache. ``fg`` holds each mask's
    foreground pixels, so what needs only "which images are positive" or "how much
    foreground" (the sampler, its audit, fit's checks, the loss's prior) reads no mask.
    """

    images: "np.ndarray | SampleStack"
    masks: "np.ndarray | SampleStack"
    meta: list[dict]
    fg: np.ndarray = None  # (N,) int64

    def __post_init__(self):
        if self.fg is None:
            self.fg = np.array([foreground_pixels(m) for m in self.masks], np.int64).reshape(-1)

    @property
    def positive(self) -> np.ndarray:
        """(N,) bool: the mask has foreground."""
        return self.fg > 0

    @property
    def foreground_fraction(self) -> float:
        """Foreground pixels over all mask pixels (NaN for no sample)."""
        pixels = int(np.prod(self.masks.shape)) if len(self.masks) else 0
        return float(self.fg.sum() / pixels) if pixels else float("nan")


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
    if all(isinstance(s.mask, LazyArray) for s in chosen):
        masks = SampleStack([s.mask for s in chosen], np.uint8)
    else:
        masks = np.stack([s.mask for s in chosen]).astype(np.uint8, copy=False)
    fg = np.array([foreground_pixels(s.mask) for s in chosen], np.int64)
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
    return SplitArrays(images, masks, meta, fg)


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
