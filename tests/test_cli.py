"""Bad input through the CLI: exit code 2, one line naming the file or key, nothing written."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.conftest import make_blob_folder, tiny_config, write_config


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "medseg.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def _one_error_line(proc) -> str:
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def _break(kind: str, data):
    if kind == "unmatched":
        Image.fromarray(np.zeros((64, 64), np.uint8)).save(data / "images" / "orphan.png")
        return "orphan.png"
    if kind == "size":
        Image.fromarray(np.zeros((32, 64), np.uint8)).save(data / "masks" / "case001.png")
        return "case001.png"
    if kind == "corrupt":
        (data / "images" / "case002.png").write_bytes(b"\x89PNG not really")
        return "case002.png"
    if kind == "empty":
        for f in (data / "images").iterdir():
            f.unlink()
        return "images"
    raise AssertionError(kind)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["unmatched", "size", "corrupt", "empty"])
def test_bad_data_exits_2_with_one_line_and_writes_nothing(tmp_path, kind):
    data = make_blob_folder(tmp_path / "data", n=8)
    name = _break(kind, data)
    cfg = write_config(tmp_path / "c.yaml", tiny_config(data, tmp_path / "runs"))
    line = _one_error_line(_cli("fit", cfg, "--no-progress"))
    assert name in line
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.parametrize(
    "override, key",
    [("train.epoch=3", "train.epoch"), ("optim.lr=-0.1", "optim.lr"), ("schedule.warmup_epochs=9", "schedule.warmup_epochs")],
)
@pytest.mark.slow
def test_config_typos_exit_2(tmp_path, override, key):
    data = make_blob_folder(tmp_path / "data", n=8)
    cfg = write_config(tmp_path / "c.yaml", tiny_config(data, tmp_path / "runs"))
    line = _one_error_line(_cli("fit", cfg, "--set", override))
    assert key in line
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_skip_bad_lists_skipped_files(tmp_path):
    data = make_blob_folder(tmp_path / "data", n=12)
    _break("corrupt", data)
    cfg = write_config(tmp_path / "c.yaml", tiny_config(data, tmp_path / "runs", train__epochs=1, schedule__warmup_epochs=0))
    proc = _cli("fit", cfg, "--no-progress", "--set", "data.skip_bad=true")
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    bad = json.loads((tmp_path / "runs" / "t" / "bad_files.json").read_text())
    assert len(bad) == 1 and "case002.png" in bad[0]["path"]


@pytest.mark.slow
def test_missing_run_and_nonempty_predict_output(tmp_path):
    line = _one_error_line(_cli("evaluate", tmp_path / "nope"))
    assert "nope" in line
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    line = _one_error_line(_cli("metrics", tmp_path, tmp_path, "--empty", "sometimes"))
    assert "empty" in line


def test_help_lists_every_verb():
    out = _cli("--help").stdout
    for verb in ("fit", "evaluate", "predict", "config", "metrics", "demo", "compare", "doctor", "report", "plan", "augment-preview"):
        assert verb in out
