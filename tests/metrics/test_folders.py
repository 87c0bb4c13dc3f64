from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pytest
import tifffile
from PIL import Image

from medseg.errors import MedsegError
from medseg.metrics import MetricContract, case_metrics, score_folders

C = MetricContract()


def _square(shape, top, left, size):
    m = np.zeros(shape, dtype=bool)
    m[top : top + size, left : left + size] = True
    return m


def _png(path: Path, arr: np.ndarray) -> None:
    Image.fromarray(arr).save(path)


@pytest.fixture
def good(tmp_path):
    """Truth/prediction folders covering each supported prediction encoding."""
    truth_dir, pred_dir = tmp_path / "truth", tmp_path / "pred"
    truth_dir.mkdir()
    pred_dir.mkdir()
    t1 = _square((32, 32), 4, 4, 8)
    _png(truth_dir / "a.png", (t1 * 255).astype(np.uint8))
    prob = np.where(t1, 0.8, 0.1)
    _png(pred_dir / "a.png", np.round(prob * 255).astype(np.uint8))  # uint8 probabilities
    t2 = _square((32, 32), 10, 10, 5)
    _png(truth_dir / "b.png", t2.astype(np.uint8))
    tifffile.imwrite(pred_dir / "b.tif", np.roll(t2, 1, axis=1).astype(np.float32) * 0.9)  # float probabilities
    t3 = _square((32, 32), 20, 2, 3)
    _png(truth_dir / "c.png", t3.astype(np.uint8) * 255)
    _png(pred_dir / "c.png", (t3 * 40000).astype(np.uint16))  # uint16: 40000/65535 = 0.61
    vol = np.zeros((10, 12, 6), dtype=np.uint8)
    vol[2:6, 3:8, 1:4] = 1
    nib.save(nib.Nifti1Image(vol, np.diag([0.5, 0.5, 2.0, 1.0])), truth_dir / "d.nii.gz")
    nib.save(nib.Nifti1Image(np.roll(vol, 1, axis=2), np.diag([0.5, 0.5, 2.0, 1.0])), pred_dir / "d.nii.gz")
    nrrd.write(str(truth_dir / "e.nrrd"), vol, {"spacings": [1.0, 1.0, 3.0]})
    nrrd.write(str(pred_dir / "e.nrrd"), np.roll(vol, 1, axis=2).astype(np.float32), {"spacings": [1.0, 1.0, 3.0]})
    (pred_dir / "notes.txt").write_text("ignored")
    return pred_dir, truth_dir, {"a": (prob, t1), "b": (np.roll(t2, 1, axis=1) * 0.9, t2), "c": (t3 * (40000 / 65535), t3)}


def _listing(*dirs):
    return {p: p.stat().st_mtime_ns for d in dirs for p in d.rglob("*")}


def test_good_folders_score_every_case_and_write_nothing(good):
    pred_dir, truth_dir, expected = good
    before = _listing(pred_dir.parent)
    rows, summary = score_folders(pred_dir, truth_dir, C)
    assert _listing(pred_dir.parent) == before
    assert [r["case"] for r in rows] == ["a", "b", "c", "d", "e"]
    by_case = {r["case"]: r for r in rows}
    for case, (prob, truth) in expected.items():
        want = case_metrics(prob.astype(float), truth, C)
        for k in ("dice", "hd95", "tp", "fp"):
            assert by_case[case][k] == pytest.approx(want[k], abs=1e-6), (case, k)
    assert by_case["a"]["dice"] == 1.0 and by_case["c"]["dice"] == 1.0
    # a one-voxel shift along the 2 mm axis of the NIfTI, the 3 mm axis of the NRRD
    assert by_case["d"]["hd95"] == pytest.approx(2.0) and by_case["e"]["hd95"] == pytest.approx(3.0)
    assert summary["n_cases"] == 5 and summary["contract_text"] == C.describe()


def test_zero_one_and_zero_255_masks_are_masks(tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "p").mkdir()
    t = _square((16, 16), 2, 2, 4)
    _png(tmp_path / "t" / "x.png", t.astype(np.uint8))
    _png(tmp_path / "p" / "x.png", t.astype(np.uint8))  # 0/1
    _png(tmp_path / "t" / "y.png", t.astype(np.uint8) * 255)
    _png(tmp_path / "p" / "y.png", t.astype(np.uint8) * 255)  # 0/255
    _png(tmp_path / "t" / "z.png", t.astype(np.uint8))
    _png(tmp_path / "p" / "z.png", t.astype(np.uint16) * 255)  # 8-bit mask in a 16-bit PNG
    rows, _ = score_folders(tmp_path / "p", tmp_path / "t", C, surface=False)
    assert [r["dice"] for r in rows] == [1.0, 1.0, 1.0]


def _one_line(exc: pytest.ExceptionInfo, name: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg and name in msg, msg


def test_missing_prediction(good):
    pred_dir, truth_dir, _ = good
    (pred_dir / "b.tif").unlink()
    with pytest.raises(MedsegError) as exc:
        score_folders(pred_dir, truth_dir, C)
    _one_line(exc, "b.png")
    assert "no prediction" in str(exc.value)


def test_extra_prediction(good):
    pred_dir, truth_dir, _ = good
    _png(pred_dir / "zz.png", np.zeros((32, 32), np.uint8))
    with pytest.raises(MedsegError) as exc:
        score_folders(pred_dir, truth_dir, C)
    _one_line(exc, "zz.png")
    assert "no truth" in str(exc.value)


def test_size_mismatch(good):
    pred_dir, truth_dir, _ = good
    _png(pred_dir / "a.png", np.zeros((32, 30), np.uint8))
    with pytest.raises(MedsegError) as exc:
        score_folders(pred_dir, truth_dir, C)
    _one_line(exc, "a.png")
    assert "shape" in str(exc.value)


def test_unreadable_file(good):
    pred_dir, truth_dir, _ = good
    (pred_dir / "a.png").write_bytes(b"not a png at all")
    with pytest.raises(MedsegError) as exc:
        score_folders(pred_dir, truth_dir, C)
    _one_line(exc, "a.png")
    assert "unreadable" in str(exc.value)


@pytest.mark.parametrize("values", [[0, 1, 2], [1, 2]])
def test_non_binary_truth(good, values):
    pred_dir, truth_dir, _ = good
    arr = np.zeros((32, 32), np.uint8)
    for i, v in enumerate(values):
        arr[i::len(values)] = v
    _png(truth_dir / "a.png", arr)
    with pytest.raises(MedsegError) as exc:
        score_folders(pred_dir, truth_dir, C)
    _one_line(exc, "a.png")
    assert "not binary" in str(exc.value)


def test_empty_folder(tmp_path, good):
    pred_dir, _, _ = good
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MedsegError) as exc:
        score_folders(pred_dir, empty, C)
    _one_line(exc, "empty")
    assert "no truth files" in str(exc.value)


def test_missing_folder(tmp_path, good):
    _, truth_dir, _ = good
    with pytest.raises(MedsegError) as exc:
        score_folders(tmp_path / "nowhere", truth_dir, C)
    _one_line(exc, "nowhere")


def test_nan_in_prediction(good):
    pred_dir, truth_dir, _ = good
    bad = np.zeros((32, 32), np.float32)
    bad[3, 3] = np.nan
    tifffile.imwrite(pred_dir / "b.tif", bad)
    with pytest.raises(MedsegError) as exc:
        score_folders(pred_dir, truth_dir, C)
    _one_line(exc, "b.tif")
    assert "NaN" in str(exc.value)


def test_float_prediction_out_of_range(good):
    pred_dir, truth_dir, _ = good
    tifffile.imwrite(pred_dir / "b.tif", np.full((32, 32), 3.0, np.float32))
    with pytest.raises(MedsegError) as exc:
        score_folders(pred_dir, truth_dir, C)
    _one_line(exc, "b.tif")


def test_duplicate_stem(good):
    pred_dir, truth_dir, _ = good
    tifffile.imwrite(pred_dir / "a.tiff", np.zeros((32, 32), np.float32))
    with pytest.raises(MedsegError) as exc:
        score_folders(pred_dir, truth_dir, C)
    _one_line(exc, "a.")
    assert "share the stem" in str(exc.value)


def test_colour_mask_is_rejected(good):
    pred_dir, truth_dir, _ = good
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 0] = 255
    _png(pred_dir / "a.png", rgb)
    with pytest.raises(MedsegError) as exc:
        score_folders(pred_dir, truth_dir, C)
    _one_line(exc, "a.png")
    assert "colour" in str(exc.value)
