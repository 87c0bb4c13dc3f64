"""The `volumes` source: NIfTI/NRRD pairs, 2.5D context slices, modality, errors, write-back."""

from __future__ import annotations

import json

import nibabel as nib
import nrrd
import numpy as np
import pytest

from medseg.config import NormalizeConfig
from medseg.data.preprocess import to_original
from medseg.data.readers import read_volume
from medseg.data.sources import load_data
from medseg.data.writers import write_volume_like
from medseg.errors import MedsegError

# (x, y, z): slices are (rows=y=32, cols=x=48) and there are 5 of them
XYZ = (48, 32, 5)


def make_pair(root, name, fmt, rng, ct=False, spacing=(0.8, 0.6, 3.0), label_shape=XYZ):
    root.mkdir(parents=True, exist_ok=True)
    img = rng.normal(size=XYZ).astype(np.float32)
    if ct:
        img = img * 300 - 600  # HU-like, well below -500
    lab = np.zeros(label_shape, dtype=np.uint8)
    lab[10:20, 5:12, 1:3] = 2  # label value 2: still foreground
    ext = ".nii.gz" if fmt == "nifti" else ".nrrd"
    ip, lp = root / f"{name}_image{ext}", root / f"{name}_label{ext}"
    if fmt == "nifti":
        aff = np.diag([spacing[0], spacing[1], spacing[2], 1.0])
        nib.save(nib.Nifti1Image(img, aff), ip)
        nib.save(nib.Nifti1Image(lab, aff), lp)
    else:
        hdr = {"space": "left-posterior-superior", "space directions": np.diag(spacing), "space origin": np.zeros(3)}
        nrrd.write(str(ip), img, hdr)
        nrrd.write(str(lp), lab, hdr)
    return ip, lp, img, lab


@pytest.fixture
def cfg_for(cfg_for):
    """The shared cfg_for with source 'volumes'."""
    return lambda root, **kw: cfg_for(root, **{"source": "volumes", **kw})


def raw_cfg(cfg_for, root, **kw):
    # normalisation off and input size == slice size: sample images are the file values exactly
    return cfg_for(root, input_size=(32, 48), normalize=NormalizeConfig(mode="none"), **kw)


@pytest.mark.parametrize("fmt", ["nifti", "nrrd"])
@pytest.mark.parametrize("k", [0, 1, 2])
def test_context_slices_value_by_value(tmp_path, rng, cfg_for, fmt, k):
    _, _, img, lab = make_pair(tmp_path, "case1", fmt, rng)
    d = load_data(raw_cfg(cfg_for, tmp_path, context_slices=k))
    assert d.source == "volumes" and d.in_channels == 2 * k + 1
    assert [s.sample_id for s in d.samples] == [f"case1_z{z:04d}" for z in range(5)]
    n = XYZ[2]
    if fmt == "nrrd":  # stored LPS+: the default data.orientation (RAS+) reverses x and y before slicing
        img, lab = img[::-1, ::-1], lab[::-1, ::-1]
    for s in d.samples:
        z = s.meta["slice"]
        assert s.image.shape == (2 * k + 1, 32, 48)
        for c in range(2 * k + 1):
            src = min(max(z - k + c, 0), n - 1)  # edge slices replicate the edge
            np.testing.assert_array_equal(s.image[c], img[:, :, src].T)
        np.testing.assert_array_equal(s.mask, (lab[:, :, z].T > 0).astype(np.uint8))
        assert s.case_id == "case1" and s.meta["volume"] == "case1" and s.meta["n_slices"] == n
    if k == 2:  # spot-check the replicated edge explicitly
        first = d.samples[0].image
        np.testing.assert_array_equal(first[0], first[2])
        np.testing.assert_array_equal(first[1], first[2])
        last = d.samples[-1].image
        np.testing.assert_array_equal(last[3], last[2])
        np.testing.assert_array_equal(last[4], last[2])
        np.testing.assert_array_equal(d.samples[2].image[0], img[:, :, 0].T)


@pytest.mark.parametrize("fmt", ["nifti", "nrrd"])
def test_spacing_meta_and_volumes_table(tmp_path, rng, cfg_for, fmt):
    ip, lp, _, _ = make_pair(tmp_path, "a", fmt, rng, spacing=(0.8, 0.6, 3.0))
    d = load_data(cfg_for(tmp_path))
    s = d.samples[1]
    assert s.meta["spacing"] == pytest.approx([0.6, 0.8])  # [row_mm, col_mm]
    assert s.meta["raw_mask_values"] == [0, 2] and d.mask_values == [0, 2]
    assert s.meta["fg_fraction"] == pytest.approx(70 / (32 * 48))
    v = d.volumes["a"]
    assert v["path"] == str(ip) and v["label_path"] == str(lp) and v["format"] == fmt
    assert v["shape"] == list(XYZ) and v["spacing"] == pytest.approx([3.0, 0.6, 0.8])
    assert v["slice_ids"] == [s.sample_id for s in d.samples]
    json.dumps(d.volumes)
    json.dumps([x.meta for x in d.samples])


def test_modality_auto_ct_and_mr(tmp_path, rng, cfg_for):
    make_pair(tmp_path / "ct", "a", "nifti", rng, ct=True)
    make_pair(tmp_path / "mr", "a", "nifti", rng, ct=False)
    ct = load_data(cfg_for(tmp_path / "ct", input_size=(32, 48)))
    mr = load_data(cfg_for(tmp_path / "mr", input_size=(32, 48)))
    assert ct.modality == "ct" and mr.modality == "mr"
    ct_vals = np.stack([s.image for s in ct.samples])
    assert ct_vals.min() >= 0.0 and ct_vals.max() <= 1.0  # ct_window scales to [0, 1]
    mr_vals = np.stack([s.image[1] for s in mr.samples])  # centre channels = the volume
    assert abs(mr_vals.mean()) < 0.05 and mr_vals.min() < -1.0  # percentile z-score over the volume


def test_multiple_volumes_and_without_masks(tmp_path, rng, cfg_for):
    make_pair(tmp_path, "b", "nrrd", rng)
    make_pair(tmp_path, "a", "nifti", rng)
    d = load_data(cfg_for(tmp_path), progress=True)
    assert list(d.volumes) == ["a", "b"] and len(d.samples) == 10
    assert {s.case_id for s in d.samples} == {"a", "b"}
    p = load_data(cfg_for(tmp_path), with_masks=False)
    assert all(s.mask is None for s in p.samples) and len(p.samples) == 10
    # a folder of plain scans (no suffixes) for prediction
    plain = tmp_path / "plain"
    plain.mkdir()
    nib.save(nib.Nifti1Image(rng.normal(size=XYZ).astype(np.float32), np.eye(4)), plain / "scan.nii")
    q = load_data(cfg_for(plain), with_masks=False)
    assert list(q.volumes) == ["scan"] and q.volumes["scan"]["label_path"] is None
    single = load_data(cfg_for(plain / "scan.nii"), with_masks=False)
    assert len(single.samples) == 5



def test_only_the_cases_asked_for_are_loaded(tmp_path, rng, cfg_for, monkeypatch):
    import medseg.data.sources.volumes as V
    from medseg.errors import NoUsableData

    for name in ("a", "b", "c"):
        make_pair(tmp_path, name, "nifti", rng)
    every = load_data(cfg_for(tmp_path))
    prepared = []
    real = V._prepare_case
    monkeypatch.setattr(V, "_prepare_case", lambda cfg, case, *a, **k: prepared.append(case.name) or real(cfg, case, *a, **k))
    some = load_data(cfg_for(tmp_path), only=["c", "a"])
    assert prepared == ["a", "c"]  # b is passed over before it is read
    assert list(some.volumes) == ["a", "c"]
    want = [s for s in every.samples if s.case_id in ("a", "c")]
    assert [s.sample_id for s in some.samples] == [s.sample_id for s in want]
    for x, y in zip(some.samples, want):
        np.testing.assert_array_equal(np.asarray(x.image), np.asarray(y.image))
    with pytest.raises(NoUsableData):
        load_data(cfg_for(tmp_path), only=["zz"])


def test_prediction_written_back_matches_label(tmp_path, rng, cfg_for):
    ip, lp, _, lab = make_pair(tmp_path, "a", "nifti", rng)
    d = load_data(cfg_for(tmp_path, input_size=(64, 64), resize_mode="letterbox"))
    vol = np.stack([to_original(s.mask.astype(np.float32), s.meta["resize"]) >= 0.5 for s in d.samples])
    out = tmp_path / "pred.nii.gz"
    write_volume_like(out, vol.astype(np.uint8), d.volumes["a"]["path"], np.uint8)
    back, _, _ = read_volume(out, dtype=None)
    truth = read_volume(lp, dtype=None)[0] > 0
    np.testing.assert_array_equal(back > 0, truth)
    np.testing.assert_allclose(nib.load(out).affine, nib.load(ip).affine)


# ---------------------------------------------------------------- bad inputs

def _unmatched_image(root, rng):
    ip, lp, _, _ = make_pair(root, "x", "nifti", rng)
    lp.unlink()
    return ip


def _unmatched_label(root, rng):
    ip, lp, _, _ = make_pair(root, "x", "nifti", rng)
    ip.unlink()
    return lp


def _badly_named(root, rng):
    p = root / "x_scan.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(XYZ, np.float32), np.eye(4)), p)
    return p


def _shape_mismatch(root, rng):
    _, lp, _, _ = make_pair(root, "x", "nrrd", rng, label_shape=(48, 32, 4))
    return lp


def _corrupt(root, rng):
    ip, _, _, _ = make_pair(root, "x", "nifti", rng)
    ip.write_bytes(b"\x1f\x8b garbage")
    return ip


def _nan(root, rng):
    ip, _, _, _ = make_pair(root, "x", "nifti", rng)
    arr = np.asarray(nib.load(ip).dataobj).copy()
    arr[1, 1, 1] = np.nan
    nib.save(nib.Nifti1Image(arr, np.eye(4)), ip)
    return ip


@pytest.mark.parametrize("breaker", [_unmatched_image, _unmatched_label, _badly_named, _shape_mismatch, _corrupt, _nan],
                         ids=lambda f: f.__name__.strip("_"))
def test_bad_volume_raises_naming_it_or_is_skipped(tmp_path, rng, cfg_for, one_line, breaker):
    make_pair(tmp_path, "good", "nifti", rng)
    named = breaker(tmp_path, rng)
    with pytest.raises(MedsegError) as e:
        load_data(cfg_for(tmp_path))
    one_line(e, named)
    d = load_data(cfg_for(tmp_path, skip_bad=True))
    assert list(d.volumes) == ["good"]
    assert [b["path"] for b in d.bad] == [str(named)]


def test_no_volumes(tmp_path, cfg_for, one_line):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(MedsegError) as e:
        load_data(cfg_for(tmp_path, source="volumes"))
    one_line(e, "no volumes found", tmp_path)
