"""The `datalist` source: MONAI / Decathlon datalist JSONs, 3D and 4D channel-last volumes, 2D files, its own split."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medseg.config import DataConfig, NormalizeConfig, SplitConfig
from medseg.data.sources import infer_input, load_data
from medseg.data.sources.datalist import datalist_split
from medseg.data.split import make_split
from medseg.errors import MedsegError

XYZ = (24, 20, 4)
AFFINE = np.diag([0.9, 0.9, 2.0, 1.0])


def _lab():
    lab = np.zeros(XYZ, np.uint8)
    lab[3:9, 2:7, 1:3] = 1
    lab[14:17, 11:15, 3] = 3
    return lab


def make_msd(root, rng, n_train=3, n_val=0, channels=2, test=1):
    """A Decathlon folder: dataset.json + imagesTr/ (4D channel-last when channels > 1) + labelsTr/ + imagesTs/."""
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    out = {}

    def image(name, folder):
        shape = XYZ + (channels,) if channels > 1 else XYZ
        arr = rng.normal(size=shape).astype(np.float32)
        nib.save(nib.Nifti1Image(arr, AFFINE), root / folder / f"{name}.nii.gz")
        return arr

    entries = {"training": [], "validation": []}
    for i in range(n_train + n_val):
        name = f"BRATS_{i:03d}"
        arr = image(name, "imagesTr")
        lab = _lab()
        nib.save(nib.Nifti1Image(lab, AFFINE), root / "labelsTr" / f"{name}.nii.gz")
        key = "training" if i < n_train else "validation"
        entries[key].append({"image": f"./imagesTr/{name}.nii.gz", "label": f"./labelsTr/{name}.nii.gz"})
        out[name] = (arr, lab)
    doc = {"name": "BrainTumour", "modality": {str(c): f"m{c}" for c in range(channels)},
           "labels": {"0": "background", "1": "edema", "3": "tumour"}, "training": entries["training"],
           "test": [f"./imagesTs/BRATS_9{j:02d}.nii.gz" for j in range(test)]}
    if n_val:
        doc["validation"] = entries["validation"]
    for j in range(test):
        out[f"BRATS_9{j:02d}"] = (image(f"BRATS_9{j:02d}", "imagesTs"), None)
    (root / "dataset.json").write_text(json.dumps(doc))
    return out


def _cfg(root, **kw):
    kw.setdefault("input_size", (20, 24))
    kw.setdefault("normalize", NormalizeConfig(mode="none"))
    return DataConfig(source="datalist", root=root, **kw)


@pytest.mark.parametrize("channels", [1, 2])
def test_msd_folder_3d_and_4d_channel_last(tmp_path, rng, channels):
    data = make_msd(tmp_path, rng, channels=channels)
    d = load_data(_cfg(tmp_path, context_slices=1))
    assert d.source == "datalist" and list(d.volumes) == ["BRATS_000", "BRATS_001", "BRATS_002"]
    assert d.in_channels == channels * 3 and d.mask_values == [0, 1, 3]
    for s in d.samples:
        arr, lab = data[s.meta["volume"]]
        z = s.meta["slice"]
        for c in range(channels):
            vol = arr[..., c] if channels > 1 else arr
            for j in range(3):
                src = min(max(z - 1 + j, 0), XYZ[2] - 1)
                np.testing.assert_array_equal(s.image[c * 3 + j], vol[:, :, src].T)
        np.testing.assert_array_equal(s.mask, (lab[:, :, z].T > 0).astype(np.uint8))
    # without labels (medseg predict): the test entries
    p = load_data(_cfg(tmp_path), with_masks=False)
    assert list(p.volumes) == ["BRATS_900"]


def test_json_file_root_list_of_channel_files_and_absolute_paths(tmp_path, rng):
    folder = tmp_path / "d"
    folder.mkdir()
    chans = [rng.normal(size=XYZ).astype(np.float32) for _ in range(2)]
    for c, a in enumerate(chans):
        nib.save(nib.Nifti1Image(a, AFFINE), folder / f"case1_t{c}.nii.gz")
    nib.save(nib.Nifti1Image(_lab(), AFFINE), tmp_path / "case1_seg.nii.gz")
    js = folder / "my_datalist.json"
    js.write_text(json.dumps({"training": [{"image": ["case1_t0.nii.gz", "case1_t1.nii.gz"],
                                            "label": str(tmp_path / "case1_seg.nii.gz")}]}))
    d = load_data(_cfg(js, context_slices=0))
    assert list(d.volumes) == ["case1_t0"] and d.in_channels == 2
    s = d.samples[2]
    np.testing.assert_array_equal(s.image, np.stack([chans[0][:, :, 2].T, chans[1][:, :, 2].T]))
    assert infer_input(js, _cfg(tmp_path)).source == "datalist"


def test_2d_image_entries(tmp_path, rng):
    (tmp_path / "img").mkdir()
    entries = []
    for i in range(2):
        a = rng.integers(0, 255, (30, 40)).astype(np.uint8)
        m = np.zeros((30, 40), np.uint8)
        m[4:9, 10:20] = 255
        Image.fromarray(a).save(tmp_path / "img" / f"x{i}.png")
        Image.fromarray(m).save(tmp_path / "img" / f"x{i}_mask.png")
        entries.append({"image": f"img/x{i}.png", "label": f"img/x{i}_mask.png"})
    (tmp_path / "list.json").write_text(json.dumps({"training": entries}))
    d = load_data(_cfg(tmp_path / "list.json", input_size=(30, 40), context_slices=1))
    assert d.in_channels == 1 and [s.sample_id for s in d.samples] == ["x0_z0000", "x1_z0000"]
    np.testing.assert_array_equal(d.samples[0].image[0], np.asarray(Image.open(tmp_path / "img" / "x0.png"), np.float32))
    assert int(d.samples[0].mask.sum()) == 5 * 10


# ---------------------------------------------------------------- the datalist's own split

def test_validation_list_is_the_split(tmp_path, rng):
    make_msd(tmp_path, rng, n_train=3, n_val=2)
    d = load_data(_cfg(tmp_path))
    assert len(d.volumes) == 5  # training and validation entries are both read
    assert datalist_split(tmp_path / "dataset.json") == {
        "train": ["BRATS_000", "BRATS_001", "BRATS_002"], "val": ["BRATS_003", "BRATS_004"], "test": []}
    split = make_split([s.case_id for s in d.samples], SplitConfig(mode="file", file=tmp_path / "dataset.json"), seed=0)
    assert split["val"] == ["BRATS_003", "BRATS_004"] and split["train"] == ["BRATS_000", "BRATS_001", "BRATS_002"]


def test_fold_keys_give_the_split_and_without_them_it_is_refused(tmp_path, rng, one_line):
    make_msd(tmp_path, rng, n_train=4)
    doc = json.loads((tmp_path / "dataset.json").read_text())
    for i, e in enumerate(doc["training"]):
        e["fold"] = i % 2
    (tmp_path / "folds.json").write_text(json.dumps(doc))
    cases = [f"BRATS_{i:03d}" for i in range(4)]
    s1 = make_split(cases, SplitConfig(mode="file", file=tmp_path / "folds.json", fold=1), seed=0)
    assert s1 == {"train": ["BRATS_000", "BRATS_002"], "val": ["BRATS_001", "BRATS_003"], "test": []}
    with pytest.raises(MedsegError) as e:
        make_split(cases, SplitConfig(mode="file", file=tmp_path / "dataset.json"), seed=0)
    one_line(e, "dataset.json", "no 'validation'")


# ---------------------------------------------------------------- bad input

def test_bad_entries_raise_naming_the_file_or_are_skipped(tmp_path, rng, one_line):
    make_msd(tmp_path, rng, n_train=3)
    (tmp_path / "labelsTr" / "BRATS_001.nii.gz").unlink()
    with pytest.raises(MedsegError) as e:
        load_data(_cfg(tmp_path))
    one_line(e, tmp_path / "labelsTr" / "BRATS_001.nii.gz", "no such file")
    d = load_data(_cfg(tmp_path, skip_bad=True))
    assert list(d.volumes) == ["BRATS_000", "BRATS_002"] and len(d.bad) == 1
    nib.save(nib.Nifti1Image(np.zeros((24, 20, 3), np.uint8), AFFINE), tmp_path / "labelsTr" / "BRATS_001.nii.gz")
    with pytest.raises(MedsegError) as e:
        load_data(_cfg(tmp_path))
    one_line(e, "BRATS_001.nii.gz", "label shape")
    doc = json.loads((tmp_path / "dataset.json").read_text())
    doc["training"].append({"label": "x.nii.gz"})
    doc["training"].append(dict(doc["training"][0]))
    (tmp_path / "dataset.json").write_text(json.dumps(doc))
    d = load_data(_cfg(tmp_path, skip_bad=True))
    reasons = [b["reason"] for b in d.bad]
    assert any("'training' entry 3: entry has no 'image'" in r for r in reasons)
    assert any("volume name 'BRATS_000' also given by" in r for r in reasons)


def test_not_a_datalist(tmp_path, one_line):
    (tmp_path / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}}))
    with pytest.raises(MedsegError) as e:
        load_data(_cfg(tmp_path))
    one_line(e, tmp_path / "dataset.json", "not a datalist")
    with pytest.raises(MedsegError) as e:
        load_data(_cfg(tmp_path / "missing.json"))
    one_line(e, "missing.json")
