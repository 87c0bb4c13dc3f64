"""Reading prediction and truth mask files for scoring: format by suffix, spacing from headers."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from medseg.errors import MedsegError

# longest first, so "a.nii.gz" is stem "a", not "a.nii"
SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".png", ".tiff", ".tif", ".jpeg", ".jpg", ".bmp")
_PIL_SUFFIXES = (".png", ".jpeg", ".jpg", ".bmp")


def split_name(path: Path) -> Optional[tuple[str, str]]:
    """(stem, suffix) for a file with a known mask suffix (case-insensitive), else None."""
    lower = path.name.lower()
    for suffix in SUFFIXES:
        if lower.endswith(suffix) and len(lower) > len(suffix):
            return path.name[: -len(suffix)], suffix
    return None


def read_array(path: Path) -> tuple[np.ndarray, Optional[tuple[float, ...]]]:
    """Array and pixel spacing (None when the format has none) of one mask/probability file.

    NIfTI (nibabel; spacing = header zooms) and NRRD (pynrrd; spacing = `spacings` or the
    lengths of `space directions`) keep their stored axis order; PNG/JPEG/BMP (Pillow) and
    TIFF (tifffile) have no spacing. Axes of length 1 are dropped (an (H, W, 1) NIfTI is 2D)
    together with their spacing. A PNG/JPEG/BMP with identical colour channels is read as
    grey; one with distinct colours is an error. Any failure is a one-line MedsegError
    naming the file.
    """
    path = Path(path)
    named = split_name(path)
    if named is None:
        raise MedsegError(f"{path}: unsupported file type (expected one of {', '.join(SUFFIXES)})")
    suffix = named[1]
    try:
        arr, spacing = _read(path, suffix)
    except MedsegError:
        raise
    except Exception as e:  # any reader failure (truncated file, wrong content) is the user's file
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise MedsegError(f"{path}: unreadable {suffix} file ({first})") from None
    keep = [i for i, n in enumerate(arr.shape) if n != 1]
    if len(keep) not in (2, 3):
        raise MedsegError(f"{path}: expected a 2D or 3D mask, got shape {arr.shape}")
    arr = arr.reshape([arr.shape[i] for i in keep])
    if spacing is not None:
        spacing = tuple(spacing[i] for i in keep) if len(spacing) >= max(keep) + 1 else None
    return arr, spacing


def _read(path: Path, suffix: str) -> tuple[np.ndarray, Optional[tuple[float, ...]]]:
    if suffix in (".nii.gz", ".nii"):
        import nibabel as nib

        img = nib.load(str(path))
        arr = np.asanyarray(img.dataobj)
        return arr, tuple(float(z) for z in img.header.get_zooms()[: arr.ndim])
    if suffix == ".nrrd":
        import nrrd

        arr, header = nrrd.read(str(path))
        return arr, _nrrd_spacing(header, arr.ndim)
    if suffix in (".tif", ".tiff"):
        import tifffile

        return np.asarray(tifffile.imread(str(path))), None
    from PIL import Image

    with Image.open(path) as img:
        arr = np.asarray(img)
    if arr.ndim == 3:
        colour = arr[..., :3] if arr.shape[-1] >= 3 else arr[..., :1]  # drop alpha
        if (colour != colour[..., :1]).any():
            raise MedsegError(f"{path}: colour image; save masks and probability maps as single-channel images")
        arr = colour[..., 0]
    return arr, None


def _nrrd_spacing(header: dict, ndim: int) -> Optional[tuple[float, ...]]:
    if "spacings" in header:
        sp = [float(s) for s in header["spacings"]]
    elif "space directions" in header:
        sp = []
        for row in header["space directions"]:
            vec = np.asarray(row, dtype=float) if row is not None else np.array([np.nan])
            sp.append(float(np.linalg.norm(vec)))
    else:
        return None
    if len(sp) != ndim or not all(np.isfinite(s) and s > 0 for s in sp):
        return None
    return tuple(sp)
