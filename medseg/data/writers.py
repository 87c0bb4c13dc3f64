"""Writers for predictions: PNG masks, 16-bit PNG probabilities, volumes with the input's geometry."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np

from medseg.data.readers import volume_format
from medseg.errors import MedsegError

# NRRD spaces whose axes point left/posterior (the DICOM/ITK convention); NIfTI is RAS.
_LPS_SPACES = {"left-posterior-superior", "lps"}
_RAS_SPACES = {"right-anterior-superior", "ras"}
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


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


def _nrrd_geometry(header: dict) -> tuple[Optional[np.ndarray], Optional[str]]:
    """4x4 index->world matrix of an NRRD header (world in the header's 'space') and that space."""
    space = header.get("space")
    dirs = header.get("space directions")
    A = np.eye(4)
    if dirs is not None:
        rows = [None if r is None else np.asarray(r, dtype=float) for r in list(dirs)]
        rows = [r for r in rows if r is not None and r.size == 3 and np.all(np.isfinite(r))]
        if len(rows) != 3:
            return None, space
        A[:3, :3] = np.stack(rows, axis=1)  # column i = direction (and length) of array axis i
        origin = header.get("space origin")
        if origin is not None and np.all(np.isfinite(np.asarray(origin, dtype=float))):
            A[:3, 3] = np.asarray(origin, dtype=float)
        return A, space
    spacings = header.get("spacings")
    if spacings is not None and len(spacings) >= 3:
        A[:3, :3] = np.diag([float(s) for s in list(spacings)[:3]])
        return A, space
    return None, space


def _to_ras(A: np.ndarray, space: Optional[str]) -> np.ndarray:
    return _LPS_TO_RAS @ A if (space or "").lower() in _LPS_SPACES else A


def write_volume_like(path: Path, volume_zhw: np.ndarray, reference_path: Path, dtype: Any = np.uint8) -> None:
    """Write a (Z, H, W) volume with the geometry of a reference volume file.

    The inverse of `readers.read_volume`'s axis convention: the file array is
    ``volume_zhw.transpose(2, 1, 0)`` (x, y, z), so voxel (z, row, col) lands on the voxel
    the reader took it from. The output format follows `path`'s suffix (.nii, .nii.gz or
    .nrrd). Same format as the reference: its header geometry is copied (NIfTI affine,
    sform/qform codes and units; NRRD space, space directions, space origin). Across formats
    the index->world matrix is converted between NRRD's space (LPS or RAS) and NIfTI's RAS.

    Args:
        path: output file (parent folders are created).
        volume_zhw: (Z, H, W) array in slice order, as read_volume returned it.
        reference_path: the volume the prediction was made from.
        dtype: numpy dtype to store (uint8 for masks, float32 for probabilities).

    Raises:
        MedsegError: unsupported output suffix or unreadable reference; names the file.
        ValueError: the volume's shape does not match the reference.
    """
    path, reference_path = Path(path), Path(reference_path)
    out_fmt, ref_fmt = volume_format(path), volume_format(reference_path)
    if out_fmt is None:
        raise MedsegError(f"{path}: output volume must end in .nii, .nii.gz or .nrrd")
    if ref_fmt is None:
        raise MedsegError(f"{reference_path}: reference is not a .nii, .nii.gz or .nrrd volume")
    vol = np.asarray(volume_zhw)
    if vol.ndim != 3:
        raise ValueError(f"write_volume_like expects (Z, H, W), got shape {vol.shape}")
    data = np.ascontiguousarray(vol.transpose(2, 1, 0).astype(dtype, copy=False))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if ref_fmt == "nifti":
            import nibabel as nib

            ref = nib.load(str(reference_path))
            ref_shape = tuple(ref.shape[:3]) + (1,) * max(0, 3 - len(ref.shape))
            ras = np.asarray(ref.affine, dtype=float)
            ref_header: Any = ref.header
        else:
            import nrrd

            ref_header = nrrd.read_header(str(reference_path))
            ref_shape = tuple(int(s) for s in ref_header["sizes"][:3]) + (1,) * max(0, 3 - int(ref_header["dimension"]))
            A, space = _nrrd_geometry(ref_header)
            ras = _to_ras(A, space) if A is not None else np.eye(4)
    except Exception as e:
        raise MedsegError(f"{reference_path}: cannot read reference volume ({type(e).__name__})") from None
    if data.shape != ref_shape:
        raise ValueError(f"volume shape {vol.shape} (Z, H, W) does not match reference {reference_path} (x, y, z) {ref_shape}")

    if out_fmt == "nifti":
        import nibabel as nib

        if ref_fmt == "nifti":
            header = ref_header.copy()
            img = type(ref)(data, ref.affine, header=header)
            img.set_qform(ref.get_qform(), code=int(ref_header["qform_code"]))
            img.set_sform(ref.get_sform(), code=int(ref_header["sform_code"]))
        else:
            img = nib.Nifti1Image(data, ras)
            img.header.set_xyzt_units("mm")
        img.set_data_dtype(np.dtype(dtype))
        # nibabel resets any scl_slope/scl_inter inherited from the reference header (tested)
        nib.save(img, str(path))
    else:
        import nrrd

        header: dict = {"encoding": "gzip", "kinds": ["domain", "domain", "domain"]}
        if ref_fmt == "nrrd":
            for key in ("space", "space directions", "space origin", "spacings", "measurement frame", "space units"):
                if key in ref_header:
                    header[key] = ref_header[key]
            if "space directions" in header:
                header["space directions"] = np.asarray(header["space directions"], dtype=float)[:3]
            if "spacings" in header:
                header["spacings"] = np.asarray(header["spacings"], dtype=float)[:3]
        else:
            # NIfTI world is RAS; NRRD tools (Slicer, ITK) expect LPS
            lps = _LPS_TO_RAS @ ras
            header["space"] = "left-posterior-superior"
            header["space directions"] = lps[:3, :3].T.copy()
            header["space origin"] = lps[:3, 3].copy()
        nrrd.write(str(path), data, header, index_order="F")
