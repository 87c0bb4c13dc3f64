"""The `siim` source: DICOM folder + SIIM-ACR RLE CSV."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medseg.data.rle import rle_encode
from medseg.data.sources import load_data
from medseg.errors import MedsegError

H, W = 32, 48


def lesion(r0, r1, c0, c1):
    m = np.zeros((H, W), dtype=np.uint8)
    m[r0:r1, c0:c1] = 1
    return m


@pytest.fixture
def siim(tmp_path, rng, dicom):
    """Three images of two patients in nested folders, like the competition's layout."""
    root = tmp_path / "dicom-images-train"
    uids = ["1.2.276.0.1", "1.2.276.0.2", "1.2.276.0.3"]
    patients = ["pat-a", "pat-a", "pat-b"]
    for i, (uid, pat) in enumerate(zip(uids, patients)):
        px = rng.integers(0, 4096, size=(H, W)).astype(np.uint16)
        dicom(root / f"study{i}" / f"series{i}" / f"{uid}.dcm", px, uid, patient=pat)
    m_a1, m_a2 = lesion(2, 6, 3, 9), lesion(20, 22, 40, 48)  # second lesion touches the last column
    m_a2[-1, -1] = 1  # and the last pixel
    m_c = lesion(0, 3, 0, 2)  # touches the first pixel
    csv = tmp_path / "train-rle.csv"
    csv.write_text(
        "ImageId, EncodedPixels\n"
        f"{uids[0]}, {rle_encode(m_a1)}\n"
        f"{uids[0]}, {rle_encode(m_a2)}\n"
        f"{uids[1]}, -1\n"
        f"{uids[2]}, {rle_encode(m_c)}\n"
    )
    expected = {uids[0]: m_a1 | m_a2, uids[1]: np.zeros((H, W), np.uint8), uids[2]: m_c}
    return root, csv, uids, expected


def siim_cfg(cfg_for, root, csv, **kw):
    return cfg_for(root, source="siim", rle_csv=csv, input_size=(H, W), **kw)


def test_loads_masks_ored_and_patients(siim, cfg_for):
    root, csv, uids, expected = siim
    d = load_data(siim_cfg(cfg_for, root, csv))
    assert d.source == "siim" and d.in_channels == 1 and d.bad == [] and d.volumes == {}
    assert [s.sample_id for s in d.samples] == uids
    assert [s.case_id for s in d.samples] == ["pat-a", "pat-a", "pat-b"]
    for s in d.samples:
        np.testing.assert_array_equal(s.mask, expected[s.sample_id])
        assert s.image.shape == (1, H, W) and s.image.dtype == np.float32
        assert s.meta["image_id"] == s.sample_id and s.meta["spacing"] == [0.5, 0.25]
        assert s.meta["orig_shape"] == [H, W]
    assert d.samples[1].meta["raw_mask_values"] == [0] and d.mask_values == [0, 1]
    assert d.modality == "xray"
    assert abs(float(d.samples[0].image.mean())) < 0.05  # per-image percentile z-score
    json.dumps([s.meta for s in d.samples])


def test_resized_masks_keep_lesions(siim, cfg_for):
    root, csv, uids, _ = siim
    d = load_data(siim_cfg(cfg_for, root, csv).model_copy(update={"input_size": (16, 16)}))
    assert d.samples[0].mask.shape == (16, 16)
    assert d.samples[0].mask.any() and not d.samples[1].mask.any() and d.samples[2].mask.any()


def test_patient_id_missing_falls_back_to_image_id(tmp_path, dicom, cfg_for):
    dicom(tmp_path / "d" / "9.9.dcm", np.ones((H, W)) * 5, "9.9", patient=None)
    csv = tmp_path / "r.csv"
    csv.write_text("ImageId,EncodedPixels\n9.9,-1\n")
    d = load_data(siim_cfg(cfg_for, tmp_path / "d", csv))
    assert d.samples[0].case_id == "9.9"
    assert not d.samples[0].image.any()  # constant image normalises to zeros, no NaN


def test_image_without_rle_row(siim, cfg_for, one_line):
    root, csv, uids, _ = siim
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join(line for line in lines if not line.startswith(uids[1])) + "\n")
    with pytest.raises(MedsegError) as e:
        load_data(siim_cfg(cfg_for, root, csv))
    one_line(e, f"{uids[1]}.dcm", uids[1])
    d = load_data(siim_cfg(cfg_for, root, csv, skip_bad=True))
    assert [s.sample_id for s in d.samples] == [uids[0], uids[2]]
    assert len(d.bad) == 1 and d.bad[0]["path"].endswith(f"{uids[1]}.dcm")


def test_rle_row_without_image(siim, cfg_for, one_line):
    root, csv, uids, _ = siim
    csv.write_text(csv.read_text() + "9.8.7.6, 1 2\n")
    with pytest.raises(MedsegError) as e:
        load_data(siim_cfg(cfg_for, root, csv))
    one_line(e, csv, "9.8.7.6")
    d = load_data(siim_cfg(cfg_for, root, csv, skip_bad=True))
    assert len(d.samples) == 3 and len(d.bad) == 1 and "9.8.7.6" in d.bad[0]["reason"]


def test_rle_beyond_image_names_csv_and_image(siim, cfg_for, one_line):
    root, csv, uids, _ = siim
    csv.write_text(csv.read_text().replace(f"{uids[1]}, -1", f"{uids[1]}, 1500 100"))
    with pytest.raises(MedsegError) as e:
        load_data(siim_cfg(cfg_for, root, csv))
    one_line(e, csv, uids[1])


def test_corrupt_dicom(siim, cfg_for, one_line):
    root, csv, uids, _ = siim
    bad = next(root.rglob(f"{uids[2]}.dcm"))
    bad.write_bytes(b"\x00" * 200)
    with pytest.raises(MedsegError) as e:
        load_data(siim_cfg(cfg_for, root, csv))
    one_line(e, bad)
    d = load_data(siim_cfg(cfg_for, root, csv, skip_bad=True))
    assert len(d.samples) == 2 and [b["path"] for b in d.bad] == [str(bad)]


def test_without_masks_and_config_errors(siim, cfg_for, tmp_path, one_line):
    root, _, uids, _ = siim
    d = load_data(cfg_for(root, source="siim"), with_masks=False)
    assert len(d.samples) == 3 and all(s.mask is None for s in d.samples)
    with pytest.raises(MedsegError) as e:
        load_data(cfg_for(root, source="siim"))
    one_line(e, "data.rle_csv")
    (tmp_path / "nodcm").mkdir()
    with pytest.raises(MedsegError) as e:
        load_data(cfg_for(tmp_path / "nodcm", source="siim"), with_masks=False)
    one_line(e, ".dcm", tmp_path / "nodcm")
