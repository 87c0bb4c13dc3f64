"""The ``dicom_series`` source: DICOM CT/MR series read as volumes, each with a label volume beside it.

``data.root`` is a folder of one series, a folder of series folders (searched recursively),
or a folder whose files belong to several series: every SeriesInstanceUID is one volume
(`medseg.data.dicom_series`: slices sorted along the slice normal, rescale applied, the
voxel -> world matrix from the headers), reoriented and sliced into 2.5D samples like the
``volumes`` source.

Why a source of its own rather than series folders inside ``volumes``: ``volumes`` pairs
``<name><image_suffix>`` / ``<name><label_suffix>`` files in one folder, while a series is a
set of files found by its UID, often nested, without a label among them and with its own
patient id (which groups the split, as for ``siim``). The volume reading itself is shared.

Names: a series alone in its folder is named by the folder's path under root (``/`` -> ``_``;
root itself -> its name); series sharing a folder get ``_<SeriesNumber>`` (or the UID) added.
Labels (training): ``<name><label_suffix>.<ext>`` in root, or ``<folder><label_suffix>.<ext>``
beside the series folder (NIfTI, NRRD or MHA; e.g. ``ct01/`` + ``ct01_label.nii.gz``). The
label is read in the series' frame, so it only has to be in the series' geometry, in any
orientation. Case id: the cases_csv entry, else the PatientID, else the name.

Predictions are ``NAME_prob.nii.gz`` and ``NAME_mask.nii.gz``: NIfTI with the series' affine
(converted to RAS), in its own voxel order -- a series is not rewritten as DICOM.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

from medseg.data.dicom_series import dicom_files, find_series, looks_like_dicom, read_series
from medseg.data.readers import VOLUME_EXTS, volume_format, volume_stem
from medseg.data.schema import DataConfig
from medseg.data.sources.base import BadFiles, LoadedData, SourceSpec, register_source, require_root
from medseg.data.sources.volumes import LabelReader, VolumeCase, VolumeWriter, load_cases
from medseg.errors import MedsegError

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _safe(name: str) -> str:
    return _SAFE.sub("_", name).strip("_") or "series"


def _name_series(root: Path, series: dict) -> dict[str, Any]:
    """name -> Series, names from folders (see the module docstring)."""
    by_folder: dict[Path, list] = {}
    for s in series.values():
        by_folder.setdefault(s.folder, []).append(s)
    out: dict[str, Any] = {}
    for folder, group in sorted(by_folder.items(), key=lambda kv: str(kv[0])):
        rel = folder.relative_to(root) if folder != root else Path(root.name)
        base = _safe("_".join(rel.parts))
        if len(group) == 1:
            out[base] = group[0]
            continue
        numbers = [s.series_number for s in group]
        unique = all(numbers) and len(set(numbers)) == len(numbers)
        for s in sorted(group, key=lambda s: s.uid):
            out[_safe(f"{base}_{s.series_number if unique else s.uid}")] = s
    return out


def _label_for(root: Path, name: str, folder: Path, suffix: str) -> Optional[Path]:
    places = list(dict.fromkeys([root / name, folder.parent / folder.name]))  # in root, or beside the series folder
    for place in places:
        for ext in VOLUME_EXTS:
            p = place.parent / f"{place.name}{suffix}{ext}"
            if p.is_file():
                return p
    return None


def _series_key(s: Any, shared: bool) -> str:
    # meta["path"]: the folder, plus '#UID' when the folder holds several series (read_raw parses it)
    return f"{s.folder}#{s.uid}" if shared else str(s.folder)


def _load_dicom_series(cfg: DataConfig, with_masks: bool, progress: bool, store, only=None) -> LoadedData:
    root = require_root(cfg)
    if root.is_file():
        root = root.parent  # one slice file: its series
    bad = BadFiles(cfg.skip_bad)
    files = dicom_files(root)
    if not files:
        raise MedsegError(f"no DICOM files found in {root} (searched sub-folders too)")
    series, problems = find_series(files)
    for path, reason in problems:
        bad.report(path, reason)
    if not series and not bad.items:
        raise MedsegError(f"no DICOM CT/MR series found in {root}")
    named = _name_series(root, series)
    per_folder: dict[Path, int] = {}
    for s in series.values():
        per_folder[s.folder] = per_folder.get(s.folder, 0) + 1
    used_labels: set[Path] = set()
    cases = []
    for name, s in named.items():
        key = Path(_series_key(s, per_folder[s.folder] > 1))
        label = _label_for(root, name, s.folder, cfg.label_suffix) if with_masks else None
        if with_masks and label is None:
            bad.report(key, f"no label volume '{name}{cfg.label_suffix}.*' in {root}"
                            + (f" or beside {s.folder}" if s.folder != root else ""))
            continue
        if label is not None:
            used_labels.add(label)
        keys = [name, s.uid] + ([s.patient_id] if s.patient_id else [])
        cases.append(VolumeCase(name=name, images=[key], label=label, keys=keys, case_id=s.patient_id or name, series=s.files))
    if with_masks and cfg.label_suffix:
        for p in sorted(root.iterdir()):
            if p.is_file() and volume_format(p) and volume_stem(p).endswith(cfg.label_suffix) and p not in used_labels:
                bad.report(p, f"label has no DICOM series '{volume_stem(p)[: -len(cfg.label_suffix)]}' under {root}")
    return load_cases(cfg, cases, bad, "dicom_series", root, progress, store, only=only)


def _read_raw(path: str) -> Any:
    folder, _, uid = path.rpartition("#") if not Path(path).is_dir() else (path, "", "")
    series, _ = find_series([p for p in dicom_files(Path(folder)) if p.parent == Path(folder)])
    if uid:
        series = {k: v for k, v in series.items() if k == uid}
    if len(series) != 1:
        raise MedsegError(f"{path}: expected one DICOM series, found {len(series)}")
    return read_series(next(iter(series.values())).files)[0]


def _match_folder(path: Path, like: DataConfig) -> Optional[dict]:
    """A folder holding DICOM slices with a position and orientation in space (CT/MR), not projection images."""
    import pydicom

    for i, p in enumerate(f for f in path.rglob("*") if f.is_file() and looks_like_dicom(f)):
        if i >= 20:
            break
        try:
            ds = pydicom.dcmread(str(p), stop_before_pixels=True)
        except Exception:  # noqa: BLE001 — not DICOM: look at the next file
            continue
        if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds:
            return {}
    return None


SOURCE = register_source(SourceSpec(
    name="dicom_series",
    description="DICOM CT/MR series (one volume per SeriesInstanceUID) with NAME_label.<ext> label volumes beside them",
    load=_load_dicom_series,
    read_raw=_read_raw,
    mask_reader=LabelReader,
    writer=VolumeWriter,
    match_file=lambda path: None,
    match_folder=_match_folder,
    volumetric=True,
))
