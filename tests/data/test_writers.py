"""PNG mask/probability writers and volume writing with the reference's geometry."""

from __future__ import annotations

import cv2
import nibabel as nib
import nrrd
import numpy as np
import pytest

from medseg.data.readers import read_volume
from medseg.data.writers import write_png_mask, write_png_prob, write_volume_like


def test_png_mask_is_0_255(tmp_path):
    m = np.array([[0, 1], [3, 0]], dtype=np.uint8)
    write_png_mask(tmp_path / "sub" / "m.png", m)
    back = cv2.imread(str(tmp_path / "sub" / "m.png"), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, [[0, 255], [255, 0]])


def test_png_prob_is_uint16_scaled(tmp_path):
    p = np.array([[0.0, 0.5], [1.0, 1e-4], [1.7, -0.2]], dtype=np.float32)
    write_png_prob(tmp_path / "p.png", p)
    back = cv2.imread(str(tmp_path / "p.png"), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, [[0, 32768], [65535, 7], [65535, 0]])
    assert np.abs(back / 65535.0 - np.clip(p, 0, 1)).max() <= 0.5 / 65535 + 1e-9


OBLIQUE = np.array([
    [0.0, -0.9, 0.1, 12.5],
    [0.7, 0.0, 0.0, -40.0],
    [0.0, 0.05, 2.5, 7.0],
    [0.0, 0.0, 0.0, 1.0],
])


def world_ras(path):
    """Index->RAS matrix of a written file (NRRD converted from its space)."""
    if str(path).endswith(".nrrd"):
        h = nrrd.read_header(str(path))
        A = np.eye(4)
        A[:3, :3] = np.asarray(h["space directions"], float).T
        A[:3, 3] = np.asarray(h["space origin"], float)
        if h.get("space") == "left-posterior-superior":
            A = np.diag([-1.0, -1.0, 1.0, 1.0]) @ A
        return A
    return nib.load(str(path)).affine


def make_nifti(path, rng):
    arr = rng.normal(size=(6, 5, 4)).astype(np.float32)
    img = nib.Nifti1Image(arr, OBLIQUE)
    img.set_qform(OBLIQUE, code=1)
    img.set_sform(OBLIQUE, code=2)
    nib.save(img, path)
    return path


def make_nrrd(path, rng):
    arr = rng.normal(size=(6, 5, 4)).astype(np.float32)
    header = {"space": "left-posterior-superior", "space directions": OBLIQUE[:3, :3].T.copy(),
              "space origin": OBLIQUE[:3, 3].copy()}
    nrrd.write(str(path), arr, header)
    return path


@pytest.mark.parametrize("ref_name, maker", [("ref.nii.gz", make_nifti), ("ref.nrrd", make_nrrd)])
@pytest.mark.parametrize("out_name", ["out.nii.gz", "out.nii", "out.nrrd"])
def test_volume_round_trip_keeps_geometry_and_voxel_order(tmp_path, rng, ref_name, maker, out_name):
    ref = maker(tmp_path / ref_name, rng)
    ref_vol, ref_spacing, _ = read_volume(ref)
    pred = (rng.random(ref_vol.shape) < 0.3).astype(np.uint8)
    pred[0, 0, 1] = 1  # asymmetric so a wrong transpose or flip shows
    pred[-1, -1, 0] = 0
    out = tmp_path / "pred" / out_name
    write_volume_like(out, pred, ref, np.uint8)
    back, spacing, _ = read_volume(out, dtype=None)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, pred)
    assert spacing == pytest.approx(ref_spacing)
    # same world position for every voxel
    np.testing.assert_allclose(world_ras(out), world_ras(ref), atol=1e-5)
    if out_name.endswith(".nrrd"):
        assert nrrd.read_header(str(out))["space"] == "left-posterior-superior"


def test_nifti_header_codes_kept(tmp_path, rng):
    ref = make_nifti(tmp_path / "ref.nii.gz", rng)
    vol, _, _ = read_volume(ref)
    write_volume_like(tmp_path / "p.nii.gz", vol, ref, np.float32)
    h = nib.load(tmp_path / "p.nii.gz").header
    assert int(h["qform_code"]) == 1 and int(h["sform_code"]) == 2
    np.testing.assert_allclose(nib.load(tmp_path / "p.nii.gz").get_qform(), nib.load(ref).get_qform(), atol=1e-6)  # qform cannot hold shear: compare with the stored one
    np.testing.assert_array_equal(read_volume(tmp_path / "p.nii.gz")[0], vol)


def test_scaled_reference_does_not_rescale_output(tmp_path):
    arr = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    img = nib.Nifti1Image(arr, np.eye(4))
    img.header.set_slope_inter(3.0, 5.0)
    nib.save(img, tmp_path / "ref.nii")
    mask = np.zeros((4, 3, 2), dtype=np.uint8)
    mask[1, 2, 0] = 1
    write_volume_like(tmp_path / "m.nii", mask, tmp_path / "ref.nii", np.uint8)
    np.testing.assert_array_equal(read_volume(tmp_path / "m.nii", dtype=None)[0], mask)


def test_shape_mismatch_is_rejected(tmp_path, rng):
    ref = make_nifti(tmp_path / "ref.nii.gz", rng)
    with pytest.raises(ValueError, match="does not match"):
        write_volume_like(tmp_path / "p.nii.gz", np.zeros((4, 6, 5), np.uint8), ref, np.uint8)
