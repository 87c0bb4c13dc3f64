"""Canonical orientation: volumes are sliced in one orientation, and written back in their own.

Every file is written by its format's own library (nibabel, pynrrd, SimpleITK); the canonical
arrays are checked against the libraries' own reorientation (nibabel's as_closest_canonical,
SimpleITK's DICOMOrient), and each round trip against the array and header that were written.
"""

from __future__ import annotations

import nibabel as nib
import nrrd
import numpy as np
import pytest
import SimpleITK as sitk

from medseg.config import NormalizeConfig
from medseg.data.orientation import VolumeGeometry, reorientation
from medseg.data.preprocess import to_original
from medseg.data.readers import read_geometry, read_volume
from medseg.data.sources import get_source, load_data, prediction_units
from medseg.data.writers import write_volume_like

SHAPE = (12, 10, 6)  # (x, y, z) as stored
FLIPPED = np.diag([-0.8, 0.6, 2.5, 1.0])
FLIPPED[:3, 3] = [30.0, -12.0, 4.0]
# oblique and permuted: file axis 0 runs mostly along y, axis 1 along -x, axis 2 along z (rotated 20 degrees)
_c, _s = np.cos(np.radians(20)), np.sin(np.radians(20))
OBLIQUE = np.array([
    [0.0, -0.9 * _c, 2.0 * _s, 12.5],
    [0.7, 0.0, 0.0, -40.0],
    [0.0, 0.9 * _s, 2.0 * _c, 7.0],
    [0.0, 0.0, 0.0, 1.0],
])


def _label(rng, shape=SHAPE):
    lab = np.zeros(shape, np.uint8)
    lab[2:6, 1:4, 1:3] = 1
    lab[7:9, 6:9, 4] = 2  # asymmetric, two values: a wrong flip or transpose shows
    lab[0, 0, 0] = 1
    return lab


def _image(rng, shape=SHAPE):
    return rng.normal(100, 20, shape).astype(np.float32)


def _as_zhw(xyz):
    return np.ascontiguousarray(np.asarray(xyz).transpose(2, 1, 0))


# ---------------------------------------------------------------- the canonical array is the libraries' one

@pytest.mark.parametrize("affine", [FLIPPED, OBLIQUE], ids=["flipped", "oblique"])
def test_nifti_canonical_is_nibabels_closest_canonical(tmp_path, rng, affine):
    arr = _image(rng)
    img = nib.Nifti1Image(arr, affine)
    nib.save(img, tmp_path / "v.nii.gz")
    vol, spacing, info = read_volume(tmp_path / "v.nii.gz", orientation="canonical")
    canon = nib.as_closest_canonical(nib.load(tmp_path / "v.nii.gz"))
    np.testing.assert_array_equal(vol, _as_zhw(np.asarray(canon.dataobj)))
    zooms = canon.header.get_zooms()
    assert spacing == pytest.approx((zooms[2], zooms[1], zooms[0]), rel=1e-6)
    assert info["orientation"]["frame"] == "ras" and info["geometry"]["frame"] == "ras"
    # as_stored keeps the file's axis order
    np.testing.assert_array_equal(read_volume(tmp_path / "v.nii.gz", orientation="as_stored")[0], _as_zhw(arr))


def test_nrrd_flipped_space_direction_canonical_in_its_space_and_in_ras(tmp_path, rng):
    arr = _image(rng)
    dirs = np.diag([-0.7, 0.8, 3.0])  # x axis runs toward the right in an LPS space
    nrrd.write(str(tmp_path / "v.nrrd"), arr, {"space": "left-posterior-superior", "space directions": dirs,
                                               "space origin": np.array([5.0, 6.0, 7.0])})
    vol, spacing, _ = read_volume(tmp_path / "v.nrrd", orientation="canonical")
    np.testing.assert_array_equal(vol, _as_zhw(arr[::-1]))  # LPS+: x flipped, nothing else
    assert spacing == pytest.approx((3.0, 0.8, 0.7))
    # RAS+: the same voxels in NIfTI's world, as nibabel turns them
    lps = np.eye(4)
    lps[:3, :3], lps[:3, 3] = dirs.T, [5.0, 6.0, 7.0]
    ras_img = nib.Nifti1Image(arr, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps)
    np.testing.assert_array_equal(read_volume(tmp_path / "v.nrrd", orientation="ras")[0],
                                  _as_zhw(np.asarray(nib.as_closest_canonical(ras_img).dataobj)))


@pytest.mark.parametrize("mode, code", [("canonical", "LPS"), ("lps", "LPS"), ("ras", "RAS")])
def test_mha_direction_canonical_is_simpleitks_dicomorient(tmp_path, rng, mode, code):
    arr = _image(rng)
    img = sitk.GetImageFromArray(arr.transpose(2, 1, 0).copy())  # SimpleITK's numpy order is (z, y, x)
    img.SetSpacing((0.5, 0.7, 2.0))
    img.SetOrigin((1.0, 2.0, 3.0))
    img.SetDirection((0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0))  # axes permuted in-plane, z reversed
    sitk.WriteImage(img, str(tmp_path / "v.mha"))
    vol, spacing, info = read_volume(tmp_path / "v.mha", orientation=mode)
    oriented = sitk.DICOMOrient(sitk.ReadImage(str(tmp_path / "v.mha")), code)
    np.testing.assert_array_equal(vol, sitk.GetArrayFromImage(oriented))
    sp = oriented.GetSpacing()
    assert spacing == pytest.approx((sp[2], sp[1], sp[0]))
    assert info["format"] == "itk" and info["orientation"]["frame"] == code.lower()


def test_sagittal_storage_is_sliced_axially(tmp_path, rng):
    # file axes (x, y, z) run along (A, S, R): a sagittal acquisition stored slice by slice
    aff = np.array([[0, 0, 1.5, 0], [0.5, 0, 0, 0], [0, 0.6, 0, 0], [0, 0, 0, 1.0]])
    arr = _image(rng, (20, 16, 8))
    nib.save(nib.Nifti1Image(arr, aff), tmp_path / "sag.nii")
    vol, spacing, _ = read_volume(tmp_path / "sag.nii", orientation="canonical")
    assert vol.shape == (16, 20, 8)  # Z along S (file y), rows along A (file x), columns along R (file z)
    np.testing.assert_array_equal(vol[3], arr[:, 3, :])
    assert spacing == pytest.approx((0.6, 0.5, 1.5))


def test_no_anatomical_frame_or_degenerate_matrix_is_read_as_stored(tmp_path, rng):
    arr = _image(rng)
    img = nib.Nifti1Image(arr, FLIPPED)
    img.set_qform(None, code=0)
    img.set_sform(None, code=0)  # NIfTI "method 1": no orientation in the file
    nib.save(img, tmp_path / "codes0.nii")
    nrrd.write(str(tmp_path / "scanner.nrrd"), arr, {"space": "scanner-xyz", "space directions": np.diag([-1.0, 1.0, 1.0])})
    zero = {"space": "left-posterior-superior", "space directions": np.diag([-1.0, 0.0, 1.0])}  # axis y has no direction
    nrrd.write(str(tmp_path / "zero.nrrd"), arr, zero)
    for name in ("codes0.nii", "scanner.nrrd", "zero.nrrd"):
        vol, _, info = read_volume(tmp_path / name, orientation="ras")
        np.testing.assert_array_equal(vol, _as_zhw(arr))
        assert info["orientation"]["frame"] == "as_stored", name


# ---------------------------------------------------------------- round trips: written back in the input's own geometry

def _nifti(path, arr, affine):
    nib.save(nib.Nifti1Image(arr, affine), path)


def _nrrd_flipped(path, arr):
    nrrd.write(str(path), arr, {"space": "left-posterior-superior", "space directions": np.diag([-0.7, 0.8, -3.0]),
                                "space origin": np.array([5.0, 6.0, 7.0])})


def _mha(path, arr):
    img = sitk.GetImageFromArray(arr.transpose(2, 1, 0).copy())
    img.SetSpacing((0.5, 0.7, 2.0))
    img.SetOrigin((1.0, 2.0, 3.0))
    c, s = np.cos(np.radians(25)), np.sin(np.radians(25))
    img.SetDirection((c, 0.0, s, 0.0, -1.0, 0.0, -s, 0.0, c))  # oblique, y reversed
    sitk.WriteImage(img, str(path))


WRITERS = {
    "nifti_flipped.nii.gz": lambda p, a: _nifti(p, a, FLIPPED),
    "nifti_oblique.nii.gz": lambda p, a: _nifti(p, a, OBLIQUE),
    "nrrd_flipped.nrrd": _nrrd_flipped,
    "itk_direction.mha": _mha,
}


def _stored(path):
    """(file array, geometry as the format's library reports it) -- independent of medseg."""
    name = str(path)
    if name.endswith(".nrrd"):
        data, h = nrrd.read(name)
        return data, (h["space"], np.asarray(h["space directions"], float), np.asarray(h["space origin"], float))
    if name.endswith(".mha"):
        img = sitk.ReadImage(name)
        return sitk.GetArrayFromImage(img).transpose(2, 1, 0), (img.GetSpacing(), img.GetOrigin(), img.GetDirection())
    img = nib.load(name)
    return np.asarray(img.dataobj), (img.affine,)


def _same_geometry(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        if isinstance(x, str):
            assert x == y
        else:
            np.testing.assert_allclose(np.asarray(x, float), np.asarray(y, float), atol=1e-6)


@pytest.mark.parametrize("mode", ["canonical", "ras", "lps"])
@pytest.mark.parametrize("name", list(WRITERS))
def test_label_round_trip_through_canonical_space_is_exact(tmp_path, rng, name, mode):
    src = tmp_path / name
    lab = _label(rng)
    WRITERS[name](src, lab)
    vol, _, info = read_volume(src, dtype=None, orientation=mode)
    assert not info["orientation"]["frame"] == "as_stored"
    # a prediction made in canonical space: the label itself, as the network saw it
    out = tmp_path / "out" / name
    write_volume_like(out, vol.astype(np.uint8), src, np.uint8, orientation=mode)
    written, geometry = _stored(out)
    original, geometry0 = _stored(src)
    np.testing.assert_array_equal(written, original)
    _same_geometry(geometry, geometry0)


@pytest.mark.parametrize("name", list(WRITERS))
def test_volumes_source_slices_canonically_and_predictions_land_on_the_label(tmp_path, rng, name):
    ext = name[name.index("."):]
    root = tmp_path / "data"
    root.mkdir()
    img, lab = _image(rng), _label(rng)
    WRITERS[name](root / f"a_image{ext}", img)
    WRITERS[name](root / f"a_label{ext}", lab)
    Z, H, W = read_volume(root / f"a_image{ext}", orientation="ras")[0].shape  # the default data.orientation
    cfg = dict(source="volumes", root=root, input_size=(32, 32), normalize=NormalizeConfig(mode="none"), context_slices=0)
    from medseg.config import DataConfig

    d = load_data(DataConfig(**cfg))
    canon_label = read_volume(root / f"a_label{ext}", dtype=None, orientation="ras")[0] > 0
    assert [s.meta["orig_shape"] for s in d.samples] == [[H, W]] * Z
    for s in d.samples:
        np.testing.assert_array_equal(get_source("volumes").mask_reader()(s), canon_label[s.meta["slice"]])
    # predict-like: masks back at original size, stacked per volume, written by the source's writer
    (idx,) = prediction_units(d).values()
    pred = np.stack([to_original(d.samples[i].mask.astype(np.float32), d.samples[i].meta["resize"]) >= 0.5 for i in idx])
    np.testing.assert_array_equal(pred, canon_label)
    writer = get_source("volumes").writer(tmp_path / "pred", DataConfig(**cfg))
    writer.write(d, "a", idx, pred.astype(np.float32), pred.astype(np.uint8))
    written, geometry = _stored(tmp_path / "pred" / f"a_mask{ext}")
    original, geometry0 = _stored(root / f"a_label{ext}")
    np.testing.assert_array_equal(written, (original > 0).astype(np.uint8))
    _same_geometry(geometry, geometry0)


def test_image_and_label_in_different_formats_line_up(tmp_path, rng):
    """An LPS NRRD image with its label saved as NIfTI (RAS) in another axis order: the label follows the image's frame."""
    root = tmp_path / "data"
    root.mkdir()
    img, lab = _image(rng), _label(rng)
    lps = np.diag([0.7, 0.8, 3.0, 1.0])
    nrrd.write(str(root / "a_image.nrrd"), img, {"space": "left-posterior-superior", "space directions": lps[:3, :3],
                                                 "space origin": np.zeros(3)})
    # the same voxels stored with x and z reversed, in RAS: nibabel's own reorientation of the RAS image
    ras_img = nib.Nifti1Image(lab, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps)
    flipped = ras_img.as_reoriented(np.array([[0, -1], [1, 1], [2, -1]]))
    nib.save(flipped, root / "a_label.nii.gz")
    from medseg.config import DataConfig

    d = load_data(DataConfig(source="volumes", root=root, input_size=(32, 32), context_slices=0))
    reader = get_source("volumes").mask_reader()
    assert len(d.samples) == SHAPE[2]
    for s in d.samples:
        # the NRRD is LPS+, turned to RAS+ (x and y reversed), and the label read to match it
        np.testing.assert_array_equal(reader(s), np.flip(lab[:, :, s.meta["slice"]].T > 0))


def test_reorientation_undo_is_the_inverse_for_every_axis_map(rng):
    arr = rng.normal(size=(3, 4, 5, 2))
    for perm in ([0, 1, 2], [1, 0, 2], [2, 0, 1], [1, 2, 0]):
        for flips in ([1, 1, 1], [-1, 1, -1], [-1, -1, -1]):
            A = np.eye(4)
            A[:3, :3] = np.eye(3)[:, perm] * flips
            reo = reorientation("ras", VolumeGeometry("nifti", (3, 4, 5), A, "ras"))
            np.testing.assert_array_equal(reo.undo(reo.apply(arr)), arr)


def test_read_geometry_headers_only(tmp_path, rng):
    _mha(tmp_path / "v.mha", _label(rng))
    g = read_geometry(tmp_path / "v.mha")
    assert g.format == "itk" and g.frame == "lps" and g.shape == SHAPE
    img = sitk.ReadImage(str(tmp_path / "v.mha"))
    # voxel (1, 2, 3) lands where SimpleITK puts it
    np.testing.assert_allclose(g.affine @ [1, 2, 3, 1], list(img.TransformIndexToPhysicalPoint((1, 2, 3))) + [1], atol=1e-9)


def test_one_physical_volume_slices_the_same_from_every_format_by_default(tmp_path, rng):
    """data.orientation's default (RAS+) is one frame for every format: NIfTI, LPS NRRD and MHA of the same voxels agree."""
    import SimpleITK as sitk

    from medseg.config import DataConfig

    vol = _image(rng)  # (X, Y, Z)
    affine = np.diag([0.7, 0.8, 3.0, 1.0])  # RAS+, as NIfTI stores it: voxel x grows to the right
    lps = np.diag([0.7, 0.8, 3.0])  # LPS+ as NRRD and MHA store it: voxel x grows to the left, y to the back
    folders = {}
    for fmt in ("nii", "nrrd", "mha"):
        folders[fmt] = root = tmp_path / fmt
        root.mkdir()
        for kind, arr in (("image", vol), ("label", (vol > 1.0).astype(np.uint8))):
            if fmt != "nii":
                arr = np.ascontiguousarray(arr[::-1, ::-1])  # the same physical volume, stored the other way round
            if fmt == "nii":
                nib.save(nib.Nifti1Image(arr, affine), root / f"a_{kind}.nii.gz")
            elif fmt == "nrrd":
                nrrd.write(str(root / f"a_{kind}.nrrd"), arr, {"space": "left-posterior-superior", "space directions": lps,
                                                               "space origin": np.zeros(3)})
            else:
                img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(arr, (2, 1, 0))))  # sitk arrays are (z, y, x)
                img.SetSpacing((0.7, 0.8, 3.0))
                img.SetDirection(tuple(np.eye(3).ravel()))
                sitk.WriteImage(img, str(root / f"a_{kind}.mha"))
    loaded = {fmt: load_data(DataConfig(source="volumes", root=root, input_size=(32, 32), context_slices=0,
                                        normalize=NormalizeConfig(mode="none"))) for fmt, root in folders.items()}
    ref = loaded["nii"]
    for fmt in ("nrrd", "mha"):
        assert len(loaded[fmt].samples) == len(ref.samples)
        for a, b in zip(ref.samples, loaded[fmt].samples):
            np.testing.assert_allclose(a.image, b.image, atol=1e-6, err_msg=fmt)
            np.testing.assert_array_equal(a.mask, b.mask)
    stored = load_data(DataConfig(source="volumes", root=folders["nrrd"], input_size=(32, 32), context_slices=0,
                                  normalize=NormalizeConfig(mode="none"), orientation="as_stored"))
    assert not np.allclose(stored.samples[0].image, ref.samples[0].image)  # as stored, the two files disagree
