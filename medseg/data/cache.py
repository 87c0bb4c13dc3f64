"""The preprocessed cache: each source unit (an image, a DICOM, a volume) prepared once, kept on disk, read on use.

A source's loader prepares one *unit* at a time (read, normalise, resize) and hands it to a
`UnitStore`. `MemoryStore` keeps the arrays (what medseg always did); `DiskStore` writes
them under ``data.cache_dir`` and gives back `StoredArray`s that read from disk when used, so
later runs and every verb (evaluate, tune, predict, doctor, report) skip decoding and
resizing, and a loaded dataset holds no pixels until something asks for them.

Layout, one entry per (data config, with or without masks, cache format)::

    CACHE_DIR/<source>-<key>/
      entry.json             what the key was made of (config, format), for people
      units/<h>.json         one unit's record: its samples' meta, what the loader derived, the
                             size and mtime of every file it was made from, and the foreground
                             pixels of each mask (per slice for a volume), so the sampler, its
                             audit and fit's checks need no mask read
      units/<h>.<name>.npy   its arrays: an image (C, h, w) / mask (h, w); a volume once as
                             (Z, C, h, w) / (Z, h, w) -- 2.5D stacks are assembled at read time

Why plain ``.npy``: the arrays are read whole (an image) or by ranges of the first axis (a
few slices of a volume), which ``.npy``'s fixed header + C-order data serves with one seek and
one read, with no extra dependency and no pickle (``allow_pickle`` is never on). Compression
(blosc2, zarr) would trade disk for CPU on a machine where the CPU is the bottleneck. Reads are
``np.fromfile`` at an offset, not memory maps: mapped pages count in the process's resident
memory, which is what the cache exists to keep flat.

Kill safety: every file is written to a temporary name and renamed into place, arrays before
the record, so a record exists only for a unit whose arrays are complete. A rerun after a kill
restores the finished units and prepares the rest. A unit whose source files changed (size or
mtime), whose record is unreadable or whose arrays are missing or of the wrong shape is
prepared again; the other units stay. Several processes (DDP ranks) may fill one entry at
once: each writes its own temporary files and the renames are atomic.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np

from medseg.data.schema import DataConfig
from medseg.errors import MedsegError

# Bump when what a unit holds or how it is prepared changes: old entries are then not read.
CACHE_FORMAT = 2
UNITS = "units"
ENTRY = "entry.json"
# keys that do not change what a unit holds: where the cache is, and whether bad files raise
# (a bad file never becomes a unit)
_KEY_EXCLUDES = {"cache_dir", "skip_bad"}


# ---------------------------------------------------------------------------------------
# Arrays read on use


class LazyArray(np.lib.mixins.NDArrayOperatorsMixin):
    """An array on disk that behaves like the ndarray it holds: read in full each time it is used.

    ``shape``, ``dtype``, ``ndim`` and ``len`` need no read; anything else (``np.asarray``,
    ``np.stack``, indexing, operators and ufuncs, ``.mean()``, ``.any()``, ``.transpose()``)
    reads it. Code that uses a sample's array several times should read it once
    (``np.asarray``).
    """

    # slots, not a __dict__: a SIIM-size dataset holds two of these per image (~200 B each saved)
    __slots__ = ("shape", "dtype")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        inputs = tuple(x.read() if isinstance(x, LazyArray) else x for x in inputs)
        if "out" in kwargs:
            kwargs["out"] = tuple(x.read() if isinstance(x, LazyArray) else x for x in kwargs["out"])
        return getattr(ufunc, method)(*inputs, **kwargs)

    shape: tuple[int, ...]
    dtype: np.dtype

    def read(self) -> np.ndarray:
        raise NotImplementedError

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None):
        a = self.read()
        return a if dtype is None else a.astype(dtype, copy=False)

    def __getitem__(self, key):
        return self.read()[key]

    def __getattr__(self, name: str):
        # only reached for what the class does not define: ndarray methods and attributes
        if name.startswith("_"):  # dunders, and private fields not yet set (copy, unpickling)
            raise AttributeError(name)
        return getattr(self.read(), name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype})"


# header bytes -> (shape, dtype, offset): a cache holds few distinct headers (one per image
# size and dtype; one per volume length), so each is parsed once, and every array of that
# layout shares one shape tuple and one dtype (a SIIM-size set has 24k arrays)
_LAYOUTS: dict[bytes, tuple[tuple[int, ...], np.dtype, int]] = {}
_LAYOUTS_MAX = 65536


def npy_layout(path: Any) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) of a C-order ``.npy`` file, from its header only.

    Raises:
        ValueError: not a .npy file medseg wrote (Fortran order, object dtype, bad header).
    """
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        size_bytes = 2 if version == (1, 0) else 4
        head = f.read(size_bytes)
        if len(head) != size_bytes:
            raise ValueError(f"{path}: truncated .npy header")
        header = f.read(int.from_bytes(head, "little"))
        known = _LAYOUTS.get(header)
        if known is not None and known[2] == f.tell():
            return known
        f.seek(0)
        np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        if fortran or dtype.hasobject:
            raise ValueError(f"{path}: not a plain C-order array")
        layout = (tuple(shape), dtype, f.tell())
    if len(_LAYOUTS) < _LAYOUTS_MAX:
        _LAYOUTS[header] = layout
    return layout


class StoredArray(LazyArray):
    """A whole ``.npy`` array, optionally with its first axis repeated (a grey image in an RGB dataset).

    Args:
        path: the file.
        shape, dtype, offset: its layout (`npy_layout`).
        repeat: each channel (axis 0) repeated this many times when read.
    """

    __slots__ = ("path", "_shape", "offset", "repeat", "fg")

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype, offset: int, repeat: int = 1, fg=None):
        # a str, not a Path: one of these per image, and a Path object costs ~250 B more
        self.path, self._shape, self.dtype, self.offset, self.repeat = os.fspath(path), tuple(shape), np.dtype(dtype), offset, repeat
        self.shape = (self._shape[0] * repeat, *self._shape[1:]) if repeat > 1 else self._shape
        self.fg = fg  # a mask's foreground pixels (a list per slice for a volume), recorded when it was stored

    def read(self) -> np.ndarray:
        count = int(np.prod(self._shape))
        a = np.fromfile(self.path, dtype=self.dtype, count=count, offset=self.offset)
        if a.size != count:
            raise MedsegError(f"{self.path}: cache file is shorter than its header says (run `medseg cache` again)")
        a = a.reshape(self._shape)
        return np.repeat(a, self.repeat, axis=0) if self.repeat > 1 else a

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows start..stop-1 of the first axis, read alone."""
        row = int(np.prod(self._shape[1:]))
        count = (stop - start) * row
        a = np.fromfile(self.path, dtype=self.dtype, count=count, offset=self.offset + start * row * self.dtype.itemsize)
        if a.size != count:
            raise MedsegError(f"{self.path}: cache file is shorter than its header says (run `medseg cache` again)")
        return a.reshape((stop - start, *self._shape[1:]))


class ContextStack(LazyArray):
    """Slice z of a stored (Z, C, h, w) volume with k neighbours each side, channel-major: (C * (2k + 1), h, w).

    The 2.5D sample `context_image` assembles from the volume, read from disk (only the 2k + 1
    slices it needs).
    """

    __slots__ = ("volume", "z", "k")

    def __init__(self, volume: StoredArray, z: int, k: int):
        self.volume, self.z, self.k = volume, z, k
        _, C, h, w = volume.shape
        self.shape, self.dtype = (C * (2 * k + 1), h, w), volume.dtype

    def read(self) -> np.ndarray:
        Z = self.volume.shape[0]
        lo, hi = max(self.z - self.k, 0), min(self.z + self.k, Z - 1)
        block = self.volume.rows(lo, hi + 1)
        idx = np.clip(np.arange(self.z - self.k, self.z + self.k + 1), 0, Z - 1) - lo
        return _channel_major(block[idx])


class StoredSlice(LazyArray):
    """Row z of a stored (Z, ...) array (a volume's mask slice), read alone."""

    __slots__ = ("volume", "z", "fg")

    def __init__(self, volume: StoredArray, z: int):
        self.volume, self.z = volume, z
        self.shape, self.dtype = volume.shape[1:], volume.dtype
        self.fg = volume.fg[z] if volume.fg is not None else None

    def read(self) -> np.ndarray:
        return self.volume.rows(self.z, self.z + 1)[0]


def _channel_major(stack: np.ndarray) -> np.ndarray:
    """(2k+1, C, h, w) -> (C * (2k+1), h, w): channel c's slices z-k..z+k, then channel c+1's."""
    n, C, h, w = stack.shape
    return np.ascontiguousarray(stack.transpose(1, 0, 2, 3)).reshape(C * n, h, w)


def context_image(volume: Any, z: int, k: int):
    """The 2.5D input of slice z: slices z-k..z+k (edges repeated) of every channel, channel-major.

    Args:
        volume: (Z, C, h, w) prepared slices, in memory (ndarray) or on disk (`StoredArray`).
        z: the slice.
        k: context slices each side.

    Returns:
        (C * (2k + 1), h, w): an ndarray for an in-memory volume, a `ContextStack` for a stored one.
    """
    if isinstance(volume, StoredArray):
        return ContextStack(volume, z, k)
    idx = np.clip(np.arange(z - k, z + k + 1), 0, volume.shape[0] - 1)
    return _channel_major(volume[idx])


def mask_slice(masks: Any, z: int):
    """Slice z of a (Z, h, w) mask volume, in memory or on disk."""
    return StoredSlice(masks, z) if isinstance(masks, StoredArray) else masks[z]


def foreground_pixels(mask: Any) -> int:
    """Foreground pixels of a mask: recorded with a stored one (no read), else counted."""
    fg = getattr(mask, "fg", None)
    return int(fg) if fg is not None else int(np.count_nonzero(np.asarray(mask)))


def _foreground_record(key: str, arr: np.ndarray):
    # masks only (every source names them "mask"): per slice for a (Z, h, w) volume
    if key != "mask":
        return None
    return np.count_nonzero(arr.reshape(len(arr), -1), axis=1).tolist() if arr.ndim == 3 else int(np.count_nonzero(arr))


def repeat_channels(image: Any, times: int):
    """An image's channels repeated (grey in an RGB dataset), in memory or on disk."""
    if times == 1:
        return image
    if isinstance(image, StoredArray):
        return StoredArray(image.path, image._shape, image.dtype, image.offset, repeat=image.repeat * times)
    return np.repeat(image, times, axis=0)


# ---------------------------------------------------------------------------------------
# Stores


def file_stats(paths: Iterable[Any]) -> dict[str, list[int]]:
    """{path: [size, mtime_ns]} of the files a unit was made from (what a change is detected by)."""
    out = {}
    for p in paths:
        if p is None:
            continue
        try:
            st = os.stat(p)
        except OSError:
            out[str(p)] = [-1, -1]
            continue
        out[str(p)] = [st.st_size, st.st_mtime_ns]
    return out


class MemoryStore:
    """Keeps every unit's arrays in memory: no cache."""

    def __init__(self):
        self.built, self.reused = 0, 0

    def owns(self, name: str) -> bool:
        """Whether this store prepares the unit (every one; a `ShardStore` its share)."""
        return True

    def restore(self, name: str, files: Iterable[Any] = ()) -> Optional[dict]:
        """None: every unit is prepared (a `DiskStore` may answer a record, or `SKIP`)."""
        return None

    def put(self, name: str, arrays: dict[str, Optional[np.ndarray]], record: dict, files: Iterable[Any] = ()) -> dict:
        """The record with its arrays (a source calls this once per prepared unit)."""
        self.built += 1
        # through JSON as on disk, so a run reads the same meta (lists, not tuples) with or without a cache
        return {**json.loads(json.dumps(record, default=_json_default)), "arrays": dict(arrays)}


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def _atomic_write_bytes(path: Path, write) -> None:
    # a killed process leaves at most a temporary file; no fsync: a torn file after a power
    # loss is caught by the size check in `DiskStore.restore` and prepared again
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def entry_key(cfg: DataConfig, with_masks: bool) -> tuple[str, dict]:
    """(key, what it was made of) of the cache entry for this data config.

    Every data key that changes what a unit holds is in it (root, input size, normalisation,
    orientation, context slices, colour, ...), and the size and mtime of the CSVs read for
    every unit (cases_csv, rle_csv); the image files' own sizes and mtimes are checked per unit.
    """
    data = cfg.model_dump(mode="json", exclude=_KEY_EXCLUDES)
    made_of = {
        "cache_format": CACHE_FORMAT, "source": cfg.source, "with_masks": bool(with_masks), "data": data,
        "csv_files": file_stats([cfg.cases_csv, cfg.rle_csv if with_masks else None]),
    }
    blob = json.dumps(made_of, sort_keys=True, default=_json_default).encode()
    return hashlib.sha256(blob).hexdigest()[:20], made_of


class DiskStore:
    """Units kept under one cache entry on disk (see the module docstring).

    Args:
        cache_dir: data.cache_dir.
        cfg: the data config (the entry key).
        with_masks: whether masks are loaded (prediction inputs have their own entry).
        keep_samples: False: a load through this store keeps no samples, only counts them
            (`sources.base.SampleTally`): what `medseg cache` and its builders need.

    Attributes:
        entry: the entry's folder.
        built, reused: units prepared now, units restored from disk.
    """

    def __init__(self, cache_dir: Path, cfg: DataConfig, with_masks: bool, keep_samples: bool = True):
        cache_dir = Path(cache_dir).expanduser()
        if cache_dir.exists() and not cache_dir.is_dir():
            raise MedsegError(f"{cache_dir}: data.cache_dir is a file, not a folder")
        key, made_of = entry_key(cfg, with_masks)
        self.entry = cache_dir / f"{cfg.source}-{key}"
        self.units = self.entry / UNITS
        self._units_str = os.fspath(self.units)
        try:
            self.units.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise MedsegError(f"{cache_dir}: cannot create the cache there (data.cache_dir): {e.strerror or e}") from None
        if not (self.entry / ENTRY).exists():
            text = json.dumps(made_of, indent=1, sort_keys=True, default=_json_default).encode()
            _atomic_write_bytes(self.entry / ENTRY, lambda f: f.write(text))
        self.built = 0
        self.reused = 0
        self.keep_samples = bool(keep_samples)
        self._shared: dict = {}  # see `_share`

    def _share(self, value: Any) -> Any:
        """A record value with its parts shared across this store's units: equal values, one object.

        A SIIM-size set holds ~4 KB of meta per image, most of it repeated (keys, the CSV's
        path, shapes, spacing, resize info; a volume's path in each slice's meta). Strings
        are interned; small lists and dicts are kept once per distinct JSON text. Nothing
        changes a sample's meta after loading, so sharing reads identically.
        """
        if isinstance(value, str):
            return sys.intern(value)
        if isinstance(value, dict):
            value = {sys.intern(k): self._share(v) for k, v in value.items()}
        elif isinstance(value, list):
            value = [self._share(v) for v in value]
        else:
            return value
        if len(value) <= 8:  # small ones only: a long or unique value's text would cost more than it saves
            text = json.dumps(value)  # key order kept: equal dicts in another order stay apart
            if len(text) <= 200:
                return self._shared.setdefault(text, value)
        return value

    def owns(self, name: str) -> bool:
        """Whether this store prepares the unit (every one; a `ShardStore` its share)."""
        return True

    @staticmethod
    def _stem(name: str) -> str:
        # unit names are file names, volume ids or DICOM UIDs: hash them to one safe, short file name
        return hashlib.sha1(name.encode()).hexdigest()[:24]

    def restore(self, name: str, files: Iterable[Any] = ()) -> Optional[dict]:
        """The unit's record with `StoredArray`s, or None when it must be prepared (absent, stale, damaged).

        Args:
            name: the unit's name.
            files: the source files the unit is made from now: the record must name the same
                files, each with the size and mtime it had when the unit was prepared.
        """
        stem = self._stem(name)
        path = self.units / f"{stem}.json"
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("name") != name or record.get("cache_format") != CACHE_FORMAT:
            return None
        if file_stats(files) != record.get("files"):
            return None  # a source file changed, went or is another one: prepare the unit again
        arrays = {}
        for key, spec in (record.get("array_shapes") or {}).items():
            if spec is None:
                arrays[key] = None
                continue
            # a str, not a Path: a Path per array (24k for SIIM) was ~150 B more each, live
            apath = os.path.join(self._units_str, f"{stem}.{key}.npy")
            try:
                shape, dtype, offset = npy_layout(apath)
                size = os.stat(apath).st_size
            except (OSError, ValueError):
                return None
            if list(shape) != spec["shape"] or str(dtype) != spec["dtype"] or size != offset + int(np.prod(shape)) * dtype.itemsize:
                return None
            arrays[key] = StoredArray(apath, shape, dtype, offset, fg=spec.get("fg"))
        self.reused += 1
        out = {sys.intern(k): self._share(v) for k, v in record.items() if k not in ("files", "array_shapes", "cache_format", "name")}
        out["arrays"] = arrays
        return out

    def put(self, name: str, arrays: dict[str, Optional[np.ndarray]], record: dict, files: Iterable[Any] = ()) -> dict:
        """Write the unit (arrays first, then its record) and return the record with `StoredArray`s.

        Args:
            name: the unit's name (unique within the source: stem, volume id, ImageId).
            arrays: name -> array (or None: e.g. no mask when loaded without masks).
            record: JSON-serialisable facts the source needs to rebuild its samples.
            files: the source files the unit was made from.
        """
        stem = self._stem(name)
        shapes: dict[str, Optional[dict]] = {}
        stored: dict[str, Optional[StoredArray]] = {}
        for key, arr in arrays.items():
            if arr is None:
                shapes[key], stored[key] = None, None
                continue
            arr = np.ascontiguousarray(arr)
            apath = self.units / f"{stem}.{key}.npy"
            _atomic_write_bytes(apath, lambda f, a=arr: np.save(f, a, allow_pickle=False))
            fg = _foreground_record(key, arr)
            shapes[key] = {"shape": list(arr.shape), "dtype": str(arr.dtype), "fg": fg}
            # the data is the file's tail: no need to read the header back
            stored[key] = StoredArray(apath, arr.shape, arr.dtype, apath.stat().st_size - arr.nbytes, fg=fg)
        full = {**record, "name": name, "cache_format": CACHE_FORMAT, "array_shapes": shapes, "files": file_stats(files)}
        text = json.dumps(full, default=_json_default).encode()
        _atomic_write_bytes(self.units / f"{stem}.json", lambda f: f.write(text))
        self.built += 1
        return {**record, "arrays": stored}

    def disk_bytes(self) -> int:
        """Bytes the entry holds on disk."""
        # scandir, not rglob: a SIIM-size entry has ~36k files, and a list of their Paths was 28 MiB
        def tree(folder: str) -> int:
            total = 0
            with os.scandir(folder) as it:
                for e in it:
                    if e.is_dir(follow_symlinks=False):
                        total += tree(e.path)
                    elif e.is_file(follow_symlinks=False):
                        total += e.stat(follow_symlinks=False).st_size
            return total

        return tree(os.fspath(self.entry))


# `restore`'s answer for a unit another builder prepares: the source skips it (no sample, no error)
SKIP = {"skip": True}


class ShardStore(DiskStore):
    """A `DiskStore` that prepares only its share of the units: one of several parallel builders (`medseg cache --workers`).

    Units are dealt out by a hash of their name, so builders need no coordination; a unit
    another shard owns is answered with `SKIP`. Run a plain load after the builders: it reads
    every unit back (and prepares any a builder could not, reporting bad files as usual).

    Args:
        cache_dir / cfg / with_masks: as `DiskStore`.
        shard / shards: this builder and the number of builders.
    """

    def __init__(self, cache_dir: Path, cfg: DataConfig, with_masks: bool, shard: int, shards: int):
        super().__init__(cache_dir, cfg, with_masks, keep_samples=False)  # a builder only prepares
        self.shard, self.shards = int(shard), int(shards)

    def owns(self, name: str) -> bool:
        return int(self._stem(name), 16) % self.shards == self.shard

    def restore(self, name: str, files: Iterable[Any] = ()) -> Optional[dict]:
        if not self.owns(name):
            return SKIP
        return super().restore(name, files)


def open_store(cfg: DataConfig, with_masks: bool):
    """The store `load_data` prepares units into: `DiskStore` under data.cache_dir, else `MemoryStore`."""
    if cfg.cache_dir is None:
        return MemoryStore()
    return DiskStore(cfg.cache_dir, cfg, with_masks)
