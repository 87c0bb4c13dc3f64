"""The `nnunet` source: nnU-Net v2 raw datasets (3D and 2D), dataset.json checks, splits_final.json, predict."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from medseg.config import DataConfig, NormalizeConfig, SplitConfig
from medseg.data.preprocess import to_original
from medseg.data.sources import get_source, infer_input, load_data, prediction_units
from medseg.data.split import make_split
from medseg.errors import MedsegError

XYZ = (24, 20, 5)  # slices: rows = y = 20, columns = x = 24
AFFINE = np.diag([0.8, 0.7, 3.0, 1.0])


def _dataset_json(root, channels=("CT", "T2"), labels=None, ending=".nii.gz", **extra):
    doc = {"channel_names": {str(i): c for i, c in enumerate(channels)},
           "labels": labels or {"background": 0, "organ": 1, "tumour": 2}, "numTraining": 3, "file_ending": ending, **extra}
    (root / "dataset.json").write_text(json.dumps(doc))


def make_3d(root, rng, cases=("la_001", "la_002", "la_003"), n_channels=2, ending=".nii.gz", test_cases=()):
    """imagesTr/CASE_000c + labelsTr/CASE written with nibabel (or SimpleITK for .mha); returns {case: (channels, label)}."""
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    _dataset_json(root, channels=("CT", "T2")[:n_channels] if n_channels <= 2 else [f"c{i}" for i in range(n_channels)],
                  ending=ending)
    out = {}
    for case in list(cases) + list(test_cases):
        chans = [rng.normal(size=XYZ).astype(np.float32) + 10 * c for c in range(n_channels)]
        lab = np.zeros(XYZ, np.uint8)
        lab[4:10, 3:8, 1:3] = 1
        lab[15:18, 12:16, 3] = 2
        sub = "imagesTs" if case in test_cases else "imagesTr"
        for c, arr in enumerate(chans):
            _save(root / sub / f"{case}_{c:04d}{ending}", arr)
        if case not in test_cases:
            _save(root / "labelsTr" / f"{case}{ending}", lab)
        out[case] = (chans, lab)
    return out


def _save(path, arr):
    if str(path).endswith(".mha"):
        img = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(2, 1, 0)))
        img.SetSpacing((0.8, 0.7, 3.0))
        sitk.WriteImage(img, str(path))
    else:
        nib.save(nib.Nifti1Image(arr, AFFINE), path)


def _cfg(root, **kw):
    kw.setdefault("input_size", (20, 24))
    kw.setdefault("normalize", NormalizeConfig(mode="none"))
    return DataConfig(source="nnunet", root=root, **kw)


@pytest.mark.parametrize("ending", [".nii.gz", ".mha"])
@pytest.mark.parametrize("k", [0, 1])
def test_3d_channels_and_context_slices_value_by_value(tmp_path, rng, ending, k):
    data = make_3d(tmp_path, rng, ending=ending)
    d = load_data(_cfg(tmp_path, context_slices=k))
    assert d.source == "nnunet" and list(d.volumes) == sorted(data) and d.in_channels == 2 * (2 * k + 1)
    assert d.mask_values == [0, 1, 2]
    for s in d.samples:
        chans, lab = data[s.meta["volume"]]
        if ending == ".mha":  # MHA is LPS+: the default data.orientation (RAS+) reverses x and y before slicing
            chans, lab = [ch[::-1, ::-1] for ch in chans], lab[::-1, ::-1]
        z = s.meta["slice"]
        for c in range(2):  # channel-major: channel c's slices z-k..z+k
            for j in range(2 * k + 1):
                src = min(max(z - k + j, 0), XYZ[2] - 1)
                np.testing.assert_array_equal(s.image[c * (2 * k + 1) + j], chans[c][:, :, src].T)
        np.testing.assert_array_equal(s.mask, (lab[:, :, z].T > 0).astype(np.uint8))  # every label > 0 is foreground
        assert s.case_id == s.meta["volume"]
    assert d.volumes["la_001"]["spacing"] == pytest.approx([3.0, 0.7, 0.8])
    assert d.volumes["la_001"]["channel_paths"][1].endswith(f"la_001_0001{ending}")


def test_ct_channel_is_windowed_and_others_normalised_per_channel(tmp_path, rng):
    make_3d(tmp_path, rng, cases=("a",))
    d = load_data(_cfg(tmp_path, normalize=NormalizeConfig(mode="auto"), context_slices=0))
    ct = np.stack([s.image[0] for s in d.samples])
    t2 = np.stack([s.image[1] for s in d.samples])
    assert ct.min() >= 0.0 and ct.max() <= 1.0  # channel_names "CT": the CT window, to [0, 1]
    assert abs(float(t2.mean())) < 0.05  # the T2 channel z-scored on its own
    assert d.modality == "mixed"


def _png(path, arr):
    Image.fromarray(arr).save(path)


def test_2d_dataset_grey_channels_and_rgb(tmp_path, rng):
    root = tmp_path / "grey"
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
    _dataset_json(root, channels=("a", "b"), ending=".png")
    imgs = {}
    for case in ("c1", "c2"):
        chans = [rng.integers(0, 255, (30, 40)).astype(np.uint8) for _ in range(2)]
        for c, a in enumerate(chans):
            _png(root / "imagesTr" / f"{case}_{c:04d}.png", a)
        lab = np.zeros((30, 40), np.uint8)
        lab[5:12, 8:20] = 2
        _png(root / "labelsTr" / f"{case}.png", lab)
        imgs[case] = (chans, lab)
    d = load_data(_cfg(root, input_size=(30, 40), context_slices=2))
    assert d.in_channels == 2 and len(d.samples) == 2  # a 2D case is one slice: no context slices
    for s in d.samples:
        chans, lab = imgs[s.meta["volume"]]
        np.testing.assert_array_equal(s.image, np.stack(chans).astype(np.float32))
        np.testing.assert_array_equal(s.mask, (lab > 0).astype(np.uint8))
    # predictions of 2D cases are PNGs at the image's size
    writer = get_source("nnunet").writer(tmp_path / "out", _cfg(root))
    for unit, idx in prediction_units(d).items():
        full = np.stack([to_original(d.samples[i].mask.astype(np.float32), d.samples[i].meta["resize"]) for i in idx])
        writer.write(d, unit, idx, full, (full > 0.5).astype(np.uint8))
    back = np.asarray(Image.open(tmp_path / "out" / "masks" / "c1.png"))
    np.testing.assert_array_equal(back > 0, imgs["c1"][1] > 0)

    rgb = tmp_path / "rgb"
    for sub in ("imagesTr", "labelsTr"):
        (rgb / sub).mkdir(parents=True)
    _dataset_json(rgb, channels=("R", "G", "B"), labels={"background": 0, "road": 1}, ending=".png")
    a = rng.integers(0, 255, (30, 40, 3)).astype(np.uint8)
    _png(rgb / "imagesTr" / "r1_0000.png", a)  # one RGB file carries the three channels, as in nnU-Net
    _png(rgb / "labelsTr" / "r1.png", (a[..., 0] > 128).astype(np.uint8))
    d = load_data(_cfg(rgb, input_size=(30, 40)))
    assert d.in_channels == 3
    np.testing.assert_array_equal(d.samples[0].image, np.moveaxis(a, -1, 0).astype(np.float32))


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("key", ["channel_names", "labels", "file_ending"])
def test_missing_dataset_json_key_names_file_and_key(tmp_path, rng, one_line, key):
    make_3d(tmp_path, rng)
    doc = json.loads((tmp_path / "dataset.json").read_text())
    del doc[key]
    (tmp_path / "dataset.json").write_text(json.dumps(doc))
    with pytest.raises(MedsegError) as e:
        load_data(_cfg(tmp_path))
    one_line(e, tmp_path / "dataset.json", key)


def test_no_dataset_json_and_bad_values(tmp_path, rng, one_line):
    make_3d(tmp_path, rng)
    (tmp_path / "dataset.json").unlink()
    with pytest.raises(MedsegError) as e:
        load_data(_cfg(tmp_path))
    one_line(e, tmp_path / "dataset.json")
    _dataset_json(tmp_path, ending=".tif.gz")
    with pytest.raises(MedsegError) as e:
        load_data(_cfg(tmp_path))
    one_line(e, "file_ending", ".tif.gz")
    _dataset_json(tmp_path, channels=())
    with pytest.raises(MedsegError) as e:
        load_data(_cfg(tmp_path))
    one_line(e, "channel_names")


def _missing_channel(root):
    p = root / "imagesTr" / "la_002_0001.nii.gz"
    p.unlink()
    return p


def _missing_label(root):
    (root / "labelsTr" / "la_002.nii.gz").unlink()
    return root / "imagesTr" / "la_002_0000.nii.gz"


def _label_shape(root):
    p = root / "labelsTr" / "la_002.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((24, 20, 4), np.uint8), AFFINE), p)
    return p


def _undeclared_label(root):
    p = root / "labelsTr" / "la_002.nii.gz"
    lab = np.zeros(XYZ, np.uint8)
    lab[1, 1, 1] = 5
    nib.save(nib.Nifti1Image(lab, AFFINE), p)
    return p


def _channel_shape(root):
    p = root / "imagesTr" / "la_002_0001.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((24, 20, 3), np.float32), AFFINE), p)
    return p


def _extra_channel(root):
    p = root / "imagesTr" / "la_002_0002.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(XYZ, np.float32), AFFINE), p)
    return p


def _orphan_label(root):
    p = root / "labelsTr" / "la_009.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(XYZ, np.uint8), AFFINE), p)
    return p


@pytest.mark.parametrize("breaker", [_missing_channel, _missing_label, _label_shape, _undeclared_label, _channel_shape,
                                     _extra_channel, _orphan_label], ids=lambda f: f.__name__.strip("_"))
def test_bad_case_raises_naming_the_file_or_is_skipped(tmp_path, rng, one_line, breaker):
    make_3d(tmp_path, rng)
    named = breaker(tmp_path)
    with pytest.raises(MedsegError) as e:
        load_data(_cfg(tmp_path))
    one_line(e, named)
    d = load_data(_cfg(tmp_path, skip_bad=True))
    assert [b["path"] for b in d.bad] == [str(named)]
    assert "la_001" in d.volumes and "la_003" in d.volumes


# ---------------------------------------------------------------- splits_final.json

def test_splits_final_json_fold_is_the_split(tmp_path, rng):
    make_3d(tmp_path, rng, cases=[f"c{i}" for i in range(4)])
    splits = [{"train": ["c1", "c2", "c3"], "val": ["c0"]}, {"train": ["c0", "c2", "c3"], "val": ["c1"]}]
    (tmp_path / "splits_final.json").write_text(json.dumps(splits))
    d = load_data(_cfg(tmp_path))
    cases = [s.case_id for s in d.samples]
    for fold in (0, 1):
        split = make_split(cases, SplitConfig(mode="file", file=tmp_path / "splits_final.json", fold=fold), seed=0)
        assert split == {"train": sorted(splits[fold]["train"]), "val": splits[fold]["val"], "test": []}
    with pytest.raises(MedsegError, match="has 2 folds.*split.fold is 2"):
        make_split(cases, SplitConfig(mode="file", file=tmp_path / "splits_final.json", fold=2), seed=0)
    (tmp_path / "splits_final.json").write_text(json.dumps([{"train": ["c0"]}]))
    with pytest.raises(MedsegError, match="fold 0 needs a 'train' and a 'val'"):
        make_split(cases, SplitConfig(mode="file", file=tmp_path / "splits_final.json"), seed=0)


# ---------------------------------------------------------------- predict

def test_predict_reads_imagests_and_writes_volumes_in_the_input_geometry(tmp_path, rng):
    root = tmp_path / "Dataset001_X"
    data = make_3d(root, rng, test_cases=("t_001",))
    like = _cfg(root, context_slices=1)
    cfg = infer_input(root, like)
    assert cfg.source == "nnunet"
    d = load_data(cfg, with_masks=False)
    assert list(d.volumes) == ["t_001"] and d.in_channels == 6
    # a bare folder of CASE_XXXX files, for a run trained on nnU-Net data
    bare = infer_input(root / "imagesTs", like)
    assert bare.source == "nnunet" and list(load_data(bare, with_masks=False).volumes) == ["t_001"]
    one = infer_input(root / "imagesTs" / "t_001_0000.nii.gz", like)
    assert one.source == "nnunet" and load_data(one, with_masks=False).in_channels == 6
    writer = get_source("nnunet").writer(tmp_path / "out", cfg)
    (unit, idx), = prediction_units(d).items()
    pred = np.zeros((XYZ[2], XYZ[1], XYZ[0]), np.uint8)
    pred[2, 3:6, 4:9] = 1
    writer.write(d, unit, idx, pred.astype(np.float32), pred)
    out = nib.load(tmp_path / "out" / "t_001_mask.nii.gz")
    np.testing.assert_array_equal(np.asarray(out.dataobj), pred.transpose(2, 1, 0))
    np.testing.assert_allclose(out.affine, AFFINE)
    assert data["t_001"][0][0].shape == out.shape
