"""Low-level readers: 2D images, NIfTI/NRRD volumes (axis convention), DICOM."""

from __future__ import annotations

import cv2
import nibabel as nib
import nrrd
import numpy as np
import pytest
import tifffile
from PIL import Image

from medseg.data.readers import read_dicom, read_image_2d, read_volume
from medseg.errors import MedsegError

# ---------------------------------------------------------------- 2D

def test_png_8bit_grey(tmp_path, rng):
    a = rng.integers(0, 256, size=(20, 30), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "a.png")
    out = read_image_2d(tmp_path / "a.png")
    assert out.dtype == np.float32 and out.shape == (20, 30)
    np.testing.assert_array_equal(out, a)


def test_png_16bit_grey_keeps_values(tmp_path):
    a = np.array([[0, 1000], [40000, 65535]], dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "a.png"), a)
    np.testing.assert_array_equal(read_image_2d(tmp_path / "a.png"), a)


def test_png_16bit_rgb_keeps_values_and_channel_order(tmp_path):
    rgb = np.zeros((4, 5, 3), dtype=np.uint16)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 60000, 3000, 7
    cv2.imwrite(str(tmp_path / "a.png"), rgb[..., ::-1])  # OpenCV writes BGR
    out = read_image_2d(tmp_path / "a.png")
    assert out.shape == (4, 5, 3)
    np.testing.assert_array_equal(out, rgb)


def test_rgb_and_rgba(tmp_path, rng):
    rgba = rng.integers(0, 256, size=(6, 7, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    Image.fromarray(rgba[..., :3]).save(tmp_path / "b.bmp")
    np.testing.assert_array_equal(read_image_2d(tmp_path / "a.png"), rgba[..., :3])
    np.testing.assert_array_equal(read_image_2d(tmp_path / "b.bmp"), rgba[..., :3])


def test_palette_png_mask_reads_indices(tmp_path):
    idx = np.array([[0, 1], [2, 1]], dtype=np.uint8)
    im = Image.fromarray(idx, "P")
    im.putpalette([0, 0, 0, 200, 10, 10, 10, 200, 10] + [0] * (256 * 3 - 9))
    im.save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_image_2d(tmp_path / "m.png", as_mask=True), idx)
    colours = read_image_2d(tmp_path / "m.png")
    assert colours.shape == (2, 2, 3)
    np.testing.assert_array_equal(colours[0, 1], [200, 10, 10])


def test_tiff_float_and_planar(tmp_path, rng):
    f = rng.normal(size=(9, 11)).astype(np.float32)
    tifffile.imwrite(tmp_path / "f.tif", f)
    np.testing.assert_array_equal(read_image_2d(tmp_path / "f.tif"), f)
    planar = rng.integers(0, 4000, size=(3, 9, 11)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "p.tiff", planar, photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(read_image_2d(tmp_path / "p.tiff"), np.moveaxis(planar, 0, -1))


def test_jpeg(tmp_path):
    a = np.tile(np.arange(0, 240, 10, dtype=np.uint8), (16, 1))
    Image.fromarray(a).save(tmp_path / "a.jpg", quality=100)
    out = read_image_2d(tmp_path / "a.jpg")
    assert out.shape == (16, 24)
    assert np.abs(out - a).max() <= 3


@pytest.mark.parametrize("name, content", [("bad.png", b"not a png at all"), ("bad.jpg", b"\xff\xd8\xff\xe0garbage"),
                                            ("bad.tif", b"II*\x00garbage")])
def test_corrupt_image_names_file(tmp_path, name, content, one_line):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(MedsegError) as e:
        read_image_2d(p)
    one_line(e, p)


def test_truncated_png_names_file(tmp_path, rng, one_line):
    Image.fromarray(rng.integers(0, 256, size=(64, 64), dtype=np.uint8)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(MedsegError) as e:
        read_image_2d(tmp_path / "t.png")
    one_line(e, tmp_path / "t.png")


def test_missing_file(tmp_path, one_line):
    with pytest.raises(MedsegError) as e:
        read_image_2d(tmp_path / "nope.png")
    one_line(e, "nope.png")


# ---------------------------------------------------------------- volumes

def xyz_volume(rng, shape=(5, 4, 3)):
    return rng.normal(size=shape).astype(np.float32)


def test_nifti_axis_convention_and_spacing(tmp_path, rng):
    arr = xyz_volume(rng)  # (x, y, z)
    img = nib.Nifti1Image(arr, np.diag([0.7, 0.8, 2.5, 1.0]))
    nib.save(img, tmp_path / "v.nii.gz")
    vol, spacing, info = read_volume(tmp_path / "v.nii.gz")
    assert vol.shape == (3, 4, 5) and vol.dtype == np.float32
    for z in range(3):
        np.testing.assert_array_equal(vol[z], arr[:, :, z].T)
    assert spacing == pytest.approx((2.5, 0.8, 0.7))  # (z, row, col)
    assert info["format"] == "nifti" and info["shape"] == [5, 4, 3]
    np.testing.assert_allclose(info["affine"], np.diag([0.7, 0.8, 2.5, 1.0]))


def test_nifti_4d_singleton_and_scaling(tmp_path):
    arr = np.arange(24, dtype=np.int16).reshape(2, 3, 4, 1)
    img = nib.Nifti1Image(arr, np.eye(4))
    img.header.set_slope_inter(2.0, -1.0)
    nib.save(img, tmp_path / "v.nii")
    vol, _, _ = read_volume(tmp_path / "v.nii")
    assert vol.shape == (4, 3, 2)
    np.testing.assert_allclose(vol[1], arr[:, :, 1, 0].T * 2.0 - 1.0)


def test_nrrd_axis_convention_and_spacing(tmp_path, rng):
    arr = xyz_volume(rng)
    header = {"space": "left-posterior-superior", "space directions": np.diag([0.6, 0.9, 3.0]),
              "space origin": np.array([1.0, 2.0, 3.0])}
    nrrd.write(str(tmp_path / "v.nrrd"), arr, header)
    vol, spacing, info = read_volume(tmp_path / "v.nrrd")
    for z in range(3):
        np.testing.assert_array_equal(vol[z], arr[:, :, z].T)
    assert spacing == pytest.approx((3.0, 0.9, 0.6))
    assert info["format"] == "nrrd" and info["space"] == "left-posterior-superior"


def test_nrrd_spacings_field(tmp_path, rng):
    nrrd.write(str(tmp_path / "v.nrrd"), xyz_volume(rng), {"spacings": [0.5, 0.5, 4.0]})
    assert read_volume(tmp_path / "v.nrrd")[1] == pytest.approx((4.0, 0.5, 0.5))


def test_nrrd_without_spacing_gives_none(tmp_path, rng):
    nrrd.write(str(tmp_path / "v.nrrd"), xyz_volume(rng))
    assert read_volume(tmp_path / "v.nrrd")[1] is None


@pytest.mark.parametrize("name", ["bad.nii.gz", "bad.nrrd", "bad.nii"])
def test_corrupt_volume_names_file(tmp_path, name, one_line):
    p = tmp_path / name
    p.write_bytes(b"garbage" * 20)
    with pytest.raises(MedsegError) as e:
        read_volume(p)
    one_line(e, p)


def test_4d_volume_rejected(tmp_path, one_line):
    nib.save(nib.Nifti1Image(np.zeros((2, 3, 4, 2), np.float32), np.eye(4)), tmp_path / "t.nii")
    with pytest.raises(MedsegError) as e:
        read_volume(tmp_path / "t.nii")
    one_line(e, "t.nii", "3D")


# ---------------------------------------------------------------- DICOM

def test_dicom_rescale_and_info(tmp_path, dicom):
    px = np.arange(12, dtype=np.uint16).reshape(3, 4) * 100
    p = dicom(tmp_path / "a.dcm", px, "1.2.3.4", patient="PAT9", slope=0.5, intercept=-1024, modality="CT")
    img, info = read_dicom(p)
    assert img.dtype == np.float32 and img.shape == (3, 4)
    np.testing.assert_allclose(img, px * 0.5 - 1024)
    assert info["SOPInstanceUID"] == "1.2.3.4" and info["PatientID"] == "PAT9"
    assert info["PixelSpacing"] == [0.5, 0.25] and info["Modality"] == "CT"
    assert info["PhotometricInterpretation"] == "MONOCHROME2"


def test_dicom_monochrome1_inverted(tmp_path, dicom):
    px = np.array([[0, 10], [20, 30]], dtype=np.uint16)
    img, info = read_dicom(dicom(tmp_path / "a.dcm", px, "1.2.3", photometric="MONOCHROME1"))
    np.testing.assert_array_equal(img, [[30, 20], [10, 0]])
    assert info["PhotometricInterpretation"] == "MONOCHROME1"


def test_not_dicom_names_file(tmp_path, one_line):
    p = tmp_path / "x.dcm"
    p.write_bytes(b"hello")
    with pytest.raises(MedsegError) as e:
        read_dicom(p)
    one_line(e, p)
