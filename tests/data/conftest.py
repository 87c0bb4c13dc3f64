"""Shared helpers for the data tests: every file is written into tmp_path by the test itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medseg.config import DataConfig


def write_dicom(path: Path, pixels: np.ndarray, uid: str, patient: str | None = "P1", modality: str = "CR",
                photometric: str = "MONOCHROME2", slope: float | None = None, intercept: float | None = None,
                spacing=(0.5, 0.25)) -> Path:
    """A minimal valid Part-10 DICOM file (16-bit unsigned, uncompressed)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    cr_storage = "1.2.840.10008.5.1.4.1.1.1"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = cr_storage
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = cr_storage
    ds.SOPInstanceUID = uid
    if patient is not None:
        ds.PatientID = patient
    ds.Modality = modality
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    if spacing is not None:
        ds.PixelSpacing = [str(spacing[0]), str(spacing[1])]
    if slope is not None:
        ds.RescaleSlope = str(slope)
    if intercept is not None:
        ds.RescaleIntercept = str(intercept)
    ds.PixelData = np.ascontiguousarray(pixels.astype("<u2")).tobytes()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)
    return path


def make_cfg(root: Path, **kw) -> DataConfig:
    """A DataConfig pointing at root; small input size so tests stay fast."""
    kw.setdefault("input_size", (32, 32))
    return DataConfig(root=root, **kw)


def assert_one_line_naming(err, *names: str) -> None:
    msg = str(err.value)
    assert "\n" not in msg, msg
    for n in names:
        assert str(n) in msg, f"{n!r} not in {msg!r}"


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def dicom():
    """write_dicom(path, pixels, uid, patient=..., ...) -> path."""
    return write_dicom


@pytest.fixture
def cfg_for():
    """cfg_for(root, **DataConfig fields) -> DataConfig with input_size (32, 32) by default."""
    return make_cfg


@pytest.fixture
def one_line():
    """one_line(excinfo, *names): the error message is one line and names each of `names`."""
    return assert_one_line_naming
