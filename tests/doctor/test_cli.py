"""`medseg doctor` on trained runs: table, --json, --no-eval, errors; evidence recomputed from the checkpoint."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from medseg.cli import app

REQUIRED = {"id", "family", "severity", "confidence", "title", "evidence", "why", "fix_key", "fix_value"}

pytestmark = pytest.mark.slow  # every test here reads the 13-training planted-fault fixture


def _run(planted, fault: str) -> Path:
    return Path(next(r["run_dir"] for r in planted["results"] if r["fault"] == fault))


def test_doctor_prints_ranked_table_and_writes_json(planted, tmp_path):
    out = tmp_path / "findings.json"
    res = CliRunner().invoke(app, ["doctor", str(_run(planted, "sampler_share_0")), "--json-file", str(out)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "serious finding" in res.output and "change: sampler.positive_share = 0.5" in res.output
    findings = json.loads(out.read_text())
    assert isinstance(findings, list) and findings and all(REQUIRED <= set(f) for f in findings)
    assert findings[0]["id"] == "sampling.few_positives" and findings[0]["rank"] == 1
    assert [f["rank"] for f in findings] == list(range(1, len(findings) + 1))


def test_doctor_healthy_no_eval(planted):
    run_dir, _ = planted["healthy"]
    res = CliRunner().invoke(app, ["doctor", str(run_dir), "--no-eval"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "no serious findings" in res.output and "(--no-eval): not checked" in res.output


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "medseg.cli", *map(str, args)], capture_output=True, text=True)


def test_doctor_user_errors_are_one_line_exit_2(planted, tmp_path):
    run_dir, _ = planted["healthy"]
    existing = tmp_path / "f.json"
    existing.write_text("keep")
    for args, needle in (([run_dir, "--json-file", existing], "exists"), ([tmp_path], "not a medseg run folder")):
        proc = _cli("doctor", *args)
        lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and needle in lines[0], proc.stderr
    assert existing.read_text() == "keep"


def test_rerun_reproduces_the_runs_own_hard_metrics(planted):
    """The doctor's re-run of the checkpoint equals what `evaluate` wrote at the end of fit."""
    from medseg import runfolder as runfs
    from medseg.doctor.evidence import gather_eval, load_evidence

    run_dir, _ = planted["healthy"]
    ev = load_evidence(run_dir)
    e = gather_eval(ev)
    summary = runfs.read_json(run_dir / runfs.SUMMARY)
    assert e.hard_summary["dice"] == pytest.approx(summary["dice"], abs=1e-6)
    assert e.soft_dice == pytest.approx(summary["soft_dice"], abs=1e-6)
    assert e.best_epoch == summary["best_epoch"] and e.val_ids == sorted(e.val_ids)
    assert len(e.val_ids) == len(ev.split["val"]) and e.mask_values == [0.0, 1.0]


def test_saved_config_breaking_a_cross_field_rule_is_still_diagnosed(planted, tmp_path):
    """Warm-up >= epochs cannot be trained (the validator forbids it) but can be written into a run's config."""
    from medseg.doctor import examine

    run_dir, _ = planted["healthy"]
    copy = shutil.copytree(run_dir, tmp_path / "edited")
    cfg = yaml.safe_load((copy / "config.yaml").read_text())
    cfg["schedule"]["warmup_epochs"] = cfg["train"]["epochs"] + 2
    (copy / "config.yaml").write_text(yaml.safe_dump(cfg))
    ev, findings = examine(copy)
    assert ev.config_error and "warmup_epochs" in ev.config_error and ev.eval is not None
    assert findings[0].id == "optimisation.warmup_too_long" and findings[0].numbers["warmup_share"] > 1


def test_missing_checkpoint_still_checks_the_files(planted, tmp_path):
    from medseg.doctor import examine

    copy = shutil.copytree(_run(planted, "lr_1e-7"), tmp_path / "no_ckpt")
    (copy / "checkpoints" / "best.ckpt").unlink()
    ev, findings = examine(copy)
    assert ev.eval is None and "no checkpoint" in ev.eval_error and any("checkpoint not re-run" in n for n in ev.notes)
    assert findings[0].id == "optimisation.lr_too_low"
