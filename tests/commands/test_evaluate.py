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


@pytest.mark.slow
def test_checkpoint_last_scores_the_last_weights_beside_the_run(run, tmp_path):
    import shutil

    import torch

    copy = tmp_path / run.name
    shutil.copytree(run, copy)
    cfg = runfs.load_run_config(copy)
    val = runfs.load_split_part(copy, cfg)
    own = (copy / runfs.SUMMARY).read_bytes()
    # untouched: the last weights reproduce the last epoch's reported validation Dice
    s = evaluate_run(copy, progress=False, checkpoint="last")
    epochs = runfs.read_csv(copy / runfs.EPOCHS_CSV)
    assert s["checkpoint"] == runfs.LAST_CKPT and s["epoch"] == int(epochs[-1]["epoch"]) and "best_epoch" not in s
    assert s["training_reported"]["epoch"] == s["epoch"] and s["training_reported"]["match"]
    assert runfs.read_json(copy / runfs.EVALUATIONS / "val-last" / runfs.SUMMARY_NAME)["dice"] == s["dice"]
    assert (copy / runfs.SUMMARY).read_bytes() == own
    # last.ckpt given other weights (the output bias pushed down): evaluate must score those, not best.ckpt's
    ckpt = torch.load(copy / runfs.LAST_CKPT, weights_only=True)
    bias = [k for k, v in ckpt["state_dict"].items() if k.startswith("net.") and k.endswith("bias")][-1]
    ckpt["state_dict"][bias] = ckpt["state_dict"][bias] - 1.5
    torch.save(ckpt, copy / runfs.LAST_CKPT)
    s2 = evaluate_run(copy, progress=False, checkpoint="last")
    net, _ = runfs.load_network(copy, cfg, 1, "last")
    probs = run_probs(net, val.images, cfg, runfs.load_state(copy))
    assert s2["dice"] == pytest.approx(_dice(probs, val.masks, 0.5), abs=1e-12)
    best_net, _ = runfs.load_network(copy, cfg, 1)
    assert not np.allclose(probs, run_probs(best_net, val.images, cfg, runfs.load_state(copy)))
    assert not s2["training_reported"]["match"]  # what the CLI turns into exit 2
    assert s2["written_to"] == str(copy / runfs.EVALUATIONS / "val-last-2")  # beside the first, never over it
    with pytest.raises(Exception, match="checkpoint must be one of best, last"):
        evaluate_run(copy, progress=False, checkpoint="worst")
