"""DICOM CT/MR series as volumes: slice order by position, rescale, spacing, affine, errors, the source, write-back.

Every series is written here with pydicom; expected values come from the positions and
headers written, not from medseg.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.config import DataConfig, NormalizeConfig
from medseg.data.dicom_series import dicom_files, find_series, read_series
from medseg.data.preprocess import to_original
from medseg.data.sources import get_source, infer_input, load_data, prediction_units
from medseg.errors import MedsegError

ROWS, COLS = 20, 24
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
_t = np.radians(30)
OBLIQUE = (1.0, 0.0, 0.0, 0.0, float(np.cos(_t)), float(np.sin(_t)))  # tilted 30 degrees about x
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def write_slice(path, pixels, series_uid, ipp, iop=AXIAL, spacing=(0.7, 0.8), slope=1.0, intercept=-1024.0,
                patient="P1", modality="CT", instance=1, series_number=1, uid=None):
    """One single-slice CT/MR file (16-bit unsigned, uncompressed) with the geometry tags."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    uid = uid or generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CT_IMAGE, uid
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = series_uid, series_number, instance
    ds.PatientID, ds.Modality = patient, modality
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.ImagePositionPatient = [f"{v:.6f}" for v in ipp]
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in iop]
    ds.PixelSpacing = [str(spacing[0]), str(spacing[1])]
    ds.SliceThickness = "2.5"
    ds.RescaleSlope, ds.RescaleIntercept = str(slope), str(intercept)
    ds.PixelData = np.ascontiguousarray(pixels.astype("<u2")).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)
    return path


def write_series(folder, rng, n=5, iop=AXIAL, step=2.5, origin=(-10.0, 20.0, 30.0), order=None, series_uid="1.2.3.1",
                 slopes=None, **kw):
    """n slices at origin + k * step * normal, written under shuffled file names; returns (pixels by position, positions)."""
    row, col = np.asarray(iop[:3]), np.asarray(iop[3:])
    normal = np.cross(row, col)
    order = order if order is not None else rng.permutation(n)
    pixels = [rng.integers(0, 2000, (ROWS, COLS)).astype(np.uint16) for _ in range(n)]
    positions = [np.asarray(origin) + k * step * normal for k in range(n)]
    for file_no, k in enumerate(order):
        slope = slopes[k] if slopes else 1.0
        # file names and instance numbers in shuffled order: only the positions say where a slice is
        write_slice(folder / f"IM{file_no:04d}.dcm", pixels[k], series_uid, positions[k], iop=iop, instance=int(file_no) + 1,
                    slope=slope, **kw)
    return pixels, positions


def test_slices_sorted_along_the_normal_with_rescale_spacing_and_affine(tmp_path, rng):
    slopes = [1.0, 2.0, 1.0, 0.5, 1.0]
    pixels, positions = write_series(tmp_path / "s", rng, slopes=slopes)
    vol, spacing, info = read_series(dicom_files(tmp_path / "s"))  # as stored: (slice, row, column)
    assert vol.shape == (5, ROWS, COLS)
    for k in range(5):
        np.testing.assert_allclose(vol[k], pixels[k].astype(np.float32) * slopes[k] - 1024.0)
    assert spacing == pytest.approx((2.5, 0.7, 0.8))
    A = np.asarray(info["geometry"]["affine"])
    # column index along the row cosine * column spacing, row index along the column cosine * row spacing
    for (i, j, k) in [(0, 0, 0), (3, 7, 2), (COLS - 1, ROWS - 1, 4)]:
        expected = positions[k] + i * 0.8 * np.array([1.0, 0, 0]) + j * 0.7 * np.array([0, 1.0, 0])
        np.testing.assert_allclose((A @ [i, j, k, 1])[:3], expected, atol=1e-5)
    assert info["geometry"]["frame"] == "lps" and info["series_uid"] == "1.2.3.1"


def test_oblique_series_is_ordered_by_projection_on_the_normal(tmp_path, rng):
    order = [4, 0, 3, 1, 2]
    pixels, positions = write_series(tmp_path / "s", rng, iop=OBLIQUE, order=order, step=3.0)
    vol, spacing, info = read_series(dicom_files(tmp_path / "s"))
    normal = np.cross(OBLIQUE[:3], OBLIQUE[3:])
    dist = [float(p @ normal) for p in positions]
    assert dist == sorted(dist)
    for k in range(5):  # slice k of the volume is the slice written at the k-th position
        np.testing.assert_array_equal(vol[k], pixels[k].astype(np.float32) - 1024.0)
    # files in spatial order: file IM{n} holds slice order[n]
    assert [order[int(p[-8:-4])] for p in info["files"]] == [0, 1, 2, 3, 4]
    assert spacing[0] == pytest.approx(3.0)


def _series_error(tmp_path, make):
    make(tmp_path / "bad")
    with pytest.raises(MedsegError) as e:
        read_series(dicom_files(tmp_path / "bad"), where=tmp_path / "bad")
    return e


def test_mixed_orientations_gaps_and_duplicates_are_refused(tmp_path, rng, one_line):
    def mixed(folder):
        write_series(folder, rng, n=3)
        write_slice(folder / "other.dcm", np.zeros((ROWS, COLS)), "1.2.3.1", (-10.0, 20.0, 40.0), iop=OBLIQUE)

    def gap(folder):
        write_series(folder, rng, n=4, order=[0, 1, 2, 3])
        (folder / "IM0002.dcm").unlink()

    def duplicate(folder):
        write_series(folder, rng, n=3)
        write_slice(folder / "again.dcm", np.zeros((ROWS, COLS)), "1.2.3.1", (-10.0, 20.0, 32.5))

    def no_position(folder):
        write_series(folder, rng, n=2)
        from pydicom import dcmread

        ds = dcmread(str(folder / "IM0000.dcm"))
        del ds.ImagePositionPatient
        ds.save_as(str(folder / "IM0000.dcm"))

    for make, words in [(mixed, ["different orientations", "other.dcm"]), (gap, ["uneven slice spacing", "missing slice"]),
                        (duplicate, ["two slices at one position"]), (no_position, ["IM0000.dcm", "ImagePositionPatient"])]:
        e = _series_error(tmp_path / make.__name__, make)
        one_line(e, *words)


def test_find_series_groups_by_uid_and_skips_non_images(tmp_path, rng):
    write_series(tmp_path / "mixed", rng, n=3, series_uid="1.1")
    write_series(tmp_path / "mixed2", rng, n=2, series_uid="2.2")
    for p in (tmp_path / "mixed2").iterdir():
        p.rename(tmp_path / "mixed" / f"b_{p.name}")
    from pydicom import dcmread

    sr = dcmread(str(tmp_path / "mixed" / "IM0000.dcm"))
    sr.Modality = "SR"
    sr.SeriesInstanceUID = "9.9"
    sr.save_as(str(tmp_path / "mixed" / "report.dcm"))
    (tmp_path / "mixed" / "notes.txt").write_text("x")
    series, problems = find_series(dicom_files(tmp_path / "mixed"))
    assert {k: len(v.files) for k, v in series.items()} == {"1.1": 3, "2.2": 2} and problems == []


# ---------------------------------------------------------------- the dicom_series source

def _label_for_series(path, info_affine_lps, lab_cols_rows_slices):
    """The label as NIfTI (RAS) in the series' geometry, written with nibabel."""
    nib.save(nib.Nifti1Image(lab_cols_rows_slices, np.diag([-1.0, -1.0, 1.0, 1.0]) @ info_affine_lps), path)


def _dataset(tmp_path, rng):
    root = tmp_path / "ds"
    labels = {}
    for name, patient in (("ct01", "PA"), ("ct02", "PB")):
        write_series(root / name, rng, series_uid=f"1.2.{name[-1]}", patient=patient)
        _, _, info = read_series(dicom_files(root / name))
        lab = np.zeros((COLS, ROWS, 5), np.uint8)  # (column, row, slice) in spatial slice order
        lab[3:9, 4:10, 1:3] = 1
        lab[15, 2, 4] = 3
        _label_for_series(root / f"{name}_label.nii.gz", np.asarray(info["geometry"]["affine"]), lab)
        labels[name] = lab
    return root, labels


def test_source_reads_series_folders_with_labels_beside_them(tmp_path, rng):
    root, labels = _dataset(tmp_path, rng)
    cfg = DataConfig(source="dicom_series", root=root, input_size=(32, 32), context_slices=1,
                     normalize=NormalizeConfig(mode="none"))
    d = load_data(cfg)
    assert d.source == "dicom_series" and list(d.volumes) == ["ct01", "ct02"] and d.in_channels == 3
    assert {s.case_id for s in d.samples} == {"PA", "PB"}  # PatientID groups the split
    assert d.modality == "ct" and d.mask_values == [0, 1, 3]
    reader = get_source("dicom_series").mask_reader()
    for s in d.samples:
        lab = labels[s.meta["volume"]]
        # an axial series is stored LPS+; the default data.orientation (RAS+) reverses rows and columns
        np.testing.assert_array_equal(reader(s), np.flip(lab[:, :, s.meta["slice"]].T > 0))
    assert d.volumes["ct01"]["spacing"] == pytest.approx([2.5, 0.7, 0.8])


def test_predictions_written_as_nifti_with_the_series_affine(tmp_path, rng):
    root, labels = _dataset(tmp_path, rng)
    cfg = DataConfig(source="dicom_series", root=root, input_size=(32, 32), orientation="ras")
    d = load_data(cfg)
    writer = get_source("dicom_series").writer(tmp_path / "out", cfg)
    for unit, idx in prediction_units(d).items():
        pred = np.stack([to_original(d.samples[i].mask.astype(np.float32), d.samples[i].meta["resize"]) >= 0.5 for i in idx])
        writer.write(d, unit, idx, pred.astype(np.float32), pred.astype(np.uint8))
    for name in ("ct01", "ct02"):
        out = nib.load(tmp_path / "out" / f"{name}_mask.nii.gz")
        ref = nib.load(root / f"{name}_label.nii.gz")
        np.testing.assert_array_equal(np.asarray(out.dataobj), (labels[name] > 0).astype(np.uint8))
        np.testing.assert_allclose(out.affine, ref.affine, atol=1e-5)
        assert (tmp_path / "out" / f"{name}_prob.nii.gz").is_file()


def test_bad_series_is_named_or_skipped_and_labels_must_match(tmp_path, rng, one_line):
    root, _ = _dataset(tmp_path, rng)
    middle = read_series(dicom_files(root / "ct02"))[2]["files"][2]
    Path(middle).unlink()  # the slice at the third position: a gap
    with pytest.raises(MedsegError) as e:
        load_data(DataConfig(source="dicom_series", root=root, input_size=(32, 32)))
    one_line(e, root / "ct02", "uneven slice spacing")
    d = load_data(DataConfig(source="dicom_series", root=root, input_size=(32, 32), skip_bad=True))
    assert list(d.volumes) == ["ct01"] and [b["path"] for b in d.bad] == [str(root / "ct02")]
    (root / "ct01_label.nii.gz").rename(root / "ct03_label.nii.gz")
    with pytest.raises(MedsegError) as e:
        load_data(DataConfig(source="dicom_series", root=root, input_size=(32, 32)))
    one_line(e, "ct01", "no label volume")
    nib.save(nib.Nifti1Image(np.zeros((COLS, ROWS, 4), np.uint8), np.eye(4)), root / "ct01_label.nii.gz")
    (root / "ct03_label.nii.gz").unlink()
    with pytest.raises(MedsegError) as e:
        load_data(DataConfig(source="dicom_series", root=root, input_size=(32, 32), skip_bad=False))
    one_line(e, "ct01_label.nii.gz", "label shape")


def test_predict_recognises_series_and_keeps_projection_dicoms_for_siim(tmp_path, rng, dicom):
    root, _ = _dataset(tmp_path, rng)
    like = DataConfig(source="volumes", root=tmp_path, input_size=(32, 32))
    cfg = infer_input(root / "ct01", like)
    assert cfg.source == "dicom_series"
    d = load_data(cfg, with_masks=False)
    assert list(d.volumes) == ["ct01"] and all(s.mask is None for s in d.samples)
    dicom(tmp_path / "cr" / "a.dcm", np.zeros((8, 8)), "1.9")  # a radiograph: no position in space
    assert infer_input(tmp_path / "cr", like).source == "siim"
    assert infer_input(tmp_path / "cr", DataConfig(source="siim", root=tmp_path)).source == "siim"


def test_several_series_in_one_folder_get_their_series_numbers(tmp_path, rng):
    root = tmp_path / "flat"
    write_series(root, rng, n=3, series_uid="5.1", series_number=4)
    pixels, _ = write_series(tmp_path / "tmp", rng, n=2, series_uid="5.2", series_number=7, origin=(0.0, 0.0, 0.0))
    for p in (tmp_path / "tmp").iterdir():
        p.rename(root / f"b_{p.name}")
    d = load_data(DataConfig(source="dicom_series", root=root, input_size=(32, 32)), with_masks=False)
    assert sorted(d.volumes) == ["flat_4", "flat_7"]
    assert [d.volumes[v]["series_uid"] for v in sorted(d.volumes)] == ["5.1", "5.2"]
    assert len([s for s in d.samples if s.meta["volume"] == "flat_7"]) == 2
    raw = get_source("dicom_series").read_raw(d.volumes["flat_7"]["path"])
    np.testing.assert_array_equal(raw[0], pixels[0].astype(np.float32) - 1024.0)
