"""Fuzzing with hypothesis: generated and mutated inputs to every reader of user files.

The readers (images, volumes, DICOM, the RLE CSV), the config loader and `--set`, and the
run-folder readers may return a result or raise medseg's own one-line `MedsegError`; anything
else (a traceback, a numpy warning, a hang) is a failure. The default profile keeps this inside
`make test`'s time; `pytest tests/test_fuzz.py --hypothesis-profile=long` runs 10,000 examples
per target (BENCHMARKS.md §6).
"""

from __future__ import annotations

import io
import json
import tempfile
import warnings
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from medseg import runfolder as runfs
from medseg.config import apply_overrides, config_from_dict, load_config
from medseg.data.readers import read_dicom, read_image_2d, read_volume
from medseg.data.rle import read_rle_csv, rle_decode
from medseg.errors import MedsegError
from tests.data.conftest import write_dicom

FUZZ = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture], deadline=None)


def _only_medseg_errors(fn, *args, **kwargs):
    """Call fn; a MedsegError must be one line; no other exception and no warning may escape."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return fn(*args, **kwargs)
        except MedsegError as e:
            assert "\n" not in str(e).strip(), str(e)
            return None


def _mutate(data: bytes, flips: list[tuple[int, int]], cut: int | None) -> bytes:
    b = bytearray(data)
    for pos, val in flips:
        if b:
            b[pos % len(b)] = val
    return bytes(b[:cut]) if cut is not None else bytes(b)


mutations = st.tuples(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=12),
                      st.one_of(st.none(), st.integers(0, 4000)))


def _png_bytes(seed: int, mode: str) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (24, 20, 3) if mode == "RGB" else (24, 20)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz-seeds")
    nib.save(nib.Nifti1Image(np.random.default_rng(0).normal(size=(3, 8, 8)).astype(np.float32), np.eye(4)), root / "v.nii.gz")
    nrrd.write(str(root / "v.nrrd"), np.random.default_rng(1).normal(size=(8, 8, 3)).astype(np.float32))
    write_dicom(root / "x.dcm", np.random.default_rng(2).integers(0, 4000, (16, 12)).astype(np.uint16), "1.2.3.4")
    return {"nii": (root / "v.nii.gz").read_bytes(), "nrrd": (root / "v.nrrd").read_bytes(), "dcm": (root / "x.dcm").read_bytes(),
            "png_L": _png_bytes(0, "L"), "png_RGB": _png_bytes(1, "RGB")}


def _in_file(suffix: str, data: bytes):
    d = tempfile.mkdtemp()
    p = Path(d) / f"input{suffix}"
    p.write_bytes(data)
    return p


@FUZZ
@given(kind=st.sampled_from(["png_L", "png_RGB"]), mut=mutations, as_mask=st.booleans())
def test_image_reader(seeds, kind, mut, as_mask):
    _only_medseg_errors(read_image_2d, _in_file(".png", _mutate(seeds[kind], *mut)), as_mask=as_mask)


@FUZZ
@given(data=st.binary(max_size=2000), suffix=st.sampled_from([".png", ".jpg", ".tif", ".bmp"]))
def test_image_reader_on_random_bytes(data, suffix):
    _only_medseg_errors(read_image_2d, _in_file(suffix, data))


@FUZZ
@given(kind=st.sampled_from(["nii", "nrrd"]), mut=mutations)
def test_volume_reader(seeds, kind, mut):
    _only_medseg_errors(read_volume, _in_file(".nii.gz" if kind == "nii" else ".nrrd", _mutate(seeds[kind], *mut)))


@FUZZ
@given(mut=mutations)
def test_dicom_reader(seeds, mut):
    _only_medseg_errors(read_dicom, _in_file(".dcm", _mutate(seeds["dcm"], *mut)))


@FUZZ
@given(rle=st.one_of(st.text(alphabet="0123456789 -", max_size=40), st.text(max_size=20)), h=st.integers(0, 40), w=st.integers(0, 40))
def test_rle_decode(rle, h, w):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            m = rle_decode(rle, h, w)
        assert m.shape == (h, w) and set(np.unique(m)) <= {0, 1}
    except ValueError as e:  # the documented refusal; read_rle_csv / the siim source turn it into one line naming the file
        assert "\n" not in str(e)


@FUZZ
@given(text=st.one_of(
    st.text(max_size=300),
    st.lists(st.tuples(st.text(alphabet="abc123._ -", max_size=12), st.text(alphabet="0123456789 -x", max_size=20)), max_size=6).map(
        lambda rows: "ImageId, EncodedPixels\n" + "\n".join(f"{a},{b}" for a, b in rows)),
))
def test_rle_csv_reader(text):
    _only_medseg_errors(read_rle_csv, _in_file(".csv", text.encode("utf-8", "surrogatepass")))


yaml_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12)),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=10), children, max_size=4)),
    max_leaves=12,
)
KEYS = ["name", "seed", "data", "data.source", "data.input_size", "data.normalize.window", "split.mode", "split.val_fraction",
        "model.name", "model.channels", "loss", "loss.bce", "loss.dice.weight", "optim.lr", "schedule.warmup_epochs",
        "train.epochs", "train.devices", "train.precision", "train.budget_minutes", "sampler.crop_size", "eval.contract.empty",
        "postprocess.thresholds", "augment.overrides", "plan.max_side", "track"]


@FUZZ
@given(raw=st.dictionaries(st.sampled_from(KEYS + ["x", "y.z"]), yaml_values, max_size=6))
def test_config_from_generated_mappings(raw):
    nested: dict = {}
    apply_overrides(nested, [f"{k}={json.dumps(v, allow_nan=True)}" for k, v in raw.items()])
    _only_medseg_errors(config_from_dict, nested)


@FUZZ
@given(text=st.text(max_size=400))
def test_config_file_text(text):
    _only_medseg_errors(load_config, _in_file(".yaml", text.encode("utf-8", "surrogatepass")))


@FUZZ
@given(overrides=st.lists(st.text(max_size=40), max_size=4))
def test_set_overrides(overrides):
    def load():
        return config_from_dict(apply_overrides({}, overrides))

    _only_medseg_errors(load)


@pytest.fixture(scope="module")
def run_template(tmp_path_factory):
    from medseg.commands.fit import fit
    from tests.conftest import make_blob_folder, tiny_config

    tmp = tmp_path_factory.mktemp("fuzz-run")
    data = make_blob_folder(tmp / "d", n=8, size=32)
    cfg = tiny_config(data, tmp / "runs", train__epochs=1, schedule__warmup_epochs=0, data__input_size=[32, 32])
    return fit(config_from_dict(cfg), progress=False)


RUN_TARGETS = [runfs.CONFIG, runfs.STATE, runfs.SPLIT, runfs.SUMMARY, runfs.POSTPROCESS, runfs.EPOCHS_CSV, runfs.CASES_CSV, runfs.DATA_HASHES]


@FUZZ
@given(target=st.sampled_from(RUN_TARGETS), content=st.one_of(
    st.binary(max_size=300),
    yaml_values.map(lambda v: json.dumps(v, allow_nan=True).encode()),
    yaml_values.map(lambda v: yaml.safe_dump(v).encode()),
))
def test_run_folder_readers(run_template, tmp_path_factory, target, content):
    import shutil

    from medseg.commands.compare import load_run
    from medseg.doctor.evidence import load_evidence

    run = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp())) / "r"
    shutil.copytree(run_template, run, ignore=shutil.ignore_patterns("*.ckpt", "report_assets", "logs"))
    (run / target).write_bytes(content)
    for reader in (runfs.load_run_config, runfs.load_state, runfs.load_postprocess, load_run, load_evidence,
                   runfs.load_config_leniently):
        _only_medseg_errors(reader, run)
    for lenient in (runfs.optional_json, runfs.optional_dict, runfs.read_csv):
        lenient(run / target)  # lenient readers never raise
    shutil.rmtree(run.parent, ignore_errors=True)
