"""`medseg compare`: config diff, metric table, paired Dice statistics, refusals and reports.

Run folders are written synthetically (config.yaml, metrics/summary.json, metrics/cases.csv);
the statistics are checked against numpy and scipy computed here on the same differences.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import wilcoxon

from medseg import runfolder as runfs
from medseg.commands.compare import compare_runs, flatten_config
from medseg.config import config_from_dict, dump_config
from medseg.metrics.contract import METRICS_VERSION, MetricContract
from medseg.metrics.summary import nanmean


def make_run(
    root: Path, name: str, dice, config: dict | None = None, contract: MetricContract | None = None, cases=None, case_ids=None, volumes=None,
    model: dict | None = None,
) -> Path:
    """A run folder with a resolved config, a summary under `contract`, one cases.csv row per Dice
    and, given `volumes` ({volume: Dice}), a metrics/volumes.csv. `model` replaces the summary's
    record of the checkpoint (best epoch 4)."""
    path = root / name
    (path / "metrics").mkdir(parents=True)
    raw = {"name": name, "output_dir": str(root / f"out-{name}"), **(config or {})}
    (path / runfs.CONFIG).write_text(dump_config(config_from_dict(raw)))
    contract = contract or MetricContract()
    dice = np.asarray(dice, dtype=float)
    cases = cases or [f"case{i:03d}" for i in range(len(dice))]
    case_ids = case_ids or cases
    runfs.write_csv(path / runfs.CASES_CSV, [{"case": c, "case_id": g, "dice": float(d), "iou": float(d) / (2 - float(d))} for c, g, d in zip(cases, case_ids, dice)])
    if volumes is not None:
        runfs.write_csv(path / runfs.VOLUMES_CSV, [{"volume": v, "n_slices": 3, "dice": d} for v, d in volumes.items()])
    summary = {
        "dice": nanmean(dice), "iou": 0.5, "dice_nonempty": 0.6, "fp_rate_empty": 0.1, "lesion_recall": 0.7, "hd95": 3.25,
        "n_cases": len(dice), "contract": contract.model_dump(mode="json"),
        "contract_text": contract.describe(), "metrics_version": METRICS_VERSION,
        **(model or {"checkpoint": "checkpoints/best.ckpt", "best_epoch": 4}),
    }
    runfs.write_json(path / runfs.SUMMARY, summary)
    return path


def _cli(*args, cwd=None):
    env = {**os.environ, "COLUMNS": "250"}  # wide enough that rich does not fold the tables
    return subprocess.run([sys.executable, "-m", "medseg.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env)


def _one_error_line(proc) -> str:
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_mean_ci_and_p_match_numpy_and_scipy(tmp_path):
    rng = np.random.default_rng(1)
    a = rng.uniform(0.3, 0.8, 80)
    b = np.clip(a + rng.normal(0.02, 0.06, 80), 0, 1)
    a[[3, 10]] = np.nan  # NaN on either side drops the pair
    b[[10, 50, 60]] = np.nan
    result = compare_runs([make_run(tmp_path, "A", a), make_run(tmp_path, "B", b)], resamples=4000, seed=7)
    pair = result["paired"]["pairs"][0]

    keep = ~(np.isnan(a) | np.isnan(b))
    d = b[keep] - a[keep]
    assert pair["n"] == d.size == 76 and pair["n_dropped_nan"] == 4
    assert pair["mean_diff"] == pytest.approx(d.mean(), abs=1e-12)
    assert pair["mean_a"] == pytest.approx(a[keep].mean(), abs=1e-12)
    assert pair["p_value"] == pytest.approx(wilcoxon(d).pvalue, rel=1e-12)
    # the same seeded resampling, one resample at a time
    draw = np.random.default_rng(7)
    means = np.array([d[draw.integers(0, d.size, size=d.size)].mean() for _ in range(4000)])
    assert pair["ci_low"] == pytest.approx(np.percentile(means, 2.5), abs=1e-12)
    assert pair["ci_high"] == pytest.approx(np.percentile(means, 97.5), abs=1e-12)
    # and, independently of the draws, close to the normal-theory interval of a mean
    half = 1.96 * d.std() / np.sqrt(d.size)
    assert pair["ci_low"] == pytest.approx(d.mean() - half, abs=0.15 * half)
    assert pair["ci_high"] == pytest.approx(d.mean() + half, abs=0.15 * half)
    # seeded: the same call gives the same interval
    again = compare_runs([tmp_path / "A", tmp_path / "B"], resamples=4000, seed=7)["paired"]["pairs"][0]
    assert (again["ci_low"], again["ci_high"]) == (pair["ci_low"], pair["ci_high"])
    json.dumps(result, allow_nan=False)  # JSON-serialisable as it stands (no NaN here)


@pytest.mark.parametrize(
    "shift, expected",
    [(0.08, "B better"), (-0.08, "A better"), (None, "no detectable difference"), (0.0, "no detectable difference")],
)
def test_verdicts(tmp_path, shift, expected):
    rng = np.random.default_rng(2)
    a = rng.uniform(0.3, 0.7, 40)
    if shift is None:  # noise only: zero-mean differences
        noise = rng.normal(0, 0.05, 40)
        b = a + (noise - noise.mean())
    else:
        b = a + shift + (rng.normal(0, 0.02, 40) if shift else 0.0)
    result = compare_runs([make_run(tmp_path, "A", a), make_run(tmp_path, "B", b)], resamples=2000)
    pair = result["paired"]["pairs"][0]
    assert pair["verdict"] == expected
    assert pair["better"] == {"B better": "B", "A better": "A"}.get(expected)  # unique folder names label the runs
    if expected == "B better":
        assert pair["ci_low"] > 0 and pair["p_value"] < 0.05
    if expected == "A better":
        assert pair["ci_high"] < 0 and pair["p_value"] < 0.05
    if shift == 0.0:  # identical scores: every difference is zero
        assert pair["p_value"] == 1.0 and pair["ci_low"] == pair["ci_high"] == 0.0
    if shift is None:
        assert pair["p_value"] >= 0.05 and pair["ci_low"] < 0 < pair["ci_high"]


def test_clear_difference_needs_p_below_alpha(tmp_path):
    # 5 pairs, all better: the CI excludes 0, but the smallest exact two-sided Wilcoxon p is 0.0625
    a = np.array([0.40, 0.50, 0.55, 0.60, 0.45])
    result = compare_runs([make_run(tmp_path, "A", a), make_run(tmp_path, "B", a + [0.1, 0.2, 0.15, 0.12, 0.18])], resamples=1000)
    pair = result["paired"]["pairs"][0]
    assert pair["ci_low"] > 0
    assert pair["p_value"] == pytest.approx(wilcoxon([0.1, 0.2, 0.15, 0.12, 0.18]).pvalue) and pair["p_value"] > 0.05
    assert pair["verdict"] == "no detectable difference"


def test_config_diff_lists_only_differing_keys_and_pairs(tmp_path):
    rng = np.random.default_rng(3)
    dice = np.linspace(0.2, 0.8, 12)
    configs = [{}, {"optim": {"lr": 0.01}}, {"model": {"channels": [8, 16]}}, {}, {"loss": {"bce": 2.0, "dice": 1.0}}]
    scores = [dice + rng.normal(0, 0.02, 12) for _ in configs]
    runs = [make_run(tmp_path, f"r{i}", s, cfg) for i, (s, cfg) in enumerate(zip(scores, configs))]

    three = compare_runs(runs[:3], resamples=200)
    diff = {d["key"]: d["values"] for d in three["config_diff"]}
    assert diff == {"optim.lr": [0.001, 0.01, 0.001], "model.channels": [[16, 32, 64, 128, 256], [16, 32, 64, 128, 256], [8, 16]]}
    assert three["paired"]["mode"] == "all pairs"
    assert [(p["a"], p["b"]) for p in three["paired"]["pairs"]] == [("r0", "r1"), ("r0", "r2"), ("r1", "r2")]
    assert three["paths"] == [str(r) for r in runs[:3]]
    assert compare_runs([runs[0], runs[3]], resamples=200)["config_diff"] == []  # names/output_dir differ, ignored

    five = compare_runs(runs, resamples=200)
    assert five["paired"]["mode"] == "each vs the first"
    assert [p["b"] for p in five["paired"]["pairs"]] == [r.name for r in runs[1:]]
    assert {d["key"] for d in five["config_diff"]} == {"optim.lr", "model.channels", "loss.bce"}
    assert [m["run"] for m in five["metrics"]] == [r.name for r in runs]
    assert five["metrics"][2]["dice"] == pytest.approx(scores[2].mean())
    assert five["contract_text"] == MetricContract().describe()


def test_per_volume_contract_pairs_volumes_and_notes_dependent_images(tmp_path):
    rng = np.random.default_rng(5)
    dice = rng.uniform(0.3, 0.8, 12)
    groups = [f"vol{i // 3}" for i in range(12)]  # 4 volumes of 3 slices each
    vol = dict(zip(["vol0", "vol1", "vol2", "vol3"], [0.5, 0.6, 0.7, 0.4]))
    per_volume = MetricContract(reduction="per_volume")
    a = make_run(tmp_path, "A", dice, contract=per_volume, case_ids=groups, volumes=vol)
    b = make_run(tmp_path, "B", dice + 0.01, contract=per_volume, case_ids=groups, volumes={k: v + 0.05 for k, v in vol.items()})
    pair = compare_runs([a, b], resamples=500)["paired"]
    assert pair["unit"] == "volume" and pair["pairs"][0]["n"] == 4
    assert pair["pairs"][0]["mean_diff"] == pytest.approx(0.05)

    c = make_run(tmp_path, "C", dice, case_ids=groups)
    d = make_run(tmp_path, "D", dice + rng.normal(0, 0.01, 12), case_ids=groups)
    result = compare_runs([c, d], resamples=500)
    assert result["paired"]["unit"] == "image" and result["paired"]["pairs"][0]["n"] == 12
    assert any("12 images come from 4 cases" in n for n in result["notes"])


def test_flatten_config_dotted_keys():
    assert flatten_config({"a": 1, "b": {"c": [1, 2], "d": {"e": None}, "f": {}}}) == {"a": 1, "b.c": [1, 2], "b.d.e": None, "b.f": {}}


def _refusal_setup(tmp_path, kind):
    dice = np.linspace(0.2, 0.8, 10)
    a = make_run(tmp_path, "A", dice)
    if kind == "cases":
        other = [f"case{i:03d}" for i in range(8)] + ["extra1", "extra2"]
        return [a, make_run(tmp_path, "B", dice, cases=other)], ["B", "2 of its 10 cases", "different cases"]
    if kind == "contract":
        b = make_run(tmp_path, "B", dice, contract=MetricContract(threshold=0.3, empty="nan"))
        return [a, b], ["B", "threshold (0.5 vs 0.3)", "empty (one vs nan)"]
    if kind == "not_a_run":
        (tmp_path / "notes").mkdir()
        return [a, tmp_path / "notes"], ["notes", "not a medseg run folder"]
    if kind == "no_cases":
        b = make_run(tmp_path, "B", dice)
        (b / runfs.CASES_CSV).unlink()
        return [a, b], ["B", "metrics/cases.csv"]
    if kind == "twice":
        return [a, a], ["given twice"]
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["cases", "contract", "not_a_run", "no_cases", "twice"])
def test_cli_refusals_exit_2_with_one_line(tmp_path, kind):
    runs, expected = _refusal_setup(tmp_path, kind)
    line = _one_error_line(_cli("compare", *runs, "--out", tmp_path / "c.md"))
    for text in expected:
        assert text in line
    assert not (tmp_path / "c.md").exists()


@pytest.mark.slow
def test_cli_writes_reports_and_never_overwrites(tmp_path):
    rng = np.random.default_rng(4)
    a = rng.uniform(0.3, 0.7, 30)
    make_run(tmp_path, "A", a)
    make_run(tmp_path, "B", a + 0.1, {"optim": {"lr": 0.01}})
    md, page, js = tmp_path / "out" / "c.md", tmp_path / "c.html", tmp_path / "c.json"
    proc = _cli("compare", "A", "B", "--out", md, "--html", page, "--json-file", js, "--resamples", 1000, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "B better" in proc.stdout and "optim.lr" in proc.stdout and MetricContract().describe() in proc.stdout

    text = md.read_text()
    assert "| optim.lr | 0.001 | 0.01 |" in text and "B better (B)" in text and MetricContract().describe() in text
    assert "model.channels" not in text
    page_text = page.read_text()
    assert page_text.startswith("<!DOCTYPE html>") and "<style>" in page_text and "B better (B)" in page_text
    assert "http" not in page_text and "<script" not in page_text and "<link" not in page_text  # self-contained
    result = json.loads(js.read_text())
    assert result["runs"] == ["A", "B"] and result["paired"]["pairs"][0]["verdict"] == "B better"
    assert result["paired"]["pairs"][0]["mean_diff"] == pytest.approx(0.1)

    before = {p: p.read_text() for p in (md, page, js)}
    for flag, path in (("--out", md), ("--html", page), ("--json-file", js)):
        line = _one_error_line(_cli("compare", "A", "B", flag, path, cwd=tmp_path))
        assert str(path) in line and "already exists" in line
    assert {p: p.read_text() for p in (md, page, js)} == before


def test_metrics_table_says_which_epoch_is_each_runs_model(tmp_path):
    a = np.linspace(0.3, 0.7, 12)
    make_run(tmp_path, "A", a)
    make_run(tmp_path, "B", a, {"train": {"checkpoint": "last"}}, model={"checkpoint": "checkpoints/last.ckpt", "epoch": 7})
    md = tmp_path / "c.md"
    proc = _cli("compare", "A", "B", "--out", md, "--resamples", 200, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    # the metrics table's rows (the paired table's row also starts with "| A |", then "B")
    rows = {line.split("|")[1].strip(): line for line in md.read_text().splitlines()
            if line.split("|")[1:2] in ([" A "], [" B "]) and line.split("|")[2].strip() != "B"}
    assert rows["A"].rstrip().endswith("| best 4 |") and rows["B"].rstrip().endswith("| last 7 |")
    assert "last 7" in proc.stdout and "best 4" in proc.stdout
    assert "| train.checkpoint | best | last |" in md.read_text()


@pytest.mark.slow
def test_real_fit_run_folders(tmp_path):
    from medseg.commands.fit import fit
    from tests.conftest import make_blob_folder, tiny_config

    data = make_blob_folder(tmp_path / "data", n=8)
    runs = [
        fit(config_from_dict(tiny_config(data, tmp_path / "runs", name=name, train__epochs=2, optim__lr=lr)), progress=False)
        for name, lr in (("a", 0.01), ("b", 0.003))
    ]
    result = compare_runs(runs, resamples=500)
    assert [d["key"] for d in result["config_diff"]] == ["optim.lr"]
    pair = result["paired"]["pairs"][0]
    cases_a = runfs.read_csv(runs[0] / runfs.CASES_CSV)
    assert pair["n"] + pair["n_dropped_nan"] == len(cases_a)
    summary_b = runfs.read_json(runs[1] / runfs.SUMMARY)
    assert result["metrics"][1]["dice"] == pytest.approx(summary_b["dice"])
    assert result["contract_text"] == summary_b["contract_text"]
