"""The dataset fingerprint against numbers known by construction or computed independently with numpy."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medseg.config import DataConfig
from medseg.data import fingerprint as fpmod
from medseg.data.fingerprint import compute_fingerprint
from medseg.data.rle import rle_encode
from medseg.data.sources import load_data

QS = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)
SIZE = 64
# Square lesions at even positions, halved exactly by area averaging: side -> area at a 32x32 input.
# Side 1 covers a quarter of an input pixel and survives as one pixel (resize_mask never drops a lesion).
AREA_AT_HALF = {1: 1, 2: 1, 3: 3, 5: 8, 8: 16}
# lesion sides per image; [] is an empty image
LESIONS = [[8], [], [1, 5], [], [3, 3, 2], [], [5], [8, 1], [], [2]]


def quantiles(values) -> dict:
    v = np.asarray(values, float)
    return {f"q{int(q * 100):02d}": float(np.quantile(v, q)) for q in QS} | {"mean": float(v.mean())}


def assert_quantiles(got: dict, values) -> None:
    want = quantiles(values)
    assert set(got) == set(want)
    for k in want:
        assert got[k] == pytest.approx(want[k]), k


def write_lesion_folder(root, lesions=LESIONS, seed=0):
    """images/ + masks/ (0/255) PNGs; image i holds squares of the given sides, one per 16x16 cell."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    for i, sides in enumerate(lesions):
        mask = np.zeros((SIZE, SIZE), np.uint8)
        for j, side in enumerate(sides):
            r, c = 16 * (j // 4) + 2, 16 * (j % 4) + 2
            mask[r : r + side, c : c + side] = 255
        img = rng.integers(0, 200, size=(SIZE, SIZE)).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / f"c{i:02d}.png")
        Image.fromarray(mask).save(root / "masks" / f"c{i:02d}.png")
    return root


@pytest.fixture
def lesion_data(tmp_path):
    root = write_lesion_folder(tmp_path / "d")
    loaded = load_data(DataConfig(root=root, input_size=(32, 32)))
    split = {"train": [f"c{i:02d}" for i in range(7)], "val": [f"c{i:02d}" for i in range(7, 10)]}
    return root, loaded, split


def test_counts_empty_fraction_mask_values_and_foreground(lesion_data):
    root, loaded, split = lesion_data
    fp = compute_fingerprint(loaded, split)
    assert fp["n_images"] == fp["n_cases"] == 10 and fp["in_channels"] == 1
    assert fp["raw_mask_values"] == [0, 255] and fp["mask_values_binary01"] is False
    assert fp["empty_image_fraction"] == pytest.approx(np.mean([not s for s in LESIONS]))
    assert fp["n_positive_images"] == sum(bool(s) for s in LESIONS)
    fg = [sum(x * x for x in s) / SIZE**2 for s in LESIONS if s]
    assert_quantiles(fp["foreground_fraction_positive"], fg)
    assert fp["foreground_fraction_all_pixels"] == pytest.approx(sum(fg) / len(LESIONS))
    assert_quantiles(fp["orig_height"], [SIZE] * 10)
    assert fp["input_size"] == [32, 32] and fp["input_scale_median"] == [0.5, 0.5]
    # per split: the train part is images 0..6
    train = fp["by_split"]["train"]
    assert train["n_images"] == 7
    assert train["empty_image_fraction"] == pytest.approx(np.mean([not s for s in LESIONS[:7]]))
    assert fp["by_split"]["val"]["empty_image_fraction"] == pytest.approx(np.mean([not s for s in LESIONS[7:]]))
    assert fp["split_sizes"] == {"train": 7, "val": 3}


def test_lesions_at_original_and_input_size(lesion_data):
    _, loaded, split = lesion_data
    fp = compute_fingerprint(loaded, split)
    sides = [x for s in LESIONS for x in s]
    assert fp["n_lesions_original"] == fp["n_lesions"] == len(sides)
    assert_quantiles(fp["lesion_area_px_original"], [x * x for x in sides])
    assert_quantiles(fp["lesion_area_px_at_input"], [AREA_AT_HALF[x] for x in sides])
    assert_quantiles(fp["lesions_per_positive_image_original"], [len(s) for s in LESIONS if s])
    assert_quantiles(fp["lesions_per_image"], [len(s) for s in LESIONS])
    assert fp["original_scan"] == {"n_positive_images": 6, "n_scanned": 6, "complete": True, "n_errors": 0}
    # per split, lesions at input size
    assert fp["by_split"]["val"]["n_lesions"] == sum(len(s) for s in LESIONS[7:])


def test_raw_intensity_before_normalisation_overall_and_per_split(lesion_data):
    root, loaded, split = lesion_data
    fp = compute_fingerprint(loaded, split)
    raw = [np.asarray(Image.open(root / "images" / f"c{i:02d}.png"), dtype=np.float64) for i in range(10)]
    raw_fp = fp["raw_intensity"]
    assert raw_fp["n_files"] == raw_fp["n_files_total"] == 10
    assert raw_fp["min"] == min(a.min() for a in raw) and raw_fp["max"] == max(a.max() for a in raw)
    assert_quantiles(raw_fp["per_file_mean"], [a.mean() for a in raw])
    assert_quantiles(raw_fp["per_file_std"], [a.std() for a in raw])
    assert_quantiles(raw_fp["per_file_p99_5"], [np.percentile(a, 99.5) for a in raw])
    assert_quantiles(fp["by_split"]["train"]["raw_intensity"]["per_file_mean"], [a.mean() for a in raw[:7]])
    # normalised intensities (percentile clip + z-score) are centred whatever the raw values were
    assert abs(fp["normalised_intensity_mean"]["mean"]) < 1e-4


def test_file_reads_are_bounded_and_evenly_spread(lesion_data, monkeypatch):
    _, loaded, _ = lesion_data
    monkeypatch.setattr(fpmod, "ORIGINAL_MASKS_MAX_IMAGES", 2)
    monkeypatch.setattr(fpmod, "RAW_INTENSITY_MAX_FILES", 3)
    fp = compute_fingerprint(loaded)
    assert fp["original_scan"]["n_scanned"] == 2 and fp["original_scan"]["complete"] is False
    # first and last positive image: c00 ([8]) and c09 ([2])
    assert_quantiles(fp["lesion_area_px_original"], [64, 4])
    assert fp["raw_intensity"]["n_files"] == 3 and fp["raw_intensity"]["n_files_total"] == 10
    assert "by_split" not in fp
    assert compute_fingerprint(loaded, read_files=False).get("raw_intensity") is None


def test_volume_lesions_per_slice_at_original_resolution(tmp_path):
    # (Z, H, W) label: slice 0 empty, slice 1 two lesions (6 and 1 px), slice 2 one lesion of 12 px
    vol = np.zeros((3, 20, 24), np.uint8)
    vol[1, 2:4, 2:5] = 1
    vol[1, 10, 10] = 3
    vol[2, 5:8, 5:9] = 1
    img = np.random.default_rng(0).normal(size=vol.shape).astype(np.float32)
    # files store (x, y, z): vol[z] == file[:, :, z].T
    aff = np.diag([0.7, 0.5, 2.0, 1.0])
    nib.save(nib.Nifti1Image(np.transpose(img, (2, 1, 0)), aff), tmp_path / "a_image.nii.gz")
    nib.save(nib.Nifti1Image(np.transpose(vol, (2, 1, 0)), aff), tmp_path / "a_label.nii.gz")
    loaded = load_data(DataConfig(root=tmp_path, source="volumes", input_size=(16, 16), context_slices=0))
    fp = compute_fingerprint(loaded, {"train": ["a"], "val": []})
    assert fp["n_images"] == 3 and fp["n_cases"] == 1 and fp["n_volumes"] == 1
    assert fp["empty_image_fraction"] == pytest.approx(1 / 3)
    assert fp["raw_mask_values"] == [0, 1, 3]
    assert fp["n_lesions_original"] == 3
    assert_quantiles(fp["lesion_area_px_original"], [6, 1, 12])
    assert fp["spacing_row"]["q50"] == pytest.approx(0.5) and fp["spacing_col"]["q50"] == pytest.approx(0.7)
    assert fp["raw_intensity"]["per_file_mean"]["q50"] == pytest.approx(float(img.mean()), abs=1e-5)


def test_siim_lesions_from_the_rle_rows(tmp_path, dicom):
    H, W = 24, 32
    uids = ["1.2.3.1", "1.2.3.2"]
    for uid in uids:
        dicom(tmp_path / "dcm" / f"{uid}.dcm", np.full((H, W), 100, np.uint16), uid)
    a, b = np.zeros((H, W), np.uint8), np.zeros((H, W), np.uint8)
    a[1:3, 1:4] = 1  # 6 px
    b[10:15, 20:22] = 1  # 10 px, on a second row of the same image
    csv = tmp_path / "rle.csv"
    csv.write_text(f"ImageId,EncodedPixels\n{uids[0]},{rle_encode(a)}\n{uids[0]},{rle_encode(b)}\n{uids[1]},-1\n")
    loaded = load_data(DataConfig(root=tmp_path / "dcm", source="siim", rle_csv=csv, input_size=(16, 16)))
    fp = compute_fingerprint(loaded)
    assert fp["n_lesions_original"] == 2 and fp["empty_image_fraction"] == pytest.approx(0.5)
    assert_quantiles(fp["lesion_area_px_original"], [6, 10])
    assert fp["raw_intensity"]["min"] == fp["raw_intensity"]["max"] == 100.0
