"""Low-level file readers: 2D images, 3D volumes (NIfTI, NRRD, ITK's MHA/MHD) and DICOM.

Every reader returns raw values as float32 (no normalisation) and raises a one-line
`MedsegError` that starts with the file path when the file cannot be used.

Volume axis convention (shared with `writers.write_volume_like`, its exact inverse): the
file array is indexed (x, y, z) -- NIfTI (i, j, k) as nibabel returns it, NRRD in pynrrd's
default Fortran index order, ITK images in index order (SimpleITK's numpy view reversed).
It is first reoriented as asked (`medseg.data.orientation`; the data sources pass
``data.orientation``, by default the closest canonical orientation of the format's world
frame, so that the axes of every file follow the world's axes however the file stores them;
the readers' own default, ``as_stored``, keeps the file's axis order), then returned as
``canonical.transpose(2, 1, 0)``, shape (Z, H, W): slice z is ``canonical[:, :, z].T``,
rows along y and columns along x.
Spacing is returned in the same order: (z, row, col) = (dz, dy, dx) in mm.

MHA/MHD (and the other ITK formats) are read and written with SimpleITK rather than ITK's
own Python wrapping or MONAI's LoadImage: SimpleITK is one small wheel, reads and writes
every ITK format, and keeps the full geometry (origin, spacing and direction cosines).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

import numpy as np

from medseg.data.orientation import VolumeGeometry, reorientation
from medseg.errors import MedsegError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
VOLUME_EXTS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
_ITK_EXTS = (".mha", ".mhd")
# NRRD space names (pynrrd gives them as written; both long and short forms occur)
_LPS_SPACES = {"left-posterior-superior", "lps", "left-posterior-superior-time", "lpst"}
_RAS_SPACES = {"right-anterior-superior", "ras", "right-anterior-superior-time", "rast"}
_LAS_SPACES = {"left-anterior-superior", "las", "left-anterior-superior-time", "last"}


def one_line(text: Any, limit: int = 200) -> str:
    """Collapse an exception message to one short line (the CLI prints errors on one line).

    Args:
        text: anything with a str().
        limit: maximum length kept.
    """
    s = re.sub(r"\s+", " ", str(text)).strip()
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _fail(path: Path, reason: str, err: Optional[BaseException] = None) -> MedsegError:
    detail = ""
    if err is not None:
        text = one_line(err)
        detail = f" ({type(err).__name__}: {text})" if text else f" ({type(err).__name__})"
    return MedsegError(f"{path}: {reason}{detail}")


def volume_stem(path: Path) -> str:
    """File name without its volume extension ('a.nii.gz' -> 'a').

    Args:
        path: a .nii, .nii.gz, .nrrd, .mha or .mhd file.
    """
    name = Path(path).name
    for ext in VOLUME_EXTS:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return Path(path).stem


def volume_format(path: Path) -> Optional[str]:
    """'nifti', 'nrrd', 'itk' (MHA/MHD, read with SimpleITK) or None, from the file name's suffix (case-insensitive).

    Args:
        path: any file path.
    """
    name = Path(path).name.lower()
    if name.endswith(".nii") or name.endswith(".nii.gz"):
        return "nifti"
    if name.endswith(".nrrd"):
        return "nrrd"
    if name.endswith(_ITK_EXTS):
        return "itk"
    return None


# ---------------------------------------------------------------------------------------
# 2D images


def _png_bit_depth(path: Path) -> int:
    # IHDR is always the first chunk: 8-byte signature, 4 length, 4 type, 4 width, 4 height, then depth.
    with open(path, "rb") as f:
        head = f.read(25)
    return head[24] if len(head) == 25 and head[:8] == b"\x89PNG\r\n\x1a\n" else 8


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    arr = np.asarray(tifffile.imread(str(path)))
    arr = np.squeeze(arr)
    if arr.ndim == 3 and arr.shape[-1] not in (3, 4) and arr.shape[0] in (3, 4):
        arr = np.moveaxis(arr, 0, -1)  # planar (C, H, W) storage
    return arr


def _read_pil(path: Path, as_mask: bool) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        img.load()  # decode now so truncated/corrupt files fail here, inside the caller's try
        fmt = img.format
        mode = img.mode
        if mode == "P":
            # Palette PNGs are a common mask format whose pixel values are the palette indices
            # (the class ids); for images the palette colours are the data.
            if as_mask:
                return np.asarray(img)
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            mode = img.mode
        if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            img = img.convert("RGB")
            mode = "RGB"
        if mode == "PA":
            img = img.convert("LA")
            mode = "LA"
        arr = np.asarray(img)
    if fmt == "PNG" and mode in ("RGB", "RGBA") and _png_bit_depth(path) == 16:
        # Pillow reduces 16-bit colour PNGs to 8 bit; OpenCV keeps all 16 bits (in BGR order).
        import cv2

        raw = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise ValueError("OpenCV could not decode the 16-bit colour PNG")
        arr = raw[..., [2, 1, 0]] if raw.shape[-1] == 3 else raw[..., [2, 1, 0, 3]]
    if mode == "LA":
        arr = arr[..., 0]
    return arr


def read_image_2d(path: Path, as_mask: bool = False) -> np.ndarray:
    """Read a PNG/JPEG/TIFF/BMP image as raw float32 values.

    8- and 16-bit, grey and colour files are supported; an alpha channel is dropped
    (RGBA -> RGB, grey+alpha -> grey). Whether an RGB file really holds a grey image is for
    the caller to decide (`sources` compares the channels).

    Args:
        path: the image file.
        as_mask: keep palette indices of palette ("P") PNGs instead of their colours, so
            an indexed label map reads as its class ids.

    Returns:
        (H, W) or (H, W, 3) float32 array of the stored values.

    Raises:
        MedsegError: missing, unreadable, corrupt or not a 2D image; message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise _fail(path, "no such file")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            arr = _read_tiff(path)
        else:
            arr = _read_pil(path, as_mask)
    except MedsegError:
        raise
    except Exception as e:  # decoders raise many unrelated types for corrupt files
        raise _fail(path, "cannot read image", e) from None
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]
    elif arr.ndim == 3 and arr.shape[-1] == 2:
        arr = arr[..., 0]  # grey + alpha (TIFF)
    elif arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 3)):
        raise _fail(path, f"not a 2D grey or RGB image (array shape {tuple(arr.shape)})")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise _fail(path, "image is empty (0 pixels)")
    if not np.issubdtype(arr.dtype, np.number):
        raise _fail(path, f"unsupported pixel type {arr.dtype}")
    return arr.astype(np.float32, copy=False)


# ---------------------------------------------------------------------------------------
# Volumes


def _nrrd_spacing(header: dict, ndim: int) -> Optional[tuple[float, float, float]]:
    """File-axis voxel sizes (x, y, z) of an NRRD header, or None when an axis has none."""
    dirs = header.get("space directions")
    sp: list[Optional[float]] = [None] * ndim
    if dirs is not None:
        for i, row in enumerate(list(dirs)[:ndim]):
            if row is None:
                continue
            v = np.asarray(row, dtype=float)
            if v.size and np.all(np.isfinite(v)):
                sp[i] = float(np.linalg.norm(v))
    spacings = header.get("spacings")
    if spacings is not None:
        for i, s in enumerate(list(spacings)[:ndim]):
            if sp[i] is None and s is not None and np.isfinite(float(s)):
                sp[i] = float(s)
    if len(sp) < 3 or any(s is None for s in sp[:3]):
        return None
    return (sp[0], sp[1], sp[2])


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return [_jsonable(x) for x in v.tolist()] if v.ndim else _jsonable(v.item())
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return None if not np.isfinite(f) else f
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (str, int, bool)) or v is None:
        return v
    return str(v)


def _spatial_shape(shape: Any) -> tuple[int, int, int]:
    s = ([int(x) for x in list(shape)[:3]] + [1, 1, 1])[:3]
    return (s[0], s[1], s[2])


def nrrd_geometry(header: dict) -> VolumeGeometry:
    """The geometry of an NRRD header: index->world in its space (LPS, RAS; LAS turned to RAS).

    Args:
        header: a pynrrd header (read with ``index_order='F'``).
    """
    shape = _spatial_shape(header.get("sizes", (1, 1, 1)))
    space = str(header.get("space") or "").lower()
    dirs = header.get("space directions")
    A: Optional[np.ndarray] = None
    if dirs is not None:
        rows = [None if r is None else np.asarray(r, dtype=float) for r in list(dirs)]
        rows = [r for r in rows if r is not None and r.size == 3 and np.all(np.isfinite(r))]
        if len(rows) == 3:
            A = np.eye(4)
            A[:3, :3] = np.stack(rows, axis=1)  # column i = direction (and length) of array axis i
            origin = header.get("space origin")
            if origin is not None and np.all(np.isfinite(np.asarray(origin, dtype=float))):
                A[:3, 3] = np.asarray(origin, dtype=float)
    if A is None:
        spacings = header.get("spacings")
        if spacings is not None and len(spacings) >= 3 and np.all(np.isfinite(np.asarray(list(spacings)[:3], float))):
            A = np.diag([float(s) for s in list(spacings)[:3]] + [1.0])
        return VolumeGeometry("nrrd", shape, A, None)  # spacing without directions: no anatomical frame
    if space in _LPS_SPACES:
        return VolumeGeometry("nrrd", shape, A, "lps")
    if space in _RAS_SPACES:
        return VolumeGeometry("nrrd", shape, A, "ras")
    if space in _LAS_SPACES:
        return VolumeGeometry("nrrd", shape, np.diag([-1.0, 1.0, 1.0, 1.0]) @ A, "ras")
    return VolumeGeometry("nrrd", shape, A, None)  # scanner-xyz, 3D-right-handed, no space


def _nifti_geometry(img: Any) -> VolumeGeometry:
    h = img.header
    # codes 0 for both: NIfTI's "method 1", no orientation in the file (nibabel still gives an affine)
    framed = int(h["qform_code"]) > 0 or int(h["sform_code"]) > 0
    return VolumeGeometry("nifti", _spatial_shape(img.shape), np.asarray(img.affine, dtype=float), "ras" if framed else None)


def _itk_geometry(reader: Any) -> VolumeGeometry:
    """ITK geometry (origin, spacing, direction cosines; ITK's world is LPS) of a SimpleITK reader or image."""
    dim = int(reader.GetDimension())
    size = list(reader.GetSize())
    spacing = list(reader.GetSpacing())
    origin = list(reader.GetOrigin())
    D = np.asarray(reader.GetDirection(), dtype=float).reshape(dim, dim)
    n = min(dim, 3)
    A = np.eye(4)
    A[:n, :n] = D[:n, :n] @ np.diag(spacing[:n])
    A[:n, 3] = origin[:n]
    return VolumeGeometry("itk", _spatial_shape(size), A, "lps")


def read_geometry(path: Path) -> VolumeGeometry:
    """The geometry of a volume file from its header alone (the voxels are not read).

    Args:
        path: a .nii, .nii.gz, .nrrd, .mha or .mhd file.

    Raises:
        MedsegError: not a volume file, missing or unreadable; names the file.
    """
    path = Path(path)
    fmt = volume_format(path)
    if fmt is None:
        raise _fail(path, f"not a volume file (expected {', '.join(VOLUME_EXTS)})")
    if not path.is_file():
        raise _fail(path, "no such file")
    try:
        if fmt == "nifti":
            import nibabel as nib

            return _nifti_geometry(nib.load(str(path)))
        if fmt == "nrrd":
            import nrrd

            return nrrd_geometry(nrrd.read_header(str(path)))
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        return _itk_geometry(reader)
    except MedsegError:
        raise
    except Exception as e:
        raise _fail(path, "cannot read volume header", e) from None


def _read_itk(path: Path) -> tuple[np.ndarray, list, VolumeGeometry, dict]:
    import SimpleITK as sitk

    img = sitk.ReadImage(str(path))
    arr = sitk.GetArrayFromImage(img)  # spatial axes reversed: (z, y, x[, t]) then components
    dim = int(img.GetDimension())
    comps = int(img.GetNumberOfComponentsPerPixel())
    order = list(range(dim))[::-1] + ([dim] if comps > 1 else [])
    arr = np.transpose(arr, order)  # (x, y, z[, t][, components])
    if dim == 2:
        arr = arr[:, :, None]  # a 2D ITK image is one slice
    geometry = _itk_geometry(img)
    zooms = list(img.GetSpacing())[:3]
    info = {
        "format": "itk", "shape": list(arr.shape),
        "origin": _jsonable(list(img.GetOrigin())), "spacing": _jsonable(list(img.GetSpacing())),
        "direction": _jsonable(list(img.GetDirection())),
    }
    return arr, zooms, geometry, info


def _read_volume_file(path: Path) -> tuple[np.ndarray, Optional[list], VolumeGeometry, dict]:
    """(file array (x, y, z, ...), file-axis zooms or None, geometry, header info) of one volume file."""
    fmt = volume_format(path)
    if fmt == "nifti":
        import nibabel as nib

        img = nib.load(str(path))
        arr = np.asarray(img.dataobj)  # scl_slope/scl_inter applied
        zooms = [float(z) for z in img.header.get_zooms()]
        zooms = (zooms + [1.0, 1.0, 1.0])[:3]
        info = {"format": "nifti", "shape": list(arr.shape), "affine": _jsonable(np.asarray(img.affine))}
        return arr, zooms, _nifti_geometry(img), info
    if fmt == "nrrd":
        import nrrd

        data, header = nrrd.read(str(path), index_order="F")
        arr = np.asarray(data)
        sp = _nrrd_spacing(header, arr.ndim)
        info = {
            "format": "nrrd", "shape": list(arr.shape), "space": header.get("space"),
            "space_directions": _jsonable(header.get("space directions")),
            "space_origin": _jsonable(header.get("space origin")),
        }
        return arr, list(sp) if sp is not None else None, nrrd_geometry(header), info
    return _read_itk(path)


def _spatial_with_channels(arr: np.ndarray, path: Path, channels: bool) -> np.ndarray:
    """(x, y, z, C) from a file array: 2D gets z = 1; a trailing axis is channels (MSD's 4D channel-last NIfTI)."""
    while arr.ndim > 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim == 3:
        return arr[..., None]
    if arr.ndim == 4 and (channels or arr.shape[-1] == 1):
        return arr  # (x, y, z, 1) as some tools write single-timepoint images
    raise _fail(path, f"expected a 3D volume, got array shape {tuple(arr.shape)}")


def read_volume_channels(
    path: Path, dtype: Any = np.float32, orientation: str = "as_stored"
) -> tuple[np.ndarray, Optional[tuple[float, float, float]], dict]:
    """Read a NIfTI, NRRD or ITK (MHA/MHD) volume as (C, Z, H, W), reoriented.

    A 3D file gives C = 1; a 4D file's last axis (MSD's channel-last NIfTI, an ITK vector
    image) gives the channels. The axis convention is `read_volume`'s: ``vol[c, z] ==
    canonical[:, :, z, c].T``.

    Args:
        path: the volume file.
        dtype: output dtype (float32 for images; None keeps the stored type, for labels).
        orientation: 'canonical', 'ras', 'lps' or 'as_stored' (`orientation` module).

    Returns:
        (volume (C, Z, H, W), spacing (z, row, col) in mm of the canonical axes or None, header
        info as `read_volume`'s).

    Raises:
        MedsegError: missing, unreadable, not 3D/4D or of a non-numeric type; names the file.
    """
    return _read(path, dtype, orientation, channels=True)


def _read(path: Path, dtype: Any, orientation: str,
          channels: bool) -> tuple[np.ndarray, Optional[tuple[float, float, float]], dict]:
    path = Path(path)
    if volume_format(path) is None:
        raise _fail(path, f"not a volume file (expected {', '.join(VOLUME_EXTS)})")
    if not path.is_file():
        raise _fail(path, "no such file")
    try:
        arr, zooms, geometry, info = _read_volume_file(path)
        arr = _spatial_with_channels(arr, path, channels)
        if not np.issubdtype(arr.dtype, np.number) and arr.dtype != bool:
            raise _fail(path, f"unsupported voxel type {arr.dtype}")
        reo = reorientation(orientation, geometry)
        arr = reo.apply(arr)
    except MedsegError:
        raise
    except Exception as e:  # the format libraries raise many unrelated types for damaged files
        raise _fail(path, "cannot read volume", e) from None
    spacing = None
    if zooms is not None:
        zx, zy, zz = reo.zooms((zooms[0], zooms[1], zooms[2]))
        spacing = (zz, zy, zx)
    info["geometry"] = geometry.to_json()
    info["orientation"] = reo.to_json()
    vol = arr.transpose(3, 2, 1, 0)
    vol = np.ascontiguousarray(vol, dtype=dtype) if dtype is not None else np.ascontiguousarray(vol)
    return vol, spacing, info


def read_volume(
    path: Path, dtype: Any = np.float32, orientation: str = "as_stored"
) -> tuple[np.ndarray, Optional[tuple[float, float, float]], dict]:
    """Read a NIfTI (.nii, .nii.gz), NRRD (.nrrd) or ITK (.mha, .mhd) volume as (Z, H, W).

    The file array is first reoriented (`orientation.reorientation`: the sources ask for
    ``data.orientation``; the default here keeps the file's axis order), then ``vol[z] ==
    canonical[:, :, z].T`` (see the module docstring). NIfTI scaling (scl_slope/scl_inter)
    is applied.

    Args:
        path: the volume file.
        dtype: output dtype (float32 for images; labels may ask for None to keep the stored type).
        orientation: 'canonical', 'ras', 'lps' or 'as_stored'.

    Returns:
        (volume (Z, H, W), spacing (z, row, col) in mm or None when the file has none,
        header info: JSON-serialisable dict with 'format', 'shape' (file array shape), the
        format's geometry ('affine' for NIfTI, 'space'/'space_directions'/'space_origin' for
        NRRD, 'origin'/'spacing'/'direction' for ITK), 'geometry' (`VolumeGeometry.to_json`)
        and 'orientation' (`Reorientation.to_json`: the frame and the axis map used)).

    Raises:
        MedsegError: missing, unreadable or not a 3D volume; message names the file.
    """
    vol, spacing, info = _read(path, dtype, orientation, channels=False)
    return vol[0], spacing, info


# ---------------------------------------------------------------------------------------
# DICOM


def dicom_str(ds: Any, key: str) -> Optional[str]:
    """A DICOM element as stripped text (None when absent or blank)."""
    v = ds.get(key, None)
    if v is None:
        return None
    s = str(v).strip()
    return s or None


def read_dicom(path: Path) -> tuple[np.ndarray, dict]:
    """Read a single-frame grey DICOM image.

    RescaleSlope/RescaleIntercept are applied; MONOCHROME1 images (where high values are
    dark) are inverted around their own value range so that bright always means dense.

    Args:
        path: a .dcm file (Part-10 file with preamble, as the SIIM-ACR data).

    Returns:
        (image (H, W) float32, info dict with 'SOPInstanceUID', 'PatientID', 'PixelSpacing'
        ([row_mm, col_mm] or None), 'Modality', 'PhotometricInterpretation').

    Raises:
        MedsegError: not DICOM, no/undecodable pixel data, multi-frame or colour; names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise _fail(path, "no such file")
    try:
        import pydicom

        ds = pydicom.dcmread(str(path))
    except Exception as e:
        raise _fail(path, "cannot read DICOM file", e) from None
    try:
        return _dicom_image(ds, path)
    except MedsegError:
        raise
    except Exception as e:  # noqa: BLE001 — pydicom parses elements lazily: a damaged one raises any type when read
        raise _fail(path, "damaged DICOM element", e) from None


def _dicom_image(ds: Any, path: Path) -> tuple[np.ndarray, dict]:
    if "PixelData" not in ds:
        raise _fail(path, "DICOM file has no pixel data")
    try:
        arr = np.asarray(ds.pixel_array)
    except Exception as e:  # e.g. a compressed transfer syntax without its decoder installed
        raise _fail(path, "cannot decode DICOM pixel data", e) from None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    if frames > 1 or spp != 1 or arr.ndim != 2:
        raise _fail(path, f"expected a single-frame grey DICOM image, got pixel array shape {tuple(arr.shape)}")
    img = arr.astype(np.float32)
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    if slope != 1.0 or intercept != 0.0:
        img = img * np.float32(slope) + np.float32(intercept)
    photometric = dicom_str(ds, "PhotometricInterpretation")
    if photometric == "MONOCHROME1" and img.size:
        img = (img.max() + img.min()) - img
    spacing = ds.get("PixelSpacing", None) or ds.get("ImagerPixelSpacing", None)
    try:
        pixel_spacing = [float(spacing[0]), float(spacing[1])] if spacing is not None and len(spacing) >= 2 else None
    except (TypeError, ValueError):
        pixel_spacing = None
    info = {
        "SOPInstanceUID": dicom_str(ds, "SOPInstanceUID"),
        "PatientID": dicom_str(ds, "PatientID"),
        "PixelSpacing": pixel_spacing,
        "Modality": dicom_str(ds, "Modality"),
        "PhotometricInterpretation": photometric,
    }
    return img.astype(np.float32, copy=False), info
