"""k-fold experiments: grouped stratified folds, out-of-fold predictions, OOF tuning, fold ensembles, resume."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from medseg import runfolder as runfs
from medseg.commands.experiment import evaluate_experiment, fit_experiment
from medseg.commands.predict import predict_run
from medseg.config import config_from_dict
from medseg.data import load_data
from medseg.data.arrays import stack_part
from medseg.data.folds import make_folds
from medseg.inference import run_probs
from tests.conftest import make_blob_folder, tiny_config, write_config

pytestmark = pytest.mark.slow


def test_folds_partition_the_groups_and_spread_empty_cases():
    rng = np.random.default_rng(0)
    case_ids, positive = [], []
    for c in range(40):
        n = int(rng.integers(1, 4))  # a patient with 1-3 images
        pos = c % 4 != 0
        case_ids += [f"p{c:02d}"] * n
        positive += [pos and (j == 0 or rng.random() < 0.5) for j in range(n)]
    folds = make_folds(case_ids, positive, 5, seed=3)
    flat = [c for f in folds for c in f]
    assert sorted(flat) == sorted(set(case_ids)) and len(flat) == len(set(flat))  # each patient in exactly one fold
    empty = {c for c in set(case_ids) if not any(p for cc, p in zip(case_ids, positive) if cc == c)}
    per_fold = [len(set(f) & empty) for f in folds]
    assert max(per_fold) - min(per_fold) <= 1 and max(map(len, folds)) - min(map(len, folds)) <= 1
    assert make_folds(case_ids, positive, 5, seed=3) == folds and make_folds(case_ids, positive, 5, seed=4) != folds


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("exp")
    data = make_blob_folder(tmp / "d", n=18)
    cfg = tiny_config(data, tmp / "runs", name="e", train__epochs=2, schedule__warmup_epochs=0,
                      split={"mode": "holdout", "val_fraction": 0.2, "test_fraction": 0.17})
    return fit_experiment(config_from_dict(cfg), 3, progress=False), data


def test_out_of_fold_predictions_cover_every_case_once_from_a_model_that_did_not_see_it(experiment):
    exp, data = experiment
    exp, doc = runfs.open_experiment(exp)
    assert [f["status"] for f in doc["folds"]] == ["done"] * 3
    loaded = load_data(runfs.load_run_config(runfs.fold_dir(exp, 0)).data)
    pool = {s.sample_id for s in loaded.samples if s.case_id not in set(doc["test"])}
    seen = []
    for f in doc["folds"]:
        run = runfs.fold_dir(exp, f["fold"])
        split = runfs.read_json(run / runfs.SPLIT)
        ids, probs = runfs.load_oof(exp, ("identity",), [f["fold"]])
        assert not set(ids) & set(split["train"]) and set(ids) == set(split["val"]) == set(f["val"])
        assert not set(split["test"]) & set(ids) and sorted(split["test"]) == sorted(doc["test"])
        cfg, state = runfs.load_run_config(run), runfs.load_state(run)
        part = stack_part(loaded, f["val"])
        net, _ = runfs.load_network(run, cfg, 1)
        assert [m["sample_id"] for m in part.meta] == ids
        assert np.abs(run_probs(net, part.images, cfg, state) - probs).max() <= 1e-3  # stored as float16
        seen += ids
    assert sorted(seen) == sorted(pool)  # every training-pool case exactly once
    cases = list(csv.DictReader(open(exp / runfs.CASES_CSV)))
    assert sorted(r["case"] for r in cases) == sorted(pool) and {r["fold"] for r in cases} == {"0", "1", "2"}


def test_oof_tuning_keeps_a_rule_only_when_it_wins_out_of_fold(experiment):
    exp, _ = experiment
    pp = runfs.read_json(exp / runfs.POSTPROCESS)
    honest = pp["honest"]
    assert len(honest["per_fold"]) == 3 and pp["where"] == "out-of-fold" and pp["tta_sets"]
    raw_rule = {"threshold": 0.5, "min_area": 0, "keep_largest": False, "min_score": 0.0, "tta": []}
    kept = pp["chosen"] != raw_rule
    assert kept == (honest["ci_low"] > 0 and honest["gain"] >= 0.005 and pp["gain"] >= 0.005)
    assert pp["chosen"] == (pp["candidate"] if kept else raw_rule)
    summary = runfs.read_json(exp / runfs.SUMMARY)
    assert summary["leave_one_fold_out"]["tuned_dice"] == pytest.approx(honest["tuned_dice"])
    assert (exp / runfs.REPORT_HTML).is_file() and "Leave-one-fold-out" in (exp / runfs.REPORT_MD).read_text()


def test_an_ensemble_of_one_run_is_that_run_and_an_experiment_averages_its_folds(experiment, tmp_path):
    exp, data = experiment
    fold0 = runfs.fold_dir(exp, 0)
    alone = predict_run(fold0, data / "images", tmp_path / "alone", raw=True)
    one = predict_run([fold0], data / "images", tmp_path / "one", raw=True)
    for p in (alone / "probs").iterdir():
        assert np.array_equal(np.asarray(Image.open(p)), np.asarray(Image.open(one / "probs" / p.name)))
    ens = predict_run(exp, data / "images", tmp_path / "ens", raw=True)
    folds = [predict_run(runfs.fold_dir(exp, k), data / "images", tmp_path / f"f{k}", raw=True) for k in range(3)]
    name = sorted(p.name for p in (ens / "probs").iterdir())[0]
    mean = np.mean([np.asarray(Image.open(f / "probs" / name)).astype(float) / 65535 for f in folds], axis=0)
    got = np.asarray(Image.open(ens / "probs" / name)).astype(float) / 65535
    assert np.abs(got - mean).max() <= 2e-4  # bf16 batch effects and 16-bit PNG rounding
    assert json.loads((ens / "prediction.json").read_text())["members"] == [str(runfs.fold_dir(exp, k)) for k in range(3)]


def test_evaluate_an_experiment_on_its_test_cases(experiment):
    exp, _ = experiment
    s = evaluate_experiment(exp, progress=False)
    assert [m["model"] for m in s["models"]][:4] == ["fold-0", "fold-1", "fold-2", "ensemble"] and len(s["paired_vs_ensemble"]) == 3
    assert s["models"][3]["n_cases"] == len(runfs.read_json(exp / runfs.EXPERIMENT)["test"])
    assert (exp / runfs.EVALUATIONS / "test" / runfs.SUMMARY_NAME).is_file()


def test_compare_accepts_experiments(experiment, tmp_path):
    import shutil

    from medseg.commands.compare import compare_runs

    exp, _ = experiment
    copy = tmp_path / "e-copy"
    shutil.copytree(exp, copy)
    result = compare_runs([exp, copy], resamples=200)
    assert result["paired"]["pairs"][0]["mean_diff"] == 0.0 and result["metrics"][0]["n_cases"] > 0


def test_a_killed_experiment_resumes_at_the_fold_and_step(tmp_path):
    data = make_blob_folder(tmp_path / "d", n=16)
    path = write_config(tmp_path / "c.yaml", tiny_config(data, tmp_path / "runs", name="k", train__epochs=3, schedule__warmup_epochs=0))
    env = {**os.environ, "MEDSEG_KILL_AT_STEP": "4"}
    killed = subprocess.run([sys.executable, "-m", "medseg.cli", "fit", str(path), "--folds", "2", "--no-progress"], capture_output=True,
                            text=True, env=env)
    assert killed.returncode == 137, killed.stderr[-2000:]
    exp = tmp_path / "runs" / "k"
    doc = runfs.read_json(exp / runfs.EXPERIMENT)
    assert [f["status"] for f in doc["folds"]] == ["pending", "pending"]
    before = runfs.read_csv(runfs.fold_dir(exp, 0) / runfs.EPOCHS_CSV)
    assert before and (runfs.fold_dir(exp, 0) / runfs.LAST_CKPT).is_file()
    resumed = subprocess.run([sys.executable, "-m", "medseg.cli", "fit", "--resume", str(exp), "--no-progress"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    doc = runfs.read_json(exp / runfs.EXPERIMENT)
    assert [f["status"] for f in doc["folds"]] == ["done", "done"] and (exp / runfs.POSTPROCESS).is_file()
    after = runfs.read_csv(runfs.fold_dir(exp, 0) / runfs.EPOCHS_CSV)
    assert [r["train_seconds"] for r in after[: len(before)]] == [r["train_seconds"] for r in before]  # continued, not restarted
    assert "resuming from checkpoints/last.ckpt" in (runfs.fold_dir(exp, 0) / runfs.TRAIN_LOG).read_text()


def test_siim_submission_from_an_ensemble_round_trips(tmp_path):
    from medseg.data.rle import rle_decode, rle_encode
    from tests.data.conftest import write_dicom

    root = tmp_path / "dicom"
    rng = np.random.default_rng(1)
    rows = []
    for i in range(10):
        px = rng.integers(0, 200, (64, 64)).astype(np.uint16)
        m = np.zeros((64, 64), np.uint8)
        if i % 2:
            m[20:30, 25:40] = 1
            px[m == 1] += 600
        uid = f"1.2.3.{i}"
        write_dicom(root / f"{uid}.dcm", px, uid, patient=f"P{i}")
        rows.append((uid, rle_encode(m)))
    with open(tmp_path / "train-rle.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ImageId", " EncodedPixels"])
        w.writerows(rows)
    cfg = tiny_config(root, tmp_path / "runs", name="s", train__epochs=2, schedule__warmup_epochs=0,
                      data={"source": "siim", "root": str(root), "rle_csv": str(tmp_path / "train-rle.csv"), "input_size": [64, 64]})
    exp = fit_experiment(config_from_dict(cfg), 2, progress=False)
    out = predict_run(exp, root, tmp_path / "out")
    with open(out / "submission.csv") as f:
        sub = list(csv.reader(f))[1:]
    assert sorted(u for u, _ in sub) == sorted(u for u, _ in rows)
    for uid, enc in sub:
        assert np.array_equal(rle_decode(enc, 64, 64).astype(bool), np.asarray(Image.open(out / "masks" / f"{uid}.png")) > 0)


def test_the_keep_rule_needs_an_out_of_fold_gain_whose_ci_excludes_zero():
    from medseg.commands.experiment import keep_decision

    rng = np.random.default_rng(0)
    raw = list(rng.uniform(0.3, 0.7, 200))
    better = [r + 0.05 + rng.normal(0, 0.02) for r in raw]
    assert keep_decision(0.06, raw, better, 0.005)["keep"]
    # the same in-sample gain, but out of fold the rule is noise around zero: not kept
    noise = [r + rng.normal(0, 0.05) for r in raw]
    d = keep_decision(0.06, raw, noise, 0.005)
    assert not d["keep"] and d["ci_low"] < 0 < d["ci_high"]
    assert not keep_decision(0.002, raw, better, 0.005)["keep"]  # too small where it was chosen
    tiny = [r + 0.001 for r in raw]
    assert not keep_decision(0.06, raw, tiny, 0.005)["keep"]  # real but below min_gain
