"""DICOM CT/MR series as volumes: single-slice files grouped by SeriesInstanceUID, stacked in space.

A series is read the way dcm2niix and ITK's GDCM series reader do it:

* slices are sorted by their position along the slice normal, ``ImagePositionPatient ·
  (row cosine × column cosine)`` from ImageOrientationPatient -- never by file name or
  InstanceNumber, which scanners and anonymisers do not keep in spatial order;
* RescaleSlope / RescaleIntercept are applied per slice (they may differ between slices);
* the voxel -> world matrix is built from the headers, in DICOM's patient frame (LPS): column
  index i along the row cosine times the column spacing (PixelSpacing[1]), row index j along
  the column cosine times the row spacing (PixelSpacing[0]), slice index k along the step
  from the first slice's position to the last one's divided by (n - 1), which also holds
  for a tilted CT gantry; the origin is the first slice's ImagePositionPatient;
* a series whose slices differ in orientation, size or pixel spacing, sit twice at one
  position (several echoes or time points in one series) or leave a gap (uneven steps) is
  refused with one line naming the series: stacking it would put voxels in the wrong place.

The file array, indexed (column, row, slice), is then reoriented like every other volume
(`medseg.data.orientation`). Multi-frame (enhanced) DICOM and DICOM SEG are not read here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from medseg.data.orientation import VolumeGeometry, reorientation
from medseg.data.readers import dicom_str, one_line
from medseg.errors import MedsegError

# direction cosines of two slices of one series agree to this (they are written with ~6 digits)
_COSINE_TOL = 1e-4
# a step between neighbouring slices may differ from the median step by this share (or 0.01 mm)
_GAP_REL_TOL = 0.05
_GAP_ABS_TOL = 0.01
# DICOM objects that sit beside image series and are no slices (reports, structures, SEG): skipped without a word
NOT_IMAGES = {"SR", "PR", "KO", "REG", "RTSTRUCT", "RTPLAN", "RTDOSE", "SEG", "DOC"}
# file types that are never DICOM slices, skipped when a folder is scanned
_NOT_DICOM = {".json", ".csv", ".txt", ".md", ".png", ".jpg", ".jpeg", ".nii", ".gz", ".nrrd", ".mha", ".mhd", ".raw",
              ".zraw", ".yaml", ".yml", ".xml", ".html", ".pdf", ".py", ".zip"}


@dataclass
class Series:
    """One series found under a folder.

    Attributes:
        uid: SeriesInstanceUID.
        files: its slice files, sorted by path (spatial order is decided when it is read).
        folder: the folder holding its first file.
        patient_id / modality / series_number / description: from the first file's header.
    """

    uid: str
    files: list[Path] = field(default_factory=list)
    folder: Optional[Path] = None
    patient_id: Optional[str] = None
    modality: Optional[str] = None
    series_number: Optional[str] = None
    description: Optional[str] = None


def _fail(where: Any, reason: str) -> MedsegError:
    return MedsegError(f"{where}: {one_line(reason, limit=300)}")


def looks_like_dicom(path: Path) -> bool:
    """A file worth opening as DICOM: .dcm/.ima, or no suffix and the 'DICM' marker of a Part-10 file.

    Args:
        path: any file.
    """
    suffix = path.suffix.lower()
    if suffix in (".dcm", ".ima", ".dicom"):
        return True
    if path.name.upper() == "DICOMDIR" or suffix in _NOT_DICOM:
        return False
    if suffix and not suffix[1:].isdigit():  # IM0001.123-style numeric suffixes are common
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def dicom_files(root: Path) -> list[Path]:
    """The DICOM files under `root` (itself a file, or a folder searched recursively), sorted; hidden files skipped.

    Args:
        root: a file or folder.
    """
    root = Path(root)
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".") and looks_like_dicom(p))


def find_series(files: list[Path]) -> tuple[dict[str, Series], list[tuple[Path, str]]]:
    """Group DICOM files by SeriesInstanceUID, reading headers only.

    Args:
        files: candidate files (`dicom_files`).

    Returns:
        ({uid: Series}, [(file, reason)] for files that are not usable slices: unreadable,
        no SeriesInstanceUID, no image position/orientation (not a cross-sectional slice)).
        Non-image objects (structured reports, RT structures, SEG, ...: `NOT_IMAGES`) are
        left out without a word: they often sit in the folders of the series they describe.
    """
    import pydicom

    series: dict[str, Series] = {}
    problems: list[tuple[Path, str]] = []
    for path in files:
        try:
            ds = pydicom.dcmread(str(path), stop_before_pixels=True)
            if (dicom_str(ds, "Modality") or "").upper() in NOT_IMAGES:
                continue
            uid = dicom_str(ds, "SeriesInstanceUID")
            has_geometry = "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds
        except Exception as e:  # noqa: BLE001 — pydicom raises many types for damaged files
            problems.append((path, f"cannot read DICOM header ({type(e).__name__}: {one_line(e)})"))
            continue
        if uid is None:
            problems.append((path, "DICOM file has no SeriesInstanceUID"))
            continue
        if not has_geometry:
            problems.append((path, "DICOM file has no ImagePositionPatient/ImageOrientationPatient (not a CT/MR slice)"))
            continue
        s = series.get(uid)
        if s is None:
            s = series[uid] = Series(uid=uid, folder=path.parent, patient_id=dicom_str(ds, "PatientID"),
                                     modality=dicom_str(ds, "Modality"), series_number=dicom_str(ds, "SeriesNumber"),
                                     description=dicom_str(ds, "SeriesDescription"))
        s.files.append(path)
    return series, problems


def _floats(ds: Any, key: str, n: int, path: Path) -> np.ndarray:
    v = ds.get(key, None)
    try:
        out = np.asarray([float(x) for x in v], dtype=float) if v is not None else None
    except (TypeError, ValueError):
        out = None
    if out is None or out.size != n or not np.all(np.isfinite(out)):
        raise _fail(path, f"DICOM {key} missing or not {n} numbers")
    return out


def read_series(files: list[Path], dtype: Any = np.float32, orientation: str = "as_stored",
                where: Optional[Any] = None) -> tuple[np.ndarray, tuple[float, float, float], dict]:
    """Read one DICOM series as a (Z, H, W) volume (see the module docstring).

    Args:
        files: the series' single-slice files (any order).
        dtype: output dtype.
        orientation: 'canonical', 'ras', 'lps' or 'as_stored' (`medseg.data.orientation`);
            a series' own frame is LPS.
        where: what errors about the whole series name (default: the first file's folder).

    Returns:
        (volume (Z, H, W) with rescale applied, spacing (z, row, col) in mm of the returned
        axes, info: 'format' 'dicom', 'shape' (columns, rows, slices), 'series_uid',
        'n_files', 'Modality', 'PatientID', 'geometry' (`VolumeGeometry.to_json`, LPS),
        'orientation' (`Reorientation.to_json`), 'files' (the slice files in spatial order)).

    Raises:
        MedsegError: an unreadable slice, or a series that cannot be stacked; one line.
    """
    import pydicom

    files = [Path(p) for p in files]
    if not files:
        raise MedsegError(f"{where}: empty DICOM series")
    where = where if where is not None else files[0].parent
    slices = []
    for path in files:
        try:
            ds = pydicom.dcmread(str(path))
        except Exception as e:  # noqa: BLE001
            raise _fail(path, f"cannot read DICOM file ({type(e).__name__}: {one_line(e)})") from None
        try:
            slices.append(_slice(ds, path))
        except MedsegError:
            raise
        except Exception as e:  # noqa: BLE001 — lazily parsed damaged elements raise any type
            raise _fail(path, f"damaged DICOM element ({type(e).__name__}: {one_line(e)})") from None
    first = slices[0]
    uid = first["uid"]
    for s in slices[1:]:
        if s["uid"] != uid:
            raise _fail(where, f"files of two series ({uid}, {s['uid']} in {s['path'].name})")
        if np.abs(s["iop"] - first["iop"]).max() > _COSINE_TOL:
            raise _fail(where, f"series {uid}: slices have different orientations ({first['path'].name} vs {s['path'].name})")
        if s["pixels"].shape != first["pixels"].shape:
            raise _fail(where, f"series {uid}: slices differ in size ({first['path'].name} "
                               f"{first['pixels'].shape}, {s['path'].name} {s['pixels'].shape})")
        if np.abs(s["spacing"] - first["spacing"]).max() > 1e-4:
            raise _fail(where, f"series {uid}: slices differ in PixelSpacing ({first['path'].name} vs {s['path'].name})")
    row_cos, col_cos = first["iop"][:3], first["iop"][3:]
    normal = np.cross(row_cos, col_cos)
    if np.linalg.norm(normal) < 0.5:
        raise _fail(first["path"], "DICOM ImageOrientationPatient does not give two perpendicular directions")
    normal = normal / np.linalg.norm(normal)
    dist = np.array([float(s["ipp"] @ normal) for s in slices])
    order = np.argsort(dist, kind="stable")
    slices = [slices[i] for i in order]
    dist = dist[order]
    steps = np.diff(dist)
    if steps.size:
        i = int(np.argmin(steps))
        if steps[i] < 1e-3:
            raise _fail(where, f"series {uid}: two slices at one position ({slices[i]['path'].name}, "
                               f"{slices[i + 1]['path'].name}: several echoes, phases or acquisitions in one series?)")
        median = float(np.median(steps))
        worst = int(np.argmax(np.abs(steps - median)))
        if abs(steps[worst] - median) > max(_GAP_ABS_TOL, _GAP_REL_TOL * median):
            raise _fail(where, f"series {uid}: uneven slice spacing ({steps[worst]:.3f} mm between "
                               f"{slices[worst]['path'].name} and {slices[worst + 1]['path'].name}, "
                               f"{median:.3f} mm elsewhere: a missing slice?)")
    n = len(slices)
    dy, dx = float(first["spacing"][0]), float(first["spacing"][1])  # PixelSpacing: (between rows, between columns)
    if n > 1:
        step = (slices[-1]["ipp"] - slices[0]["ipp"]) / (n - 1)
    else:
        step = normal * first["thickness"]
    A = np.eye(4)
    A[:3, 0] = row_cos * dx  # i: column index, along the row direction
    A[:3, 1] = col_cos * dy  # j: row index, along the column direction
    A[:3, 2] = step
    A[:3, 3] = slices[0]["ipp"]
    H, W = first["pixels"].shape
    geometry = VolumeGeometry("dicom", (W, H, n), A, "lps")
    arr = np.stack([s["pixels"] for s in slices], axis=0)  # (slice, row, column)
    photometric = [s["photometric"] for s in slices]
    if "MONOCHROME1" in photometric and arr.size:
        arr = (arr.max() + arr.min()) - arr  # bright means dense, over the whole series
    reo = reorientation(orientation, geometry)
    canonical = reo.apply(arr.transpose(2, 1, 0))  # file array (column, row, slice)
    zx, zy, zz = reo.zooms((dx, dy, float(np.linalg.norm(step))))
    vol = canonical.transpose(2, 1, 0)
    vol = np.ascontiguousarray(vol, dtype=dtype) if dtype is not None else np.ascontiguousarray(vol)
    info = {
        "format": "dicom", "shape": [W, H, n], "series_uid": uid, "n_files": n,
        "Modality": first["modality"], "PatientID": first["patient_id"],
        "geometry": geometry.to_json(), "orientation": reo.to_json(),
        "files": [str(s["path"]) for s in slices],
    }
    return vol, (zz, zy, zx), info


def _slice(ds: Any, path: Path) -> dict:
    if "PixelData" not in ds:
        raise _fail(path, "DICOM file has no pixel data")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise _fail(path, f"multi-frame DICOM ({frames} frames; enhanced CT/MR) is not supported, only single-slice series")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise _fail(path, "colour DICOM image; a CT/MR series slice is grey")
    try:
        pixels = np.asarray(ds.pixel_array)
    except Exception as e:  # e.g. a compressed transfer syntax without its decoder installed
        raise _fail(path, f"cannot decode DICOM pixel data ({type(e).__name__}: {one_line(e)})") from None
    if pixels.ndim != 2:
        raise _fail(path, f"expected a 2D slice, got pixel array shape {tuple(pixels.shape)}")
    img = pixels.astype(np.float32)
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    if slope != 1.0 or intercept != 0.0:
        img = img * np.float32(slope) + np.float32(intercept)
    iop = _floats(ds, "ImageOrientationPatient", 6, path)
    thickness = ds.get("SpacingBetweenSlices", None) or ds.get("SliceThickness", None)
    try:
        thickness = float(thickness) if thickness is not None and float(thickness) > 0 else 1.0
    except (TypeError, ValueError):
        thickness = 1.0
    return {
        "path": path, "uid": dicom_str(ds, "SeriesInstanceUID"), "pixels": img,
        "ipp": _floats(ds, "ImagePositionPatient", 3, path), "iop": iop,
        "spacing": _floats(ds, "PixelSpacing", 2, path), "thickness": thickness,
        "photometric": dicom_str(ds, "PhotometricInterpretation"), "modality": dicom_str(ds, "Modality"),
        "patient_id": dicom_str(ds, "PatientID"),
    }
