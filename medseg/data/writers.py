"""Writers for predictions: PNG masks, 16-bit PNG probabilities, volumes with the input's geometry (NIfTI, NRRD, MHA/MHD)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from medseg.data.orientation import Reorientation, VolumeGeometry, reorientation, to_frame
from medseg.data.readers import VOLUME_EXTS, one_line, read_geometry, volume_format
from medseg.errors import MedsegError


def _write_png(path: Path, arr: np.ndarray) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise MedsegError(f"{path}: could not encode PNG")
    buf.tofile(str(path))  # tofile copes with non-ASCII paths where cv2.imwrite does not


def write_png_mask(path: Path, mask01: np.ndarray) -> None:
    """Write a binary mask as an 8-bit PNG with values 0 and 255 (visible in any viewer).

    Args:
        path: output .png (parent folders are created).
        mask01: (H, W) array; any value > 0 is foreground.
    """
    m = np.asarray(mask01)
    if m.ndim != 2:
        raise ValueError(f"write_png_mask expects (H, W), got shape {m.shape}")
    _write_png(path, np.where(m > 0, 255, 0).astype(np.uint8))


def write_png_prob(path: Path, prob: np.ndarray) -> None:
    """Write a probability map as a 16-bit grey PNG: stored value = round(p * 65535).

    Read back with ``png / 65535``; the quantisation step (1.5e-5) is far below any useful
    threshold resolution, and 16 bits keep tiny-lesion probabilities that 8 bits would zero.

    Args:
        path: output .png (parent folders are created).
        prob: (H, W) probabilities; clipped to [0, 1] (NaN is written as 0).
    """
    p = np.nan_to_num(np.asarray(prob, dtype=np.float64), nan=0.0)
    if p.ndim != 2:
        raise ValueError(f"write_png_prob expects (H, W), got shape {p.shape}")
    _write_png(path, np.round(np.clip(p, 0.0, 1.0) * 65535.0).astype(np.uint16))


# ---------------------------------------------------------------------------------------
# Volumes


def _file_array(vol: np.ndarray, geometry: VolumeGeometry, reo: Reorientation, dtype: Any, where: Any) -> np.ndarray:
    """(Z, H, W) canonical prediction -> the reference's file array (x, y, z): the inverse of `read_volume`."""
    if vol.ndim != 3:
        raise ValueError(f"write_volume_like expects (Z, H, W), got shape {vol.shape}")
    canon = [0, 0, 0]
    for i, (axis, _) in enumerate(reo.ornt):
        canon[int(axis)] = int(geometry.shape[i])
    if tuple(vol.shape) != (canon[2], canon[1], canon[0]):
        raise ValueError(
            f"volume shape {vol.shape} (Z, H, W) does not match reference {where} (x, y, z) {tuple(geometry.shape)}"
            + (f" read as (Z, H, W) {(canon[2], canon[1], canon[0])}" if not reo.is_identity else "")
        )
    data = reo.undo(vol.transpose(2, 1, 0))
    return np.ascontiguousarray(data.astype(dtype, copy=False))


def _write_nifti(path: Path, data: np.ndarray, ras: np.ndarray, dtype: Any) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(data, ras)
    img.header.set_xyzt_units("mm")
    img.set_data_dtype(np.dtype(dtype))
    nib.save(img, str(path))


def _write_nrrd(path: Path, data: np.ndarray, lps: np.ndarray) -> None:
    import nrrd

    # NRRD tools (Slicer, ITK) expect LPS
    header = {"encoding": "gzip", "kinds": ["domain", "domain", "domain"], "space": "left-posterior-superior",
              "space directions": lps[:3, :3].T.copy(), "space origin": lps[:3, 3].copy()}
    nrrd.write(str(path), data, header, index_order="F")


def _write_itk(path: Path, data: np.ndarray, spacing: Any, origin: Any, direction: Any) -> None:
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))  # SimpleITK's numpy order is (z, y, x)
    img.SetSpacing([float(v) for v in spacing])
    img.SetOrigin([float(v) for v in origin])
    img.SetDirection([float(v) for v in direction])
    sitk.WriteImage(img, str(path), True)


def _itk_from_lps(lps: np.ndarray) -> tuple[list, list, list]:
    """(spacing, origin, direction) of an index->LPS matrix; ITK has no shear, so columns are normalised."""
    M = np.asarray(lps, float)[:3, :3]
    spacing = np.linalg.norm(M, axis=0)
    spacing = np.where(spacing > 0, spacing, 1.0)
    return spacing.tolist(), np.asarray(lps, float)[:3, 3].tolist(), (M / spacing).reshape(-1).tolist()


def write_volume_geometry(path: Path, volume_zhw: np.ndarray, geometry: VolumeGeometry, dtype: Any = np.uint8,
                          orientation: str = "as_stored") -> None:
    """Write a (Z, H, W) volume in a geometry that has no file to copy a header from (a DICOM series).

    The array goes back to the geometry's own axis order (the inverse of the reorientation
    `orientation` gives for it) and is written with its index->world matrix: a NIfTI affine
    (RAS), an NRRD space (LPS), or ITK origin/spacing/direction (LPS).

    Args:
        path: output .nii, .nii.gz, .nrrd, .mha or .mhd file (parent folders are created).
        volume_zhw: (Z, H, W) array, as the reader returned the volume.
        geometry: where the voxels are (`orientation.VolumeGeometry`).
        dtype: numpy dtype to store.
        orientation: the data.orientation (or resolved frame) the volume was read with.

    Raises:
        MedsegError: unsupported output suffix; names the file.
        ValueError: the volume's shape does not match the geometry.
    """
    path = Path(path)
    out_fmt = volume_format(path)
    if out_fmt is None:
        raise MedsegError(f"{path}: output volume must end in one of {', '.join(VOLUME_EXTS)}")
    data = _file_array(np.asarray(volume_zhw), geometry, reorientation(orientation, geometry), dtype, geometry.format)
    ras = geometry.affine_in("ras")
    ras = np.eye(4) if ras is None else ras
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        _write_any(path, out_fmt, data, ras, dtype)
    except MedsegError:
        raise
    except Exception as e:
        raise MedsegError(f"{path}: cannot write volume ({type(e).__name__}: {one_line(e)})") from None


def _write_any(path: Path, out_fmt: str, data: np.ndarray, ras: np.ndarray, dtype: Any) -> None:
    lps = to_frame(ras, "ras", "lps")
    if out_fmt == "nifti":
        _write_nifti(path, data, ras, dtype)
    elif out_fmt == "nrrd":
        _write_nrrd(path, data, lps)
    else:
        _write_itk(path, data, *_itk_from_lps(lps))


def write_volume_like(path: Path, volume_zhw: np.ndarray, reference_path: Path, dtype: Any = np.uint8,
                      orientation: str = "as_stored") -> None:
    """Write a (Z, H, W) volume with the geometry of a reference volume file.

    The inverse of `readers.read_volume`: the array is turned back from the orientation
    `orientation` gave the reference to the reference's own axis order, so voxel (z, row, col)
    lands on the voxel the reader took it from. The output format follows `path`'s suffix
    (.nii, .nii.gz, .nrrd, .mha, .mhd). Same format as the reference: its header geometry is
    copied (NIfTI affine, sform/qform codes and units; NRRD space, space directions, space
    origin; ITK origin, spacing, direction). Across formats the index->world matrix is
    converted between the formats' worlds (NIfTI RAS, NRRD's space, ITK LPS).

    Args:
        path: output file (parent folders are created).
        volume_zhw: (Z, H, W) array in slice order, as read_volume returned it.
        reference_path: the volume the prediction was made from.
        dtype: numpy dtype to store (uint8 for masks, float32 for probabilities).
        orientation: the data.orientation (or resolved frame) the reference was read with.

    Raises:
        MedsegError: unsupported output suffix or unreadable reference; names the file.
        ValueError: the volume's shape does not match the reference.
    """
    path, reference_path = Path(path), Path(reference_path)
    out_fmt, ref_fmt = volume_format(path), volume_format(reference_path)
    if out_fmt is None:
        raise MedsegError(f"{path}: output volume must end in one of {', '.join(VOLUME_EXTS)}")
    if ref_fmt is None:
        raise MedsegError(f"{reference_path}: reference is not a volume file ({', '.join(VOLUME_EXTS)})")
    try:
        geometry = read_geometry(reference_path)
        if ref_fmt == "nifti":
            import nibabel as nib

            ref: Any = nib.load(str(reference_path))
        elif ref_fmt == "nrrd":
            import nrrd

            ref = nrrd.read_header(str(reference_path))
        else:
            import SimpleITK as sitk

            ref = sitk.ImageFileReader()
            ref.SetFileName(str(reference_path))
            ref.ReadImageInformation()
    except Exception as e:
        raise MedsegError(f"{reference_path}: cannot read reference volume ({type(e).__name__})") from None
    data = _file_array(np.asarray(volume_zhw), geometry, reorientation(orientation, geometry), dtype, reference_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if out_fmt == ref_fmt == "nifti":
            import nibabel as nib

            img = type(ref)(data, ref.affine, header=ref.header.copy())
            img.set_qform(ref.get_qform(), code=int(ref.header["qform_code"]))
            img.set_sform(ref.get_sform(), code=int(ref.header["sform_code"]))
            img.set_data_dtype(np.dtype(dtype))
            # nibabel resets any scl_slope/scl_inter inherited from the reference header (tested)
            nib.save(img, str(path))
        elif out_fmt == ref_fmt == "nrrd":
            import nrrd

            header: dict = {"encoding": "gzip", "kinds": ["domain", "domain", "domain"]}
            for key in ("space", "space directions", "space origin", "spacings", "measurement frame", "space units"):
                if key in ref:
                    header[key] = ref[key]
            if "space directions" in header:
                header["space directions"] = np.asarray(header["space directions"], dtype=float)[:3]
            if "spacings" in header:
                header["spacings"] = np.asarray(header["spacings"], dtype=float)[:3]
            nrrd.write(str(path), data, header, index_order="F")
        elif out_fmt == ref_fmt == "itk" and int(ref.GetDimension()) == 3:
            _write_itk(path, data, ref.GetSpacing(), ref.GetOrigin(), ref.GetDirection())
        else:
            ras = geometry.affine_in("ras")
            _write_any(path, out_fmt, data, np.eye(4) if ras is None else ras, dtype)
    except MedsegError:
        raise
    except Exception as e:
        raise MedsegError(f"{path}: cannot write volume ({type(e).__name__}: {one_line(e)})") from None
