"""The on-disk cache (`medseg.data.cache`): same samples as memory, read on use, kill-safe, redone when a file changes."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medseg.config import NormalizeConfig
from medseg.data.cache import ContextStack, DiskStore, LazyArray, StoredArray, context_image
from medseg.data.rle import rle_encode
from medseg.data.sources import load_data
from medseg.errors import MedsegError
from tests.conftest import make_blob_folder


def assert_same_samples(a, b):
    """Two LoadedData hold the same samples: ids, cases, meta, and arrays value for value."""
    assert [s.sample_id for s in a.samples] == [s.sample_id for s in b.samples]
    assert [s.case_id for s in a.samples] == [s.case_id for s in b.samples]
    assert (a.in_channels, a.mask_values, a.modality, a.source) == (b.in_channels, b.mask_values, b.modality, b.source)
    assert a.volumes == b.volumes and a.bad == b.bad
    for x, y in zip(a.samples, b.samples):
        assert x.meta == y.meta
        assert x.image.shape == y.image.shape and x.image.dtype == y.image.dtype
        np.testing.assert_array_equal(np.asarray(x.image), np.asarray(y.image))
        if x.mask is None:
            assert y.mask is None
        else:
            np.testing.assert_array_equal(np.asarray(x.mask), np.asarray(y.mask))


@pytest.fixture
def blobs(tmp_path):
    return make_blob_folder(tmp_path / "data", n=8, size=48)


def test_images_from_the_cache_equal_memory_and_are_read_on_use(blobs, tmp_path, cfg_for):
    cfg = cfg_for(blobs, input_size=(32, 32))
    memory = load_data(cfg)
    cached_cfg = cfg.model_copy(update={"cache_dir": tmp_path / "cache"})
    store = DiskStore(cached_cfg.cache_dir, cached_cfg, True)
    first = load_data(cached_cfg, store=store)
    assert (store.built, store.reused) == (8, 0)
    assert_same_samples(memory, first)
    assert all(isinstance(s.image, LazyArray) and isinstance(s.mask, LazyArray) for s in first.samples)
    again = DiskStore(cached_cfg.cache_dir, cached_cfg, True)
    second = load_data(cached_cfg, store=again)
    assert (again.built, again.reused) == (0, 8)
    assert_same_samples(memory, second)
    # what consumers do with a sample's arrays works on the lazy ones
    s, m = second.samples[1], memory.samples[1]
    assert s.image.mean() == m.image.mean() and bool(s.mask.any()) == bool(m.mask.any())
    np.testing.assert_array_equal(s.mask > 0, m.mask > 0)
    np.testing.assert_array_equal(s.image[0, 3:5], m.image[0, 3:5])
    np.testing.assert_array_equal(np.maximum(s.image, 0.5), np.maximum(m.image, 0.5))
    np.testing.assert_array_equal(np.stack([x.image for x in second.samples]), np.stack([x.image for x in memory.samples]))
    # load_data picks the cache from data.cache_dir by itself
    assert_same_samples(memory, load_data(cached_cfg))


def test_grey_image_in_an_rgb_set_is_repeated_on_read(tmp_path, cfg_for):
    root = make_blob_folder(tmp_path / "d", n=3, size=40)
    rgb = np.random.default_rng(1).integers(0, 255, size=(40, 40, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(root / "images" / "case001.png")
    cfg = cfg_for(root)
    memory = load_data(cfg)
    cached = load_data(cfg.model_copy(update={"cache_dir": tmp_path / "c"}))
    assert memory.in_channels == cached.in_channels == 3
    assert_same_samples(memory, cached)
    assert cached.samples[0].image.shape == (3, 32, 32)


def _volume_pair(root, name, rng, Z=6):
    root.mkdir(parents=True, exist_ok=True)
    img = rng.normal(size=(48, 32, Z)).astype(np.float32)
    lab = np.zeros((48, 32, Z), np.uint8)
    lab[10:20, 5:12, 1:3] = 1
    aff = np.diag([0.8, 0.6, 3.0, 1.0])
    nib.save(nib.Nifti1Image(img, aff), root / f"{name}_image.nii.gz")
    nib.save(nib.Nifti1Image(lab, aff), root / f"{name}_label.nii.gz")
    return img


@pytest.mark.parametrize("k", [0, 1, 2])
def test_volumes_are_stored_once_and_stacked_at_read_time(tmp_path, rng, cfg_for, k):
    root = tmp_path / "vols"
    img = _volume_pair(root, "a", rng)
    _volume_pair(root, "b", rng, Z=3)
    cfg = cfg_for(root, source="volumes", context_slices=k, input_size=(32, 32))
    memory = load_data(cfg)
    cached_cfg = cfg.model_copy(update={"cache_dir": tmp_path / "cache"})
    cached = load_data(cached_cfg)
    assert_same_samples(memory, cached)
    assert memory.in_channels == 2 * k + 1
    assert all(isinstance(s.image, ContextStack) for s in cached.samples)
    # one image array per volume on disk, whatever k is
    arrays = sorted(p.name for p in (tmp_path / "cache").rglob("*.npy"))
    assert len(arrays) == 4  # 2 volumes x (image, mask)
    # independent check of the stacking: with no normalisation and no resize, slice z of channel j is file slice z-k+j
    raw_cfg = cached_cfg.model_copy(update={"normalize": NormalizeConfig(mode="none"), "input_size": (32, 48)})
    d = load_data(raw_cfg)
    for s in d.samples[:6]:  # volume a, stored RAS+ already: slice z is img[:, :, z].T
        z = s.meta["slice"]
        want = np.stack([img[:, :, min(max(z - k + j, 0), 5)].T for j in range(2 * k + 1)])
        np.testing.assert_array_equal(np.asarray(s.image), want)


def test_context_image_of_memory_and_disk_agree(tmp_path):
    vol = np.random.default_rng(0).normal(size=(5, 2, 4, 3)).astype(np.float32)
    path = tmp_path / "v.npy"
    np.save(path, vol)
    from medseg.data.cache import npy_layout

    stored = StoredArray(path, *npy_layout(path))
    for z in range(5):
        for k in (0, 1, 3):
            a, b = context_image(vol, z, k), context_image(stored, z, k)
            np.testing.assert_array_equal(a, np.asarray(b))
            # channel-major: channel 0's slices z-k..z+k, then channel 1's
            idx = np.clip(np.arange(z - k, z + k + 1), 0, 4)
            np.testing.assert_array_equal(a, np.concatenate([vol[idx, 0], vol[idx, 1]]))


def test_siim_from_the_cache_equals_memory(tmp_path, cfg_for, dicom, rng, monkeypatch):
    root = tmp_path / "dicom"
    uids = ["1.2.3.1", "1.2.3.2"]
    for i, uid in enumerate(uids):
        dicom(root / f"s{i}" / f"{uid}.dcm", rng.integers(0, 4096, size=(32, 40)).astype(np.uint16), uid, patient=f"p{i}")
    m = np.zeros((32, 40), np.uint8)
    m[3:9, 4:12] = 1
    csv = tmp_path / "train-rle.csv"
    csv.write_text(f"ImageId, EncodedPixels\n{uids[0]}, {rle_encode(m)}\n{uids[1]}, -1\n")
    cfg = cfg_for(root, source="siim", rle_csv=csv)
    memory = load_data(cfg)
    cached_cfg = cfg.model_copy(update={"cache_dir": tmp_path / "cache"})
    assert_same_samples(memory, load_data(cached_cfg))
    store = DiskStore(cached_cfg.cache_dir, cached_cfg, True)
    import medseg.data.sources.siim as siim_source

    asked, real = [], siim_source.read_rle_csv
    with monkeypatch.context() as m:
        m.setattr(siim_source, "read_rle_csv", lambda path, rows=True: asked.append(rows) or real(path, rows))
        assert_same_samples(memory, load_data(cached_cfg, store=store))
    assert store.reused == 2
    assert asked == [False]  # every unit restored: the table's ImageIds alone were read, not its rows
    # a changed RLE table changes every mask: every unit is prepared again
    csv.write_text(f"ImageId, EncodedPixels\n{uids[0]}, -1\n{uids[1]}, -1\n")
    store = DiskStore(cached_cfg.cache_dir, cached_cfg, True)
    after = load_data(cached_cfg, store=store)
    assert store.built == 2 and not np.asarray(after.samples[0].mask).any()


def test_restored_meta_shares_equal_values_and_lazy_arrays_pickle(blobs, tmp_path, cfg_for, rng):
    # a SIIM-size set holds a record per image: equal parts are one object, values unchanged
    cfg = cfg_for(blobs, input_size=(32, 32)).model_copy(update={"cache_dir": tmp_path / "cache"})
    load_data(cfg)
    memory = load_data(cfg.model_copy(update={"cache_dir": None}))
    again = load_data(cfg)
    assert_same_samples(memory, again)
    a, b = again.samples[0].meta, again.samples[1].meta
    assert a["resize"] == b["resize"] and a["resize"] is b["resize"]
    assert a["orig_shape"] is b["orig_shape"]
    assert next(iter(a)) is next(iter(b))  # keys too
    assert a["path"] != b["path"]
    # equal .npy headers are parsed once: every image of one size shares its shape tuple
    assert again.samples[0].image._shape is again.samples[1].image._shape
    assert not hasattr(again.samples[0], "__dict__")  # Sample is slotted
    # DataLoader workers get the samples pickled: slotted lazy arrays must come back whole
    import pickle

    vol_root = tmp_path / "vols"
    _volume_pair(vol_root, "v0", rng)
    vcfg = cfg_for(vol_root, source="volumes", context_slices=1, input_size=(16, 16), cache_dir=tmp_path / "vcache")
    vol = load_data(vcfg)
    for s in (again.samples[2], vol.samples[3]):
        back = pickle.loads(pickle.dumps(s))
        for x, y in ((s.image, back.image), (s.mask, back.mask)):
            assert type(x) is type(y) and x.shape == y.shape and x.dtype == y.dtype
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert not hasattr(StoredArray.__new__(StoredArray), "__dict__")


class Killed(BaseException):
    pass


def test_a_killed_build_continues_and_gives_the_same_arrays(blobs, tmp_path, cfg_for, monkeypatch):
    cfg = cfg_for(blobs).model_copy(update={"cache_dir": tmp_path / "cache"})
    put = DiskStore.put
    calls = {"n": 0}

    def dying_put(self, *a, **kw):
        if calls["n"] == 3:
            # killed between writing the arrays and the record of the fourth unit
            out = put(self, *a, **kw)
            (self.units / f"{self._stem(a[0])}.json").unlink()
            raise Killed
        calls["n"] += 1
        return put(self, *a, **kw)

    monkeypatch.setattr(DiskStore, "put", dying_put)
    with pytest.raises(Killed):
        load_data(cfg)
    monkeypatch.setattr(DiskStore, "put", put)
    read = []
    import medseg.data.sources.images as images_source

    real_read = images_source.read_image_2d
    monkeypatch.setattr(images_source, "read_image_2d", lambda p, **kw: read.append(p) or real_read(p, **kw))
    store = DiskStore(cfg.cache_dir, cfg, True)
    resumed = load_data(cfg, store=store)
    assert (store.reused, store.built) == (3, 5)
    assert len(read) == 2 * 5  # only the five unfinished images (and masks) were read again
    clean_cfg = cfg.model_copy(update={"cache_dir": tmp_path / "clean"})
    assert_same_samples(load_data(clean_cfg), resumed)
    for p in (tmp_path / "cache").rglob("*.npy"):
        q = tmp_path / "clean" / p.relative_to(tmp_path / "cache")
        assert p.read_bytes() == q.read_bytes(), p.name
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_a_torn_or_missing_array_is_prepared_again(blobs, tmp_path, cfg_for):
    cfg = cfg_for(blobs).model_copy(update={"cache_dir": tmp_path / "cache"})
    memory = load_data(cfg.model_copy(update={"cache_dir": None}))
    load_data(cfg)
    arrays = sorted((tmp_path / "cache").rglob("*.image.npy"))
    data = arrays[0].read_bytes()
    arrays[0].write_bytes(data[: len(data) // 2])
    arrays[1].unlink()
    (sorted((tmp_path / "cache").rglob("*.json"))[-1]).write_text("{not json")
    store = DiskStore(cfg.cache_dir, cfg, True)
    assert_same_samples(memory, load_data(cfg, store=store))
    assert store.built == 3 and store.reused == 5


def test_a_changed_source_file_invalidates_its_unit_only(blobs, tmp_path, cfg_for):
    cfg = cfg_for(blobs).model_copy(update={"cache_dir": tmp_path / "cache"})
    load_data(cfg)
    path = blobs / "images" / "case002.png"
    Image.fromarray(np.full((48, 48), 7, np.uint8)).save(path)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    store = DiskStore(cfg.cache_dir, cfg, True)
    after = load_data(cfg, store=store)
    assert (store.built, store.reused) == (1, 7)
    assert_same_samples(load_data(cfg.model_copy(update={"cache_dir": None})), after)
    assert float(np.asarray(after.samples[2].image).std()) == 0.0  # the new, constant image


def test_a_changed_config_gets_its_own_entry(blobs, tmp_path, cfg_for):
    cfg = cfg_for(blobs).model_copy(update={"cache_dir": tmp_path / "cache"})
    a = DiskStore(cfg.cache_dir, cfg, True)
    load_data(cfg, store=a)
    bigger = cfg.model_copy(update={"input_size": (48, 48)})
    b = DiskStore(bigger.cache_dir, bigger, True)
    load_data(bigger, store=b)
    no_masks = DiskStore(cfg.cache_dir, cfg, False)
    assert len({a.entry, b.entry, no_masks.entry}) == 3 and b.built == 8
    # skip_bad does not change what a unit holds: same entry
    assert DiskStore(cfg.cache_dir, cfg.model_copy(update={"skip_bad": True}), True).entry == a.entry
    assert load_data(bigger).samples[0].image.shape == (1, 48, 48)
    assert load_data(cfg).samples[0].image.shape == (1, 32, 32)


def test_cache_dir_that_is_a_file_is_one_line(tmp_path, blobs, cfg_for):
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(MedsegError, match="afile: data.cache_dir is a file"):
        load_data(cfg_for(blobs).model_copy(update={"cache_dir": f}))


def test_arrays_with_objects_are_refused(tmp_path):
    from medseg.data.cache import npy_layout

    p = tmp_path / "o.npy"
    np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="not a plain"):
        npy_layout(p)


def test_npy_layout_agrees_with_numpy_for_every_header_it_has_seen(tmp_path):
    from medseg.data.cache import npy_layout

    arrays = [np.zeros((1, 8, 8), np.float32), np.ones((8, 8), np.uint8), np.zeros((3, 8, 8), np.float32),
              np.arange(6, dtype=np.int16).reshape(2, 3)]
    paths = []
    for i, arr in enumerate(arrays):
        for version in ((1, 0), (2, 0)):  # the same header text behind a 2- and a 4-byte length
            p = tmp_path / f"a{i}-{version[0]}.npy"
            with open(p, "wb") as f:
                np.lib.format.write_array(f, arr, version=version, allow_pickle=False)
            paths.append((p, arr))
    for _ in range(2):  # the second pass answers from the parsed headers
        for p, arr in paths:
            shape, dtype, offset = npy_layout(p)
            assert shape == arr.shape and dtype == arr.dtype and offset == p.stat().st_size - arr.nbytes
            np.testing.assert_array_equal(np.fromfile(p, dtype, offset=offset).reshape(shape), arr)
    assert npy_layout(paths[0][0]) is npy_layout(tmp_path / "a0-1.npy")
    bad = tmp_path / "short.npy"
    bad.write_bytes(paths[0][0].read_bytes()[:9])
    with pytest.raises(ValueError):
        npy_layout(bad)


def test_sample_stack_indexes_like_the_array_it_stands_for(tmp_path):
    from medseg.data.arrays import SampleStack
    from medseg.data.cache import npy_layout

    ref = np.random.default_rng(0).normal(size=(7, 2, 5, 4)).astype(np.float32)
    items = []
    for i in range(7):
        p = tmp_path / f"{i}.npy"
        np.save(p, ref[i])
        items.append(StoredArray(p, *npy_layout(p)))
    stack = SampleStack(items)
    assert stack.shape == ref.shape and len(stack) == 7 and stack.nbytes == ref.nbytes
    for key in [3, np.int64(2), slice(1, 5), slice(None, None, 2), [4, 1, 1], np.array([0, 6]), ref[:, 0, 0, 0] > 0,
                (2, 1), (slice(0, 3), 0), slice(5, 2)]:
        np.testing.assert_array_equal(stack[key], ref[key])
    np.testing.assert_array_equal(np.asarray(stack), ref)
    np.testing.assert_array_equal(np.stack(list(stack)), ref)


def test_validation_from_the_cache_scores_as_from_memory(blobs, tmp_path, cfg_for):
    """The same network on a split part stacked in memory and read from the cache: metrics equal to 1e-6."""
    import torch

    from medseg.data.arrays import SampleStack, stack_part
    from medseg.inference import predict_probs
    from medseg.metrics import MetricContract
    from medseg.metrics.validation import score_validation
    from medseg.models import create_model

    cfg = cfg_for(blobs)
    ids = sorted({s.case_id for s in load_data(cfg).samples})[:6]
    memory = stack_part(load_data(cfg), ids)
    cached = stack_part(load_data(cfg.model_copy(update={"cache_dir": tmp_path / "cache"})), ids)
    assert isinstance(cached.images, SampleStack) and isinstance(memory.images, np.ndarray)
    np.testing.assert_array_equal(cached.masks, memory.masks)
    assert cached.meta == memory.meta
    torch.manual_seed(0)
    net = create_model("unet", 1, channels=[8, 16])
    p_mem = predict_probs(net, memory.images, batch_size=4)
    p_cache = predict_probs(net, cached.images, batch_size=4)
    np.testing.assert_allclose(p_cache, p_mem, rtol=0, atol=1e-6)
    a = score_validation(p_mem, memory.masks, memory.meta, MetricContract())
    b = score_validation(p_cache, cached.masks, cached.meta, MetricContract())
    for key, value in a.image_summary.items():
        if isinstance(value, float):
            assert abs(value - b.image_summary[key]) <= 1e-6 or (np.isnan(value) and np.isnan(b.image_summary[key])), key


@pytest.mark.parametrize("kind", ["images", "volumes"])
def test_masks_stay_on_disk_and_the_sampler_reads_their_foreground_from_the_records(tmp_path, rng, cfg_for, monkeypatch, kind):
    """What the sampler, its audit and fit's checks need (positive or not, foreground pixels) is in each unit's record."""
    from medseg.config import SamplerConfig
    from medseg.data.arrays import SampleStack, stack_part
    from medseg.data.sampling import build_train_sampler, positive_images

    if kind == "images":
        cfg = cfg_for(make_blob_folder(tmp_path / "data", n=8, size=48, empty_every=3))
    else:
        for name in ("a", "b"):
            _volume_pair(tmp_path / "vols", name, rng)
        cfg = cfg_for(tmp_path / "vols", source="volumes", context_slices=1)
    ids = sorted({s.case_id for s in load_data(cfg).samples})
    memory = stack_part(load_data(cfg), ids)
    # a fresh process reading a built cache: the records, not the arrays written a moment ago
    load_data(cfg.model_copy(update={"cache_dir": tmp_path / "cache"}))
    cached_data = load_data(cfg.model_copy(update={"cache_dir": tmp_path / "cache"}))
    reads = []
    real_read = StoredArray.read
    monkeypatch.setattr(StoredArray, "read", lambda self: reads.append(self.path) or real_read(self))
    cached = stack_part(cached_data, ids)
    assert isinstance(cached.masks, SampleStack) and cached.masks.dtype == np.uint8
    want = np.asarray(memory.masks).reshape(len(memory.masks), -1).sum(1)  # independent of the records
    np.testing.assert_array_equal(cached.fg, want)
    np.testing.assert_array_equal(cached.positive, positive_images(memory.masks))
    assert 0 < cached.positive.sum() < len(cached.positive)
    assert cached.foreground_fraction == pytest.approx(float(np.asarray(memory.masks).mean()), rel=1e-12)
    sampler = build_train_sampler(SamplerConfig(positive_share=0.5), cached.positive, batch_size=4, seed=0, epochs=1, num_samples=8)
    assert len(list(sampler)) == 8
    assert reads == []  # nothing above read a mask (or an image)
    np.testing.assert_array_equal(np.asarray(cached.masks), memory.masks)


def test_a_store_that_keeps_no_samples_counts_what_a_full_load_holds(blobs, tmp_path, cfg_for, dicom, rng):
    # `medseg cache` and its builders load only to prepare, check and count
    from medseg.data.sources.base import BadFiles, Sample, SampleTally, finish

    root = tmp_path / "dicom"
    uids = ["1.2.3.1", "1.2.3.2", "1.2.3.3"]
    for i, uid in enumerate(uids):
        dicom(root / f"{uid}.dcm", rng.integers(0, 4096, size=(16, 16)).astype(np.uint16), uid, patient=f"p{i}")
    m = np.zeros((16, 16), np.uint8)
    m[3:9, 4:12] = 1
    csv = tmp_path / "train-rle.csv"
    csv.write_text(f"ImageId,EncodedPixels\n{uids[0]},{rle_encode(m)}\n{uids[1]},-1\n{uids[2]},{rle_encode(m)}\n")
    vol_root = tmp_path / "vols"
    for name in ("v0", "v1"):
        _volume_pair(vol_root, name, rng)
    configs = [cfg_for(blobs, input_size=(32, 32)), cfg_for(root, source="siim", rle_csv=csv, input_size=(16, 16)),
               cfg_for(vol_root, source="volumes", context_slices=1, input_size=(16, 16))]
    for i, cfg in enumerate(configs):
        cfg = cfg.model_copy(update={"cache_dir": tmp_path / f"cache{i}"})
        full = load_data(cfg)
        for _ in range(2):  # prepared now, then restored
            store = DiskStore(cfg.cache_dir, cfg, True, keep_samples=False)
            tally = load_data(cfg, store=store).samples
            assert isinstance(tally, SampleTally) and len(tally) == len(full.samples) > 0, cfg.source
            assert tally.positive == sum(1 for s in full.samples if s.meta["fg_fraction"]) > 0, cfg.source
            assert tally.ids == {s.sample_id for s in full.samples}
    twice = SampleTally()
    for sid in ("a", "b", "a"):
        twice.append(Sample(sample_id=sid, case_id=sid, image=np.zeros((1, 2, 2), np.float32), mask=None))
    with pytest.raises(MedsegError, match="same sample id 'a'"):
        finish(twice, BadFiles(False), tmp_path, "images", volumes={}, in_channels=1, mask_values=[], modality="other")


def test_parallel_builders_hold_their_own_rle_rows_and_make_the_sequential_masks(tmp_path, cfg_for, dicom, rng, monkeypatch):
    # a builder keeps the rows of its own DICOMs; one named other than its ImageId (the UID tag)
    # makes it read the whole table, never a mask from rows it did not hold
    from medseg.data.cache import ShardStore
    from medseg.data.rle import read_rle_csv
    import medseg.data.sources.siim as siim_source

    root = tmp_path / "dicom"
    uids = [f"1.2.3.{i}" for i in range(8)]
    rows, masks = [], {}
    for i, uid in enumerate(uids):
        name = f"renamed{i}" if i == 5 else uid  # found by its SOPInstanceUID tag
        dicom(root / f"{name}.dcm", rng.integers(0, 4096, size=(16, 16)).astype(np.uint16), uid, patient=f"p{i}")
        m = np.zeros((16, 16), np.uint8)
        m[i : i + 4, 2 : 2 + i + 1] = 1
        masks[uid] = m
        rows.append(f"{uid},{rle_encode(m)}")
    csv = tmp_path / "train-rle.csv"
    csv.write_text("ImageId,EncodedPixels\n" + "\n".join(rows) + "\n")
    assert read_rle_csv(csv, keep={uids[0]}) == {uids[0]: [rle_encode(masks[uids[0]])], **{u: None for u in uids[1:]}}
    cfg = cfg_for(root, source="siim", rle_csv=csv, input_size=(16, 16), cache_dir=tmp_path / "cache")
    memory = load_data(cfg.model_copy(update={"cache_dir": None}))
    asked, real = [], siim_source.read_rle_csv
    monkeypatch.setattr(siim_source, "read_rle_csv", lambda path, rows=True, keep=None: asked.append((rows, keep)) or real(path, rows, keep))
    files = sorted(root.glob("*.dcm"))
    built = 0
    for shard in range(3):
        asked.clear()
        store = ShardStore(cfg.cache_dir, cfg, True, shard, 3)
        try:  # as `medseg cache` runs a builder: a shard may own no usable unit (the paths' hashes decide)
            load_data(cfg.model_copy(update={"skip_bad": True}), store=store)
        except MedsegError:
            pass
        owned = {p.stem for p in files if store.owns(str(p))}
        expect = [(False, None)] + ([(True, owned if len(owned) < len(files) else None)] if owned else []) + ([(True, None)] if "renamed5" in owned else [])
        assert asked == expect and store.built == len(owned)
        built += store.built
    assert built == len(files)  # each unit prepared by one builder
    assert_same_samples(memory, load_data(cfg))
    for s in memory.samples:
        np.testing.assert_array_equal(np.asarray(s.mask) > 0, masks[s.sample_id] > 0)
