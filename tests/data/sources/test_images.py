"""The `images` source: images/ + masks/ matched by stem, colour detection, bad files, infer_input."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

from medseg.config import NormalizeConfig
from medseg.data.preprocess import to_original
from medseg.data.sources import infer_input, load_data
from medseg.errors import MedsegError


def blob_mask(h, w, r0, c0, size=6):
    m = np.zeros((h, w), dtype=np.uint8)
    m[r0:r0 + size, c0:c0 + size] = 1
    return m


def make_png_set(root, rng, n=3, fg=1, shape=(32, 32), stems=None):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    masks = {}
    for i, stem in enumerate(stems or [f"img{i}" for i in range(n)]):
        Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8)).save(root / "images" / f"{stem}.png")
        m = blob_mask(*shape, 4 + i, 5 + 2 * i)
        Image.fromarray(m * fg).save(root / "masks" / f"{stem}.png")
        masks[stem] = m
    return masks


def test_png_01_and_0255_masks_load_the_same(tmp_path, rng, cfg_for):
    m01 = make_png_set(tmp_path / "a", np.random.default_rng(1), fg=1)
    make_png_set(tmp_path / "b", np.random.default_rng(1), fg=255)
    da = load_data(cfg_for(tmp_path / "a"))
    db = load_data(cfg_for(tmp_path / "b"))
    assert da.mask_values == [0, 1] and db.mask_values == [0, 255]
    assert db.samples[0].meta["raw_mask_values"] == [0, 255]
    for sa, sb in zip(da.samples, db.samples):
        assert sa.sample_id == sb.sample_id
        np.testing.assert_array_equal(sa.mask, sb.mask)
        np.testing.assert_array_equal(sa.image, sb.image)
        np.testing.assert_array_equal(sa.mask, m01[sa.sample_id])  # input size == file size: exact
        assert sa.mask.dtype == np.uint8
    s = da.samples[0]
    assert da.source == "images" and da.in_channels == 1 and da.volumes == {} and da.bad == []
    assert s.image.shape == (1, 32, 32) and s.image.dtype == np.float32
    assert s.case_id == s.sample_id == "img0"
    assert s.meta["orig_shape"] == [32, 32] and s.meta["spacing"] is None
    assert s.meta["fg_fraction"] == pytest.approx(36 / 1024)
    assert abs(float(s.image.mean())) < 0.05  # per-image percentile z-score
    json.dumps([x.meta for x in da.samples])


def test_resized_and_letterboxed_samples(tmp_path, rng, cfg_for):
    m = make_png_set(tmp_path, rng, n=1, shape=(40, 80))
    d = load_data(cfg_for(tmp_path, input_size=(32, 32), resize_mode="letterbox"))
    s = d.samples[0]
    assert s.image.shape == (1, 32, 32) and s.mask.shape == (32, 32)
    assert s.meta["resize"]["offset"] == [8, 0]
    assert not s.mask[:8].any() and not s.image[:, :8].any()  # zero padding
    back = to_original(s.mask.astype(np.float32), s.meta["resize"]) >= 0.5
    assert back.shape == (40, 80)
    assert (back & (m["img0"] > 0)).sum() / (back | (m["img0"] > 0)).sum() > 0.5


def test_16bit_png(tmp_path, cfg_for):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    img = np.linspace(0, 60000, 32 * 32).reshape(32, 32).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "images" / "x.png"), img)
    cv2.imwrite(str(tmp_path / "masks" / "x.png"), blob_mask(32, 32, 3, 3) * 255)
    d = load_data(cfg_for(tmp_path, normalize=NormalizeConfig(mode="minmax")))
    np.testing.assert_allclose(d.samples[0].image[0], img / 60000.0, atol=1e-6)


def test_rgb_detection(tmp_path, rng, cfg_for):
    make_png_set(tmp_path, rng, n=2)
    # grey stored as RGB: still grey
    g = rng.integers(0, 256, size=(32, 32), dtype=np.uint8)
    Image.fromarray(np.stack([g, g, g], -1)).save(tmp_path / "images" / "img1.png")
    d = load_data(cfg_for(tmp_path))
    assert d.in_channels == 1 and d.samples[1].image.shape == (1, 32, 32)
    # channels one level apart (JPEG chroma rounding) are still grey
    g = np.full((32, 32), 100, dtype=np.uint8)
    g[0, 0], g[-1, -1] = 0, 255
    b = g.copy()
    b[5:9, 5:9] += 1
    Image.fromarray(np.stack([g, g, b], -1)).save(tmp_path / "images" / "img1.png")
    assert load_data(cfg_for(tmp_path)).in_channels == 1
    # one real colour image makes the dataset RGB; grey images are repeated to 3 channels
    c = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    Image.fromarray(c).save(tmp_path / "images" / "img1.png")
    d = load_data(cfg_for(tmp_path))
    assert d.in_channels == 3
    assert all(s.image.shape == (3, 32, 32) for s in d.samples)
    grey = d.samples[0].image
    np.testing.assert_array_equal(grey[0], grey[2])
    assert not np.array_equal(d.samples[1].image[0], d.samples[1].image[2])
    assert load_data(cfg_for(tmp_path, color="grey")).in_channels == 1
    d = load_data(cfg_for(tmp_path, color="rgb"))
    assert d.in_channels == 3


def test_tiff_folder_and_rgb_mask(tmp_path, rng, cfg_for):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    tifffile.imwrite(tmp_path / "images" / "a.tif", rng.normal(size=(32, 32)).astype(np.float32))
    mask_rgb = np.zeros((32, 32, 3), dtype=np.uint8)
    mask_rgb[2:5, 2:5, 0] = 200  # red lesion
    mask_rgb[20:22, 20:22, 2] = 100  # blue lesion: any channel > 0 is foreground
    tifffile.imwrite(tmp_path / "masks" / "a.TIFF", mask_rgb)
    d = load_data(cfg_for(tmp_path))
    s = d.samples[0]
    assert s.mask.sum() == 9 + 4
    assert s.meta["raw_mask_values"] == [0, 100, 200]


def test_jpg_and_bmp(tmp_path, rng, cfg_for):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    g = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (32, 1))
    Image.fromarray(np.stack([g] * 3, -1)).save(tmp_path / "images" / "a.JPG", quality=90)  # grey as RGB JPEG
    Image.fromarray(g).save(tmp_path / "images" / "b.bmp")
    Image.fromarray(blob_mask(32, 32, 1, 1) * 255).save(tmp_path / "masks" / "a.bmp")
    Image.fromarray(blob_mask(32, 32, 9, 9)).save(tmp_path / "masks" / "b.png")
    d = load_data(cfg_for(tmp_path))
    assert [s.sample_id for s in d.samples] == ["a", "b"]
    assert d.in_channels == 1  # JPEG chroma noise does not make it colour


def test_cases_csv(tmp_path, rng, cfg_for, one_line):
    make_png_set(tmp_path, rng, n=3)
    csv = tmp_path / "cases.csv"
    csv.write_text("case,patient_id\nimg0,P1\nimg1,P1\nimg2,P2\n")
    d = load_data(cfg_for(tmp_path, cases_csv=csv))
    assert [s.case_id for s in d.samples] == ["P1", "P1", "P2"]
    csv.write_text("case,patient_id\nimg0,P1\nimg2,P2\n")
    with pytest.raises(MedsegError) as e:
        load_data(cfg_for(tmp_path, cases_csv=csv))
    one_line(e, "img1.png", "cases.csv")
    with pytest.raises(MedsegError) as e:
        load_data(cfg_for(tmp_path, cases_csv=csv, group_column="subject"))
    one_line(e, "cases.csv", "subject")


# ---------------------------------------------------------------- bad inputs

def _break_missing_mask(root, rng):
    (root / "masks" / "img1.png").unlink()
    return root / "images" / "img1.png"


def _break_missing_image(root, rng):
    (root / "images" / "img1.png").unlink()
    return root / "masks" / "img1.png"


def _break_size(root, rng):
    Image.fromarray(np.zeros((30, 32), np.uint8)).save(root / "masks" / "img1.png")
    return root / "masks" / "img1.png"


def _break_corrupt(root, rng):
    (root / "images" / "img1.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    return root / "images" / "img1.png"


def _break_corrupt_mask(root, rng):
    (root / "masks" / "img1.png").write_bytes(b"nonsense")
    return root / "masks" / "img1.png"


def _break_duplicate(root, rng):
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(root / "images" / "img1.jpg")
    return root / "images" / "img1"


def _break_nan(root, rng):
    (root / "images" / "img1.png").unlink()
    a = rng.normal(size=(32, 32)).astype(np.float32)
    a[3, 3] = np.nan
    tifffile.imwrite(root / "images" / "img1.tif", a)
    return root / "images" / "img1.tif"


BREAKERS = [_break_missing_mask, _break_missing_image, _break_size, _break_corrupt, _break_corrupt_mask,
            _break_duplicate, _break_nan]


@pytest.mark.parametrize("breaker", BREAKERS, ids=lambda f: f.__name__[7:])
def test_bad_file_raises_naming_it_or_is_skipped(tmp_path, rng, cfg_for, one_line, breaker):
    make_png_set(tmp_path, rng, n=3)
    named = breaker(tmp_path, rng)
    with pytest.raises(MedsegError) as e:
        load_data(cfg_for(tmp_path))
    one_line(e, named)
    d = load_data(cfg_for(tmp_path, skip_bad=True))
    assert [s.sample_id for s in d.samples] == ["img0", "img2"]
    assert d.bad and all(str(named) in b["path"] for b in d.bad)
    assert all(b["reason"] and "\n" not in b["reason"] for b in d.bad)


def test_everything_bad_is_still_an_error(tmp_path, rng, cfg_for, one_line):
    make_png_set(tmp_path, rng, n=2)
    for p in (tmp_path / "masks").iterdir():
        p.unlink()
    with pytest.raises(MedsegError) as e:
        load_data(cfg_for(tmp_path, skip_bad=True))
    one_line(e, "images", "skipped")


def test_empty_and_missing_folders(tmp_path, cfg_for, one_line):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "images" / "notes.txt").write_text("x")
    with pytest.raises(MedsegError) as e:
        load_data(cfg_for(tmp_path, skip_bad=True))
    one_line(e, "no images found in", tmp_path / "images")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "images" / "a.png")
    with pytest.raises(MedsegError) as e:
        load_data(cfg_for(tmp_path, masks_dir="labels"))
    one_line(e, tmp_path / "labels")
    with pytest.raises(MedsegError) as e:
        load_data(cfg_for(tmp_path / "nowhere"))
    one_line(e, tmp_path / "nowhere")


def test_without_masks_needs_no_masks_folder(tmp_path, rng, cfg_for):
    make_png_set(tmp_path, rng, n=2)
    for p in (tmp_path / "masks").iterdir():
        p.unlink()
    (tmp_path / "masks").rmdir()
    d = load_data(cfg_for(tmp_path), with_masks=False, progress=True)
    assert len(d.samples) == 2 and all(s.mask is None for s in d.samples)
    assert d.mask_values == []


# ---------------------------------------------------------------- infer_input

def test_infer_input_image_folders(tmp_path, rng, cfg_for):
    make_png_set(tmp_path / "ds", rng, n=2)
    like = cfg_for(tmp_path / "train", input_size=(48, 64), context_slices=2, color="grey",
                   normalize=NormalizeConfig(mode="minmax"), cases_csv=tmp_path / "c.csv")
    cfg = infer_input(tmp_path / "ds", like)
    assert cfg.source == "images" and cfg.root == (tmp_path / "ds").resolve() and cfg.images_dir == "images"
    assert cfg.input_size == (48, 64) and cfg.normalize.mode == "minmax" and cfg.color == "grey"
    assert cfg.cases_csv is None
    d = load_data(cfg, with_masks=False)
    assert len(d.samples) == 2 and d.samples[0].image.shape == (1, 48, 64)
    flat = infer_input(tmp_path / "ds" / "images", like)
    assert flat.source == "images" and len(load_data(flat, with_masks=False).samples) == 2
    one = infer_input(tmp_path / "ds" / "images" / "img1.png", like)
    assert [s.sample_id for s in load_data(one, with_masks=False).samples] == ["img1"]


def test_infer_input_volumes_and_dicom(tmp_path, cfg_for, dicom, one_line):
    import nibabel as nib

    like = cfg_for(tmp_path)
    (tmp_path / "vols").mkdir()
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 2), np.float32), np.eye(4)), tmp_path / "vols" / "a.nii.gz")
    assert infer_input(tmp_path / "vols", like).source == "volumes"
    assert infer_input(tmp_path / "vols" / "a.nii.gz", like).source == "volumes"
    dicom(tmp_path / "dcm" / "s1" / "x.dcm", np.zeros((4, 4)), "1.2")
    assert infer_input(tmp_path / "dcm", like).source == "siim"
    (tmp_path / "empty").mkdir()
    with pytest.raises(MedsegError) as e:
        infer_input(tmp_path / "empty", like)
    one_line(e, "empty")
    with pytest.raises(MedsegError) as e:
        infer_input(tmp_path / "missing", like)
    one_line(e, "missing")


def test_only_the_cases_asked_for_are_loaded_and_a_split_part_that_went_is_one_line(tmp_path, rng, cfg_for, one_line):
    from medseg import runfolder as runfs
    from medseg.config import Config

    make_png_set(tmp_path / "a", np.random.default_rng(1), fg=1)
    every = load_data(cfg_for(tmp_path / "a"))
    ids = sorted({s.case_id for s in every.samples})
    some = load_data(cfg_for(tmp_path / "a"), only=ids[1:3])
    assert [s.sample_id for s in some.samples] == [s.sample_id for s in every.samples if s.case_id in ids[1:3]]
    # a run whose validation cases are no longer in its data: one line naming split.json
    run = tmp_path / "run"
    run.mkdir()
    runfs.write_json(run / runfs.SPLIT, {"train": ids[:1], "val": ["gone"]})
    cfg = Config(data=cfg_for(tmp_path / "a"))
    with pytest.raises(MedsegError) as e:
        runfs.load_split_part(run, cfg)
    one_line(e, "split.json", "'val'")
