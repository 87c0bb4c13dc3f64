"""`medseg evaluate --data OTHER` and `--sweep`: scored beside the run, checked against numpy."""

from __future__ import annotations

import numpy as np
import pytest

from medseg import runfolder as runfs
from medseg.commands.evaluate import evaluate_run
from medseg.commands.fit import fit
from medseg.config import config_from_dict
from medseg.data import load_data
from medseg.data.arrays import stack_part
from medseg.inference import run_probs
from tests.conftest import make_blob_folder, tiny_config


def _dice(probs, masks, threshold) -> float:
    out = []
    for p, m in zip(probs, masks):
        pred, t = p >= threshold, m.astype(bool)
        out.append(1.0 if not pred.any() and not t.any() else 2 * (pred & t).sum() / (pred.sum() + t.sum()))
    return float(np.mean(out))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval")
    data = make_blob_folder(tmp / "d", n=12)
    return fit(config_from_dict(tiny_config(data, tmp / "runs", train__epochs=2, schedule__warmup_epochs=0)), progress=False)


@pytest.mark.slow
def test_evaluate_on_other_data_goes_to_its_own_folder_and_scores_every_image(run, tmp_path):
    other = make_blob_folder(tmp_path / "other", n=6, seed=5)
    (tmp_path / "other.yaml").write_text(f"data:\n  root: {other}\n")
    own = {rel: (run / rel).read_bytes() for rel in (runfs.SUMMARY, runfs.CASES_CSV)}
    s = evaluate_run(run, tmp_path / "other.yaml", progress=False)
    folder = run / runfs.EVALUATIONS / "other"
    assert runfs.read_json(folder / runfs.SUMMARY_NAME)["dice"] == s["dice"] and s["n_cases"] == 6
    assert s["evaluated_on"] == str(tmp_path / "other.yaml") and "training_reported" not in s
    assert {rel: (run / rel).read_bytes() for rel in own} == own  # the run's own metrics are untouched
    cfg = runfs.load_run_config(run)
    arrays = stack_part(load_data(cfg.data.model_copy(update={"root": other})), [f"case{i:03d}" for i in range(6)])
    net, _ = runfs.load_network(run, cfg, 1)
    probs = run_probs(net, arrays.images, cfg, runfs.load_state(run))
    assert s["dice"] == pytest.approx(_dice(probs, arrays.masks, 0.5), abs=1e-12)


@pytest.mark.slow
def test_sweep_rows_match_numpy_at_every_threshold(run):
    s = evaluate_run(run, sweep=True, progress=False)
    folder = run / runfs.EVALUATIONS / "val"
    sweep = runfs.read_json(sorted(run.glob(f"{runfs.EVALUATIONS}/val*"))[-1] / runfs.SWEEP_NAME)
    assert folder.is_dir() and [round(r["threshold"], 2) for r in sweep["rows"]] == [round(t, 2) for t in np.arange(0.05, 0.951, 0.05)]
    cfg = runfs.load_run_config(run)
    val = runfs.load_split_part(run, cfg)
    net, _ = runfs.load_network(run, cfg, 1)
    probs = run_probs(net, val.images, cfg, runfs.load_state(run))
    for r in sweep["rows"]:
        assert r["dice"] == pytest.approx(_dice(probs, val.masks, r["threshold"]), abs=1e-12), r["threshold"]
    best = max(sweep["rows"], key=lambda r: r["dice"])
    assert s["threshold_sweep"]["best_value"] == pytest.approx(best["dice"], abs=1e-12)
