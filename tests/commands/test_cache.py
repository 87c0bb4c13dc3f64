"""`medseg cache` and the verbs reading their data from the cache (data.cache_dir)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medseg import runfolder as runfs
from medseg.data.cache import DiskStore
from tests.conftest import make_blob_folder, tiny_config, write_config
from tests.test_cli_conventions import cli


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def data_config(tmp_path):
    data = make_blob_folder(tmp_path / "data", n=12, size=48)
    cfg = tiny_config(data, tmp_path / "runs", data__cache_dir=str(tmp_path / "cache"), train__epochs=1)
    return write_config(tmp_path / "cfg.yaml", cfg)


def test_cache_builds_then_reads_back(data_config, tmp_path):
    code, out, err = cli("cache", data_config, "--json", "--no-progress")
    assert code == 0, err
    first = json.loads(out)
    assert (first["units"], first["built"], first["reused"], first["samples"]) == (12, 12, 0, 12)
    assert first["positive_samples"] == 9 and first["disk_bytes"] > 12 * 32 * 32 * 4
    assert str(tmp_path / "cache") in first["entry"]
    code, out, err = cli("cache", data_config, "--json", "--no-progress")
    again = json.loads(out)
    assert code == 0 and (again["built"], again["reused"]) == (0, 12) and again["entry"] == first["entry"]
    assert "12 units (0 prepared now, 12 read back)" in err.replace("\n", " ")
    # --dir puts it elsewhere; --no-masks is another entry (prediction inputs)
    code, out, _ = cli("cache", data_config, "--dir", tmp_path / "other", "--no-masks", "--json", "--no-progress")
    other = json.loads(out)
    assert code == 0 and other["built"] == 12 and str(tmp_path / "other") in other["entry"]


def test_a_parallel_build_prepares_each_unit_once_and_writes_what_a_sequential_build_writes(data_config, tmp_path):
    code, out, err = cli("cache", data_config, "--workers", "3", "--json", "--no-progress")
    assert code == 0, err
    par = json.loads(out)
    assert (par["units"], par["built"], par["reused"], par["samples"]) == (12, 12, 0, 12)
    code, out, err = cli("cache", data_config, "--dir", tmp_path / "seq", "--workers", "1", "--json", "--no-progress")
    seq = json.loads(out)
    assert code == 0 and seq["built"] == 12
    a, b = Path(par["entry"]), Path(seq["entry"])
    assert a.name == b.name  # the key does not depend on where the cache is
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()) and len(files) == 1 + 12 * 3
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_a_bad_file_in_a_parallel_build_is_one_line_naming_it(data_config, tmp_path):
    bad = tmp_path / "data" / "images" / "zz_broken.png"
    bad.write_bytes(b"not a png")
    (tmp_path / "data" / "masks" / "zz_broken.png").write_bytes((tmp_path / "data" / "masks").iterdir().__next__().read_bytes())
    code, _, err = cli("cache", data_config, "--workers", "2", "--no-progress")
    assert code == 2 and "zz_broken.png" in one_error_line(err)


def test_cache_refusals_are_one_line(tmp_path, data_config):
    data = make_blob_folder(tmp_path / "d2", n=4, size=32)
    bare = write_config(tmp_path / "bare.yaml", tiny_config(data, tmp_path / "runs"))
    code, _, err = cli("cache", bare, "--no-progress")
    assert code == 2 and "data.cache_dir" in one_error_line(err)
    run = tmp_path / "runs" / "old"
    run.mkdir(parents=True)
    (run / runfs.CONFIG).write_text("{}")
    (run / runfs.STATE).write_text("{}")
    code, _, err = cli("cache", data_config, "--dir", run / "cache", "--no-progress")
    assert code == 2 and "inside the run folder" in one_error_line(err)
    assert not (run / "cache").exists()
    code, _, err = cli("cache", data_config, "--set", "data.cache_dri=/tmp/x", "--no-progress")
    assert code == 2 and "cache_dri" in one_error_line(err)


def test_fit_refuses_a_cache_inside_the_run_it_creates(tmp_path):
    data = make_blob_folder(tmp_path / "data", n=4, size=32)
    cfg = write_config(tmp_path / "c.yaml", tiny_config(data, tmp_path / "runs", data__cache_dir=str(tmp_path / "runs" / "t" / "c")))
    code, _, err = cli("fit", cfg, "--no-progress")
    assert code == 2 and "inside the run folder" in one_error_line(err)
    assert not (tmp_path / "runs").exists()


def test_every_verb_reads_its_data_from_the_cache(data_config, tmp_path, monkeypatch):
    code, _, err = cli("cache", data_config, "--no-progress")
    assert code == 0, err
    counts = {"restore": 0, "put": 0}
    restore, put = DiskStore.restore, DiskStore.put

    def counting_restore(self, *a, **kw):
        out = restore(self, *a, **kw)
        counts["restore"] += out is not None
        return out

    def counting_put(self, *a, **kw):
        counts["put"] += 1
        return put(self, *a, **kw)

    monkeypatch.setattr(DiskStore, "restore", counting_restore)
    monkeypatch.setattr(DiskStore, "put", counting_put)
    code, out, err = cli("fit", data_config, "--no-progress", "--json")
    assert code == 0, err
    run = json.loads(out)["run"]
    assert counts["put"] == 0 and counts["restore"] >= 12
    # the run trained on exactly what memory would have given it
    from pathlib import Path

    from medseg.config import load_config
    from medseg.data import load_data
    from medseg.data.arrays import sample_hashes, stack_part

    memory = load_data(load_config(data_config).data.model_copy(update={"cache_dir": None}))
    split = runfs.read_json(Path(run) / runfs.SPLIT)
    want = sample_hashes(stack_part(memory, split["train"]), stack_part(memory, split["val"]))
    assert runfs.read_json(Path(run) / runfs.DATA_HASHES) == want
    for verb in (["evaluate", run], ["tune", run, "--force"], ["doctor", run]):
        before = dict(counts)
        code, _, err = cli(*verb, *(["--no-progress"] if verb[0] in ("evaluate", "tune") else []))
        assert code == 0, (verb, err)
        assert counts["restore"] > before["restore"] and counts["put"] == before["put"], verb[0]
    # predict reads its input without masks: an entry of its own, prepared by the first predict, read back by the next
    images = tmp_path / "data" / "images"
    before = dict(counts)
    assert cli("predict", run, images, tmp_path / "pred1")[0] == 0
    assert counts["put"] == before["put"] + 12
    assert cli("predict", run, images, tmp_path / "pred2")[0] == 0
    assert counts["put"] == before["put"] + 12 and counts["restore"] == before["restore"] + 12
    assert sorted(p.read_bytes() for p in (tmp_path / "pred1").rglob("*.png")) == \
        sorted(p.read_bytes() for p in (tmp_path / "pred2").rglob("*.png"))
