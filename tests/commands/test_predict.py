"""predict writes masks/probabilities at the input's own size and geometry, for each source."""

from __future__ import annotations

import csv
from pathlib import Path

import nrrd
import numpy as np
import pytest
from PIL import Image

from medseg.commands.fit import fit
from medseg.commands.predict import predict_run
from medseg.config import config_from_dict
from medseg.data.rle import rle_decode
from medseg.errors import MedsegError
from tests.conftest import make_blob_folder, tiny_config
from tests.data.conftest import write_dicom


def _fit(tmp_path, root, **over):
    cfg = config_from_dict(tiny_config(root, tmp_path / "runs", train__epochs=2, schedule__warmup_epochs=0, **over))
    return fit(cfg, progress=False)


@pytest.mark.slow
def test_predict_png_folder_at_original_size(tmp_path):
    data = make_blob_folder(tmp_path / "d", n=8, size=64)
    run = _fit(tmp_path, data)
    new = tmp_path / "new"
    new.mkdir()
    Image.fromarray(np.full((50, 70), 90, np.uint8)).save(new / "x.png")
    out = predict_run(run, new, tmp_path / "out")
    prob = np.array(Image.open(out / "probs" / "x.png"))
    mask = np.array(Image.open(out / "masks" / "x.png"))
    assert prob.shape == mask.shape == (50, 70)
    assert prob.dtype == np.uint16 and set(np.unique(mask)) <= {0, 255}
    with pytest.raises(MedsegError, match="not empty"):
        predict_run(run, new, out)


def _write_volumes(root, n=3, shape=(48, 40, 6), coarse=()):
    """n NRRD volumes with an 8x8-pixel lesion at 0.7 x 0.8 mm; those in `coarse` at twice the spacing with a 4x4 lesion (same mm)."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        img = rng.normal(100, 10, shape).astype(np.int16)
        lab = np.zeros(shape, np.uint8)
        side, scale = (4, 2.0) if i in coarse else (8, 1.0)
        lab[10:10 + side, 12:12 + side, 2:4] = 1
        img[lab == 1] += 80
        hdr = {"space": "left-posterior-superior", "space directions": np.diag([0.7 * scale, 0.8 * scale, 3.0]),
               "space origin": np.array([1.0, 2.0, 3.0])}
        nrrd.write(str(root / f"v{i}_image.nrrd"), img, hdr)
        nrrd.write(str(root / f"v{i}_label.nrrd"), lab, hdr)
    return root


@pytest.mark.slow
def test_volumes_fit_reports_per_volume_and_predict_keeps_geometry(tmp_path):
    data = _write_volumes(tmp_path / "vols")
    run = _fit(tmp_path, data, data={"source": "volumes", "root": str(data), "input_size": [48, 48]}, split={"mode": "holdout", "val_fraction": 0.34})
    import json

    summary = json.loads((run / "metrics" / "summary.json").read_text())
    assert summary["per_volume"]["rows"], "per-volume metrics after stacking slices"
    out = predict_run(run, data / "v0_image.nrrd", tmp_path / "out")
    prob, ph = nrrd.read(str(out / "v0_prob.nrrd"))
    mask, mh = nrrd.read(str(out / "v0_mask.nrrd"))
    _, ref = nrrd.read(str(data / "v0_image.nrrd"))
    assert prob.shape == mask.shape == (48, 40, 6)
    np.testing.assert_allclose(mh["space directions"], ref["space directions"])
    np.testing.assert_allclose(mh["space origin"], ref["space origin"])
    assert set(np.unique(mask)) <= {0, 1}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["images", "volumes"])
def test_predict_streams_whole_units_a_chunk_at_a_time_and_writes_what_one_unit_alone_gives(tmp_path, monkeypatch, kind):
    """A folder is predicted a chunk of whole units at a time (one volume, or 4 eval batches of images), each chunk's
    arrays dropped before the next; every unit's files equal those of predicting that unit on its own."""
    import medseg.commands.predict as predict_mod
    from tests.conftest import ChunkTracker

    if kind == "volumes":
        data = _write_volumes(tmp_path / "vols")
        run = _fit(tmp_path, data, data={"source": "volumes", "root": str(data), "input_size": [48, 48]},
                   split={"mode": "holdout", "val_fraction": 0.34}, eval={"batch_size": 4})
        folder, want_sizes, first, last = data, [6, 6, 6], "v0_image.nrrd", "v2_image.nrrd"
    else:
        run = _fit(tmp_path, make_blob_folder(tmp_path / "d", n=8, size=64), eval={"batch_size": 2})
        folder = tmp_path / "new"
        folder.mkdir()
        rng = np.random.default_rng(1)
        for i in range(10):  # 10 images of two sizes: chunks of 8 and 2
            Image.fromarray(rng.integers(0, 255, (50 + 10 * (i % 2), 70), np.uint8)).save(folder / f"x{i}.png")
        want_sizes, first, last = [8, 2], "x0.png", "x9.png"
    # a failure on the second chunk leaves nothing: no output, no half of it, not the parents it made
    real, n = predict_mod.run_probs, []
    def fails_second(*a, **k):
        n.append(1)
        if len(n) == 2:
            raise RuntimeError("out of memory")
        return real(*a, **k)
    monkeypatch.setattr(predict_mod, "run_probs", fails_second)
    with pytest.raises(RuntimeError, match="out of memory"):
        predict_run(run, folder, tmp_path / "new-parent" / "out")
    assert len(n) == 2 and not (tmp_path / "new-parent").exists()
    (tmp_path / ".out.partial" / "masks").mkdir(parents=True)  # a killed predict's leftovers are replaced
    calls = ChunkTracker(real)
    monkeypatch.setattr(predict_mod, "run_probs", calls)
    out = predict_run(run, folder, tmp_path / "out")
    assert not (tmp_path / ".out.partial").exists() and (out / "prediction.json").is_file()
    assert calls.sizes == want_sizes and calls.alive == [0] * len(want_sizes)
    for name in (first, last):
        alone_in = folder if kind == "volumes" else tmp_path / f"alone-{name}"
        if kind == "images":
            alone_in.mkdir()
            (alone_in / name).write_bytes((folder / name).read_bytes())
        alone = tmp_path / f"out-{name}"
        if name == last:  # into an empty folder that exists: the working directory, named "."
            alone.mkdir()
            monkeypatch.chdir(alone)
        predict_run(run, alone_in / name if kind == "volumes" else alone_in, Path(".") if name == last else alone)
        if name == last:
            assert Path.cwd() == alone  # the working directory was filled, not replaced
        assert (alone / "prediction.json").is_file() and not list(tmp_path.glob(".*.partial"))
        if kind == "volumes":
            stem = name.replace("_image.nrrd", "")
            for suffix in ("_prob.nrrd", "_mask.nrrd"):
                a, b = nrrd.read(str(out / (stem + suffix)))[0], nrrd.read(str(alone / (stem + suffix)))[0]
                np.testing.assert_allclose(a, b, atol=1e-5)
        else:
            for sub in ("probs", "masks"):
                a = np.array(Image.open(out / sub / name)).astype(np.int64)
                b = np.array(Image.open(alone / sub / name)).astype(np.int64)
                assert a.shape == b.shape and np.abs(a - b).max() <= (1 if sub == "probs" else 0)


@pytest.mark.slow
def test_spacing_mode_gives_one_lesion_size_in_mm_the_same_pixels_and_predict_keeps_geometry(tmp_path):
    """Volumes at two spacings, resampled in-plane to 1 mm: the same 5.6 x 6.4 mm lesion covers the same pixels in both."""
    from medseg.data import load_data

    data = _write_volumes(tmp_path / "vols", coarse=(2,))
    over = dict(data={"source": "volumes", "root": str(data), "input_size": [80, 80], "resize_mode": "spacing",
                      "target_spacing": [1.0, 1.0]}, split={"mode": "holdout", "val_fraction": 0.34})
    cfg = config_from_dict(tiny_config(data, tmp_path / "runs", **over))
    loaded = load_data(cfg.data, with_masks=True)
    area = {}
    for s in loaded.samples:
        if s.meta["slice"] == 2:
            assert s.meta["resize"]["fit"] == 1.0  # 48 x 40 px at <= 1.4 x 1.6 mm fits 80² at 1 mm
            area[s.meta["volume"]] = int(np.asarray(s.mask).sum())
    # 5.6 x 6.4 mm at 1 mm per pixel: about 36 px in every volume (resizing would give the coarse one a quarter)
    assert len(area) == 3 and all(abs(a - 5.6 * 6.4) <= 8 for a in area.values()), area
    run = fit(cfg, progress=False)
    out = predict_run(run, data / "v2_image.nrrd", tmp_path / "out")
    mask, mh = nrrd.read(str(out / "v2_mask.nrrd"))
    _, ref = nrrd.read(str(data / "v2_image.nrrd"))
    assert mask.shape == (48, 40, 6)
    np.testing.assert_allclose(mh["space directions"], ref["space directions"])


@pytest.mark.slow
def test_siim_fit_and_predict_writes_rle_csv(tmp_path):
    from medseg.data.rle import rle_encode

    root = tmp_path / "dicom"
    rng = np.random.default_rng(1)
    rows = []
    for i in range(8):
        px = rng.integers(0, 200, (64, 64)).astype(np.uint16)
        m = np.zeros((64, 64), np.uint8)
        if i % 2:
            m[20:30, 25:40] = 1
            px[m == 1] += 600
        uid = f"1.2.3.{i}"
        write_dicom(root / f"{uid}.dcm", px, uid, patient=f"P{i}")
        rows.append((uid, rle_encode(m)))
    csv_path = tmp_path / "train-rle.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ImageId", " EncodedPixels"])
        w.writerows(rows)
    run = _fit(tmp_path, root, data={"source": "siim", "root": str(root), "rle_csv": str(csv_path), "input_size": [64, 64]})
    out = predict_run(run, root, tmp_path / "out")
    with open(out / "submission.csv") as f:
        sub = list(csv.reader(f))
    assert sub[0] == ["ImageId", "EncodedPixels"] and len(sub) == 9
    assert sorted(uid for uid, _ in sub[1:]) == sorted(uid for uid, _ in rows)
    n_foreground = 0
    for uid, enc in sub[1:]:
        # the submission is the predicted mask, in the competition's encoding
        predicted = np.array(Image.open(out / "masks" / f"{uid}.png")) > 0
        assert np.array_equal(rle_decode(enc, 64, 64).astype(bool), predicted), uid
        n_foreground += int(predicted.any())
    assert n_foreground > 0  # some masks are not empty, so the comparison saw real runs


@pytest.mark.slow
def test_predict_through_the_cli_writes_what_the_function_writes(tmp_path):
    import subprocess
    import sys

    data = make_blob_folder(tmp_path / "d", n=8, size=64)
    run = _fit(tmp_path, data)
    proc = subprocess.run([sys.executable, "-m", "medseg.cli", "predict", str(run), str(data / "images"), str(tmp_path / "cli")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert str(tmp_path / "cli") in proc.stderr.replace("\n", "")
    direct = predict_run(run, data / "images", tmp_path / "direct")
    names = sorted(p.name for p in (direct / "masks").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "cli" / "masks").iterdir()) and len(names) == 8
    for name in names:
        for kind in ("masks", "probs"):
            assert np.array_equal(np.array(Image.open(tmp_path / "cli" / kind / name)), np.array(Image.open(direct / kind / name)))
    again = subprocess.run([sys.executable, "-m", "medseg.cli", "predict", str(run), str(data / "images"), str(tmp_path / "cli")],
                           capture_output=True, text=True)
    assert again.returncode == 2 and "not empty" in again.stderr and len(again.stderr.strip().splitlines()) == 1


def test_patches_mode_trains_on_crops_predicts_by_windows_and_writes_at_original_size(tmp_path, monkeypatch):
    """Crops of larger inputs + sliding-window inference: validation, evaluate and predict all slide, outputs at original size."""
    import medseg.inference as inference
    from medseg import runfolder as runfs

    data = make_blob_folder(tmp_path / "d", n=8, size=64)
    windows = []
    real = inference._windowed
    monkeypatch.setattr(inference, "_windowed", lambda net, x, window, *a, **k: windows.append(tuple(x.shape[-2:])) or real(net, x, window, *a, **k))
    run = _fit(tmp_path, data, data__input_size=[64, 64], sampler__crop_size=[32, 32],
               eval={"sliding_window": {"roi_size": [32, 32], "overlap": 0.5}}, model={"name": "unet", "channels": [4, 8], "res_units": 0})
    summary = runfs.read_json(run / runfs.SUMMARY)
    assert summary["training_reported"]["match"]  # the windowed validation of training = evaluate's
    assert windows and set(windows) == {(64, 64)}  # whole 64² inputs went in; the windows are inside
    new = tmp_path / "new"
    new.mkdir()
    Image.fromarray(np.full((50, 70), 90, np.uint8)).save(new / "x.png")
    out = predict_run(run, new, tmp_path / "out")
    assert np.array(Image.open(out / "masks" / "x.png")).shape == (50, 70)
