"""What every data source shares: the sample types, per-file error handling, the cases CSV, and the registry.

A data source is one module (`images`, `volumes`, `siim`) that registers a `SourceSpec`:
how to load a `DataConfig` into samples, how to read a file's raw intensities and a sample's
original-resolution mask again (the fingerprint), how to write predictions back in the
input's own format, and which inputs it recognises (`medseg predict`).

Conventions every caller relies on:

* masks are binary: any raw value > 0 is foreground; the raw values are recorded in
  ``meta['raw_mask_values']`` and ``LoadedData.mask_values`` (the data fingerprint);
* every per-file problem raises a one-line `MedsegError` starting with the file path, or,
  with ``data.skip_bad``, is listed in ``LoadedData.bad`` and the file skipped;
* ``meta['resize']`` is the resize_info for `preprocess.to_original`; samples of a
  volumetric source carry ``volume``/``slice``/``n_slices`` so predictions can be stacked back;
* ``cases_csv`` (optional, any source) maps a sample's natural case key -- image stem,
  volume name or SIIM ImageId -- in its ``case`` column to a patient id in ``group_column``.
"""

from __future__ import annotations

import csv
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Protocol

import numpy as np

from medseg.data.readers import one_line
from medseg.data.schema import DataConfig
from medseg.data.slices import slices_by_volume
from medseg.errors import MedsegError, NoUsableData


@dataclass(slots=True)  # slots: a SIIM-size set holds 12k of these, a LiTS-size one 31k
class Sample:
    """One 2D training/inference example.

    Attributes:
        sample_id: unique and filename-safe: image stem; ``{volume}_z{idx:04d}`` for volume
            slices; the ImageId for SIIM.
        case_id: the split unit (patient): from cases_csv, the DICOM PatientID (SIIM), else
            the volume name / image stem.
        image: float32 (C, H, W), normalised and resized to data.input_size: an ndarray, or
            from the on-disk cache a `cache.LazyArray` that reads it when used.
        mask: uint8 (H, W) in {0, 1} at data.input_size (ndarray or `LazyArray`), or None when
            loaded without masks.
        meta: JSON-serialisable facts (path, mask_path, orig_shape, resize, spacing, ...).
    """

    sample_id: str
    case_id: str
    image: np.ndarray
    mask: Optional[np.ndarray]
    meta: dict = field(default_factory=dict)


@dataclass
class LoadedData:
    """Everything `load_data` produced.

    Attributes:
        samples: the samples, in sorted file order (volume slices in slice order).
        bad: {"path", "reason"} for each file skipped under data.skip_bad.
        volumes: volume id -> {"path", "label_path", "shape" (file array shape), "spacing"
            (z, row, col) or None, "format", "slice_ids"}; empty for 2D sources.
        source: 'images', 'volumes' or 'siim'.
        in_channels: channels of every sample image.
        mask_values: sorted union of the raw mask values seen.
        modality: the modality used ('ct', 'mr', 'xray', 'other', ..., or 'mixed').
    """

    samples: list[Sample]
    bad: list[dict]
    volumes: dict[str, dict]
    source: str
    in_channels: int
    mask_values: list
    modality: str


class SampleTally:
    """Stands in for the samples list of a load that keeps none: counts them and checks their ids.

    `medseg cache` and its parallel builders load a dataset only to prepare, check and count
    its units; holding every sample (ids, meta, lazy arrays: ~1 KB each) would make their
    memory grow with the dataset. A source appends to what `sample_list` gives it; with a
    store whose ``keep_samples`` is False that is one of these.

    Attributes:
        ids: the sample ids seen (what the duplicate check needs).
        positive: samples whose mask has foreground (meta ``fg_fraction``).
        duplicate: the first sample id seen twice, or None.
    """

    __slots__ = ("ids", "positive", "duplicate", "count")

    def __init__(self):
        self.ids: set[str] = set()
        self.positive, self.count = 0, 0
        self.duplicate: Optional[str] = None

    def append(self, sample: Sample) -> None:
        if sample.sample_id in self.ids and self.duplicate is None:
            self.duplicate = sample.sample_id
        self.ids.add(sample.sample_id)
        self.count += 1
        if sample.meta.get("fg_fraction"):
            self.positive += 1

    def __len__(self) -> int:
        return self.count


def sample_list(store) -> "list[Sample] | SampleTally":
    """Where a source collects its samples: a list, or a `SampleTally` when the store keeps none."""
    return [] if getattr(store, "keep_samples", True) else SampleTally()


class BadFiles:
    """Collects per-file problems: raise at once, or record and skip (data.skip_bad)."""

    def __init__(self, skip: bool):
        self.skip = skip
        self.items: list[dict] = []

    def report(self, path: Any, reason: str) -> None:
        reason = one_line(reason, limit=300)
        if not self.skip:
            raise MedsegError(f"{path}: {reason}")
        self.items.append({"path": str(path), "reason": reason})

    def error(self, path: Any, err: MedsegError) -> None:
        msg = str(err)
        prefix = f"{path}: "
        self.report(path, msg[len(prefix):] if msg.startswith(prefix) else msg)


def progress_items(items: list, desc: str, enabled: bool) -> Iterator:
    if not enabled:
        yield from items
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True
    ) as bar:
        task = bar.add_task(desc, total=len(items))
        for item in items:
            yield item
            bar.advance(task)


def jsonable_values(values: Iterable) -> list:
    out = []
    for v in values:
        f = float(v)
        out.append(int(f) if f.is_integer() else f)
    return out


def distinct_values(mask: np.ndarray) -> list:
    return jsonable_values(np.unique(mask))


def listed_files(folder: Path, bad: "BadFiles", keep: Callable[[Path], bool]) -> list[Path]:
    """The files of `folder` that `keep` accepts, sorted; links that lead nowhere (dangling, looping) are reported as bad.

    Hidden files are ignored. A broken link is a file the user meant to give: it is reported
    (or listed in bad_files.json with data.skip_bad), never skipped in silence.
    """
    out = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_symlink() and not p.exists():
            if keep(p):
                bad.report(p, "symbolic link that leads to no file (dangling or looping)")
            continue
        if p.is_file() and keep(p):
            out.append(p)
    return out


def require_root(cfg: DataConfig) -> Path:
    if cfg.root is None:
        raise MedsegError("config error: data.root: required (the dataset folder)")
    root = Path(cfg.root)
    if not root.exists():
        raise MedsegError(f"{root}: no such file or folder (data.root)")
    return root


def _read_cases_csv(path: Path, group_column: str) -> dict[str, str]:
    if not Path(path).is_file():
        raise MedsegError(f"{path}: no such file (data.cases_csv)")
    out: dict[str, str] = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in (next(reader, None) or [])]
            for col in ("case", group_column):
                if col not in header:
                    raise MedsegError(f"{path}: no column '{col}' (columns: {', '.join(header) or 'none'})")
            ic, ig = header.index("case"), header.index(group_column)
            for row in reader:
                if not row or all(not c.strip() for c in row):
                    continue
                line = reader.line_num
                if len(row) <= max(ic, ig):
                    raise MedsegError(f"{path} line {line}: expected {len(header)} columns, got {len(row)}")
                case, group = row[ic].strip(), row[ig].strip()
                if not case or not group:
                    raise MedsegError(f"{path} line {line}: empty 'case' or '{group_column}' value")
                if case in out and out[case] != group:
                    raise MedsegError(f"{path} line {line}: case '{case}' listed twice with different {group_column}")
                out[case] = group
    except (UnicodeDecodeError, csv.Error) as e:
        raise MedsegError(f"{path}: not a readable CSV file ({type(e).__name__})") from None
    return out


class Cases:
    """case key -> case id, from data.cases_csv when given, else the fallback."""

    def __init__(self, cfg: DataConfig):
        self.path = cfg.cases_csv
        self.group_column = cfg.group_column
        self.map = _read_cases_csv(cfg.cases_csv, cfg.group_column) if cfg.cases_csv is not None else None

    def lookup(self, keys: list[str], fallback: str) -> str:
        """Case id for the first key found in the csv; raises MedsegError (caller reports it) if none is."""
        if self.map is None:
            return fallback
        for k in keys:
            if k in self.map:
                return self.map[k]
        raise MedsegError(f"not listed in column 'case' of {self.path}")


def modality_name(cfg: DataConfig, seen: set[str]) -> str:
    if cfg.modality != "auto":
        return cfg.modality
    if not seen:
        return "other"
    return next(iter(seen)) if len(seen) == 1 else "mixed"


def finish(samples: "list[Sample] | SampleTally", bad: BadFiles, where: Path, source: str, **kw: Any) -> LoadedData:
    if not samples:
        if bad.items:
            first = bad.items[0]
            raise MedsegError(
                f"{where}: no usable data: all {len(bad.items)} file(s) were skipped as bad "
                f"(first: {first['path']}: {first['reason']})"
            )
        raise NoUsableData(f"{where}: no usable data found")
    if isinstance(samples, SampleTally):
        dup = samples.duplicate
    else:
        ids = [s.sample_id for s in samples]
        dup = next(i for i in ids if ids.count(i) > 1) if len(set(ids)) != len(ids) else None
    if dup is not None:
        raise MedsegError(f"{where}: two files give the same sample id '{dup}'")
    return LoadedData(samples=samples, bad=bad.items, source=source, **kw)


# ---------------------------------------------------------------------------------------
# The registry


class PredictionWriter(Protocol):
    """Writes one source's predictions into an output folder (made by `SourceSpec.writer`)."""

    def write(self, loaded: LoadedData, unit: str, indices: list[int], prob: np.ndarray, mask: np.ndarray) -> None:
        """One prediction unit (an image, or a volume for volumetric sources) at original size."""

    def close(self) -> None:
        """Anything written once for all units (e.g. the SIIM submission CSV)."""


@dataclass(frozen=True)
class SourceSpec:
    """A registered data source and what it knows about its files.

    Attributes:
        name: the value of ``data.source``.
        description: one line for docs and errors.
        load: (data config, with_masks, progress, store, only=None) -> LoadedData; it prepares one
            unit (an image, a DICOM, a volume) at a time, asks ``store.restore(name, files)`` first
            and hands each prepared unit to ``store.put`` (`medseg.data.cache`); with ``only`` (case
            ids) it loads those cases alone.
        read_raw: a file's raw intensities, unnormalised (the fingerprint's raw statistics).
        mask_reader: makes a callable sample -> boolean mask at original resolution (reads the
            files again; it may cache, e.g. a volume or an RLE table).
        writer: (output folder, the prediction's data config) -> a `PredictionWriter`.
        match_file: recognises a single input file for `medseg predict`.
        match_folder: for a folder, the `DataConfig` fields that read it, or None.
        volumetric: samples are slices of volumes (per-volume metrics, predictions written per volume).
    """

    name: str
    description: str
    load: Callable[..., LoadedData]
    read_raw: Callable[[str], np.ndarray]
    mask_reader: Callable[[], Callable[[Sample], np.ndarray]]
    writer: Callable[[Path, DataConfig], PredictionWriter]
    match_file: Callable[[Path], Optional[dict]]
    match_folder: Callable[[Path, DataConfig], Optional[dict]]
    volumetric: bool = False


SOURCES: dict[str, SourceSpec] = {}


def register_source(spec: SourceSpec) -> SourceSpec:
    """Make a data source available as ``data.source: <spec.name>``."""
    if spec.name in SOURCES:
        raise ValueError(f"data source '{spec.name}' is registered twice")
    SOURCES[spec.name] = spec
    return spec


def available_sources() -> list[str]:
    return list(SOURCES)


def get_source(name: str) -> SourceSpec:
    """The registered source, or a one-line error naming `data.source`."""
    if name not in SOURCES:
        hint = difflib.get_close_matches(name, list(SOURCES), n=1)
        raise MedsegError(
            f"config error: data.source: unknown source '{name}'" + (f" (did you mean '{hint[0]}'?)" if hint else "")
            + f"; choose from {', '.join(SOURCES)}"
        )
    return SOURCES[name]


def prediction_units(loaded: LoadedData) -> dict[str, list[int]]:
    """What `medseg predict` writes one file set for: each volume (slices in order) or each image."""
    if get_source(loaded.source).volumetric:
        return slices_by_volume([s.meta for s in loaded.samples])
    return {s.sample_id: [i] for i, s in enumerate(loaded.samples)}
