"""Volume geometry and canonical orientation: where each voxel is, and one axis order to slice in.

A volume file stores its voxels in any axis order and direction (a sagittal MR, a NIfTI with
x flipped, an oblique NRRD); its header maps voxel indices to world coordinates. Before
slicing, medseg turns the array so that its axes follow the world's axes as closely as the
header allows -- nibabel's ``as_closest_canonical`` logic (`nibabel.orientations`): each file
axis is assigned the world axis it is most parallel to, permuted and flipped so that index
increases along +x, +y, +z of a chosen frame. Axial slices then look the same however each
file stores its axes, and predictions are turned back (`Reorientation.undo`) before they are
written, so the written file has the input's own array layout and geometry.

The frame (``data.orientation``):

* ``canonical`` (default): the closest canonical orientation in the file's own world frame:
  RAS+ for NIfTI (whose world is RAS), LPS+ for DICOM series, MHA/MHD (ITK's world is LPS)
  and NRRD in an LPS space, RAS+ for NRRD in an RAS space. A file already stored in its
  format's usual orientation is left untouched, and a DICOM slice is read the way DICOM
  stores it (rows top to bottom, the radiological view);
* ``ras`` / ``lps``: RAS+ (or LPS+) for every file, whatever its format: one physical
  orientation across a dataset that mixes NIfTI with DICOM/ITK files (the two differ by a
  180 degree in-plane rotation);
* ``as_stored``: the file's own axis order, no reorientation.

Every file of one case (channels, label) is read in the frame the case's image resolved to,
so an image and a label stored in different formats or orientations still line up voxel for
voxel. Files without an anatomical frame (NRRD without space directions or in scanner-xyz,
NIfTI with qform and sform codes 0) are read as stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

ORIENTATION_MODES = ("canonical", "ras", "lps", "as_stored")
# RAS <-> LPS: x and y change sign (the same matrix both ways)
_FLIP_XY = np.diag([-1.0, -1.0, 1.0, 1.0])


def to_frame(affine: np.ndarray, source: str, target: str) -> np.ndarray:
    """An index->world matrix re-expressed from world frame `source` to `target` ('ras' or 'lps').

    Args:
        affine: 4x4 index->world matrix in `source`.
        source: 'ras' or 'lps'.
        target: 'ras' or 'lps'.
    """
    A = np.asarray(affine, dtype=float)
    return A if source == target else _FLIP_XY @ A


@dataclass
class VolumeGeometry:
    """Where a volume's voxels are: its file array shape and index->world matrix.

    Attributes:
        format: 'nifti', 'nrrd', 'itk' or 'dicom'.
        shape: the file array's spatial shape (x, y, z) -- for a DICOM series (columns, rows, slices).
        affine: 4x4 index->world matrix in `frame`, or None when the file has no geometry.
        frame: 'ras' or 'lps', the anatomical world frame of `affine`; None when it has none
            (NRRD in scanner-xyz or without a space, NIfTI with qform and sform codes 0).
    """

    format: str
    shape: tuple[int, int, int]
    affine: Optional[np.ndarray]
    frame: Optional[str]

    def affine_in(self, frame: str) -> Optional[np.ndarray]:
        """The index->world matrix in 'ras' or 'lps' (a frameless matrix is taken as it is)."""
        if self.affine is None:
            return None
        return to_frame(self.affine, self.frame, frame) if self.frame is not None else np.asarray(self.affine, float)

    def to_json(self) -> dict:
        return {
            "format": self.format, "shape": [int(s) for s in self.shape], "frame": self.frame,
            "affine": None if self.affine is None else np.asarray(self.affine, float).tolist(),
        }

    @classmethod
    def from_json(cls, d: dict) -> "VolumeGeometry":
        aff = d.get("affine")
        return cls(format=d["format"], shape=tuple(int(s) for s in d["shape"]),
                   affine=None if aff is None else np.asarray(aff, dtype=float), frame=d.get("frame"))


_IDENTITY = ((0, 1), (1, 1), (2, 1))


@dataclass(frozen=True)
class Reorientation:
    """How a file array (x, y, z[, channels]) is turned into the canonical array, and back.

    Attributes:
        frame: 'ras' or 'lps' (the canonical array's axes follow that frame's +x, +y, +z), or
            'as_stored' (no reorientation).
        ornt: for each file axis, (canonical axis, +1 or -1), as `nibabel.orientations`.
    """

    frame: str
    ornt: tuple[tuple[int, int], ...] = _IDENTITY

    @property
    def is_identity(self) -> bool:
        return tuple(self.ornt) == _IDENTITY

    def apply(self, arr: np.ndarray) -> np.ndarray:
        """File array (x, y, z, ...) -> canonical array (trailing axes, e.g. channels, kept)."""
        if self.is_identity:
            return arr
        from nibabel.orientations import apply_orientation

        return apply_orientation(arr, np.asarray(self.ornt, dtype=float))

    def undo(self, arr: np.ndarray) -> np.ndarray:
        """Canonical array -> file array: the exact inverse of `apply`."""
        if self.is_identity:
            return arr
        from nibabel.orientations import apply_orientation, ornt_transform

        inverse = ornt_transform(np.asarray(_IDENTITY, dtype=float), np.asarray(self.ornt, dtype=float))
        return apply_orientation(arr, inverse)

    def zooms(self, file_zooms: tuple[float, float, float]) -> tuple[float, float, float]:
        """Voxel sizes of the file axes (x, y, z) -> of the canonical axes."""
        out = [0.0, 0.0, 0.0]
        for i, (axis, _) in enumerate(self.ornt):
            out[int(axis)] = float(file_zooms[i])
        return (out[0], out[1], out[2])

    def to_json(self) -> dict[str, Any]:
        return {"frame": self.frame, "ornt": [[int(a), int(f)] for a, f in self.ornt]}


def reorientation(mode: str, geometry: VolumeGeometry) -> Reorientation:
    """The reorientation a file gets under `mode` (see the module docstring).

    Args:
        mode: 'canonical', 'ras', 'lps' or 'as_stored' (data.orientation), or the frame a case's
            image resolved to, for its other files.
        geometry: the file's geometry.

    Returns:
        A `Reorientation`; 'as_stored' (identity) when the mode says so or the file has no
        anatomical frame or a degenerate matrix (a zero column, non-finite values).

    Raises:
        ValueError: an unknown mode (the config schema only lets the four through).
    """
    if mode not in ORIENTATION_MODES:
        raise ValueError(f"unknown orientation mode {mode!r}")
    if mode == "as_stored" or geometry.frame is None or geometry.affine is None:
        return Reorientation("as_stored")
    target = geometry.frame if mode == "canonical" else mode
    A = geometry.affine_in(target)
    if A is None or not np.all(np.isfinite(A)):
        return Reorientation("as_stored")
    from nibabel.orientations import io_orientation

    ornt = io_orientation(A)
    if not np.all(np.isfinite(ornt)):  # a zero column: that axis has no direction to follow
        return Reorientation("as_stored")
    return Reorientation(target, tuple((int(a), int(f)) for a, f in ornt))


def canonical_affine(geometry: VolumeGeometry, reo: Reorientation) -> Optional[np.ndarray]:
    """The canonical array's index->world matrix, in the reorientation's frame (None without geometry).

    Args:
        geometry: the file's geometry.
        reo: its reorientation.
    """
    if geometry.affine is None:
        return None
    if reo.frame == "as_stored":
        return np.asarray(geometry.affine, float)
    from nibabel.orientations import inv_ornt_aff

    return geometry.affine_in(reo.frame) @ inv_ornt_aff(np.asarray(reo.ornt, dtype=float), geometry.shape)
