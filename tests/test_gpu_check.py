"""bench/gpu_check: runs rarely (only when a GPU is lent), so its plumbing is checked here on the CPU.

The dry run drives the same verbs through the real CLI with the same recorders, expecting the
CPU; a verb that ran its network elsewhere, or ran none, must fail the check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_shell_wrapper_parses():
    assert subprocess.run(["bash", "-n", str(ROOT / "bench" / "gpu_check.sh")]).returncode == 0


@pytest.mark.slow
def test_the_gpu_check_dry_run_records_every_verb_on_its_device(tmp_path):
    out = tmp_path / "check"
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--dry-run-cpu", "--n", "12", "--size", "64",
                          "--epochs", "2", "--batch", "4", "--no-options", "--out", str(out)],
                         capture_output=True, text=True, timeout=900, env={**os.environ, "MEDSEG_TCMALLOC": "off"})
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    doc = json.loads((out / "gpu_check.json").read_text())
    assert doc["failures"] == []
    (row,) = doc["runs"]
    assert [v["verb"] for v in row["verbs"]] == ["fit", "evaluate", "predict"]
    assert all(v["rc"] == 0 and v["devices"] == ["cpu"] for v in row["verbs"])
    assert row["train_images_per_s"] > 0 and row["infer_images_per_s"] > 0


def test_the_check_fails_a_verb_that_ran_on_the_cpu_ran_nothing_or_exited_badly():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(ROOT / "bench"))
    ok = {"verb": "fit", "rc": 0, "devices": ["cuda"]}
    assert gpu_check.judge("bf16", [ok], "cuda") == []
    got = gpu_check.judge("bf16", [{**ok, "verb": "evaluate", "devices": ["cpu", "cuda"]}, {**ok, "verb": "predict", "devices": []},
                                   {**ok, "verb": "tune", "rc": 2}], "cuda")
    assert got == ["bf16 evaluate: ran a network on ['cpu', 'cuda'] (expected cuda)", "bf16 predict: ran no network", "bf16 tune: exit 2"]
