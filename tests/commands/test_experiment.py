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
        oof = runfs.open_oof(exp, ("identity",), [f["fold"]])
        ids, probs = oof.ids, oof.rows(range(len(oof)))
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


# ---------------------------------------------------------------------------------------
# Out-of-fold tuning, streamed, against the whole-array computation it replaced


def _fake_experiment(tmp, volumes: bool, reduction: str, min_gain: float = 0.005, k: int = 3):
    """An experiment folder whose folds 'predicted' noisy copies of the truths (specks on normal images), without training.

    Folds take the cases round robin, so the stored OOF rows (fold after fold) interleave the volumes' name order.
    """
    from medseg.config import dump_config

    if volumes:
        from bench.synthetic_sets import write_lits

        root = write_lits(tmp / "lits", 6, side=48, slices=(4, 7))[0].parent
        data = {"source": "volumes", "root": str(root), "input_size": [32, 32], "context_slices": 1, "cache_dir": str(tmp / "cache")}
    else:
        root = make_blob_folder(tmp / "d", n=18, size=32)
        data = {"source": "images", "root": str(root), "input_size": [32, 32]}
    raw = tiny_config(root, tmp / "runs", name="fake", data=data, eval={"batch_size": 2, "contract": {"reduction": reduction}},
                      postprocess={"thresholds": [0.4, 0.5, 0.6], "min_area_fractions": [0.0, 0.004, 0.02], "min_scores": [0.8, 0.95],
                                                   "min_gain": min_gain})
    cfg = config_from_dict(raw)
    loaded = load_data(cfg.data, with_masks=True, progress=False)
    exp = runfs.create_run(tmp / "runs", "fake", subfolders=(runfs.METRICS, runfs.SPLITS))
    (exp / runfs.CONFIG).write_text(dump_config(cfg))
    cases = sorted({s.case_id for s in loaded.samples})
    folds = [cases[i::k] for i in range(k)]
    sets = cfg.postprocess.tta_sets()
    rng = np.random.default_rng(3)
    for i, val in enumerate(folds):
        part = stack_part(loaded, val)
        truth = np.asarray(part.masks).astype(np.float32)
        base = np.clip(0.45 * truth + rng.uniform(0, 0.55, truth.shape), 0, 1)  # stray pixels above 0.5, lesion pixels below
        for j, m in enumerate(part.masks):
            if not np.asarray(m).any() and j % 2 == 0:
                base[j, 3:5, 3:5] = 0.9  # a speck on a normal image: min_area removes it
        ids = [m["sample_id"] for m in part.meta]
        for s, names in enumerate(sets):
            runfs.save_oof(exp, i, names, ids, np.clip(base + rng.normal(0, 0.02 * s, base.shape), 0, 1))
    doc = {"experiment_version": 1, "k": k, "seed": 0, "test": [], "tta_sets": [list(s) for s in sets],
           "folds": [{"fold": i, "run": f"fold-{i}", "val": val, "status": "done"} for i, val in enumerate(folds)]}
    runfs.write_json(exp / runfs.EXPERIMENT, doc)
    return exp, loaded


def _all_rows(oof):
    """Every row of an opened OOF set, in memory: what the whole-array tuning held."""
    return oof.rows(range(len(oof)))


def _whole_array_tuning(exp, loaded) -> dict:
    """What tune_experiment computed before it streamed: every fold's probabilities and masks in memory, searched K+1 times."""
    from medseg.commands.experiment import keep_decision
    from medseg.config import read_yaml
    from medseg.metrics import sweep_cases
    from medseg.metrics.validation import score_postprocessed, score_validation
    from medseg.postprocess import PostProcess, case_dice, tune_over_tta

    exp, doc = runfs.open_experiment(exp)
    cfg = config_from_dict(read_yaml(exp / runfs.CONFIG), exp)
    c, pp = cfg.eval.contract, cfg.postprocess
    sets = [tuple(s) for s in doc["tta_sets"]]
    folds = [f["fold"] for f in doc["folds"]]
    by_id = {s.sample_id: s for s in loaded.samples}

    def oof(fs):
        ids = runfs.open_oof(exp, sets[0], fs).ids
        part = stack_part(loaded, sorted({by_id[i].case_id for i in ids}))
        row = {m["sample_id"]: j for j, m in enumerate(part.meta)}
        idx = [row[i] for i in ids]
        return ids, np.asarray(part.masks)[idx], [part.meta[j] for j in idx], {n: _all_rows(runfs.open_oof(exp, n, fs)) for n in sets}

    def search(fs):
        _, masks, meta, probs = oof(fs)
        by_set = [(n, sweep_cases(probs[n], masks, meta, c)[0]) for n in sets]
        truths = sweep_cases(probs[sets[0]], masks, meta, c)[1]
        return tune_over_tta(by_set, truths, c, pp.thresholds, pp.min_area_fractions, pp.keep_largest, pp.min_gain,
                             min_scores=pp.min_scores, where="out-of-fold")

    full = search(folds)
    raw, tuned, per_fold = [], [], []
    for k in folds:
        rule = PostProcess.from_json(search([f for f in folds if f != k])["chosen"])
        _, masks, meta, probs = oof([k])
        plain, truths = sweep_cases(probs[sets[0]], masks, meta, c)
        ruled = sweep_cases(probs[tuple(rule.tta) or ("identity",)], masks, meta, c)[0]
        r = [case_dice(p >= c.threshold, t, c) for p, t in zip(plain, truths)]
        t_ = [case_dice(rule.apply(p), t, c) for p, t in zip(ruled, truths)]
        raw += r
        tuned += t_
        per_fold.append({"fold": k, "rule": rule.to_json(), "rule_text": rule.describe(), "raw_dice": float(np.nanmean(r)),
                         "tuned_dice": float(np.nanmean(t_)), "n_cases": len(r)})
    honest = {**keep_decision(full["gain"], raw, tuned, pp.min_gain, cfg.seed), "per_fold": per_fold}
    chosen = PostProcess.from_json(full["chosen"]) if honest["keep"] else PostProcess(float(c.threshold))
    ids, masks, meta, probs = oof(folds)
    fold_of = {i: k for k in folds for i in runfs.open_oof(exp, sets[0], [k]).ids}
    scores = score_validation(probs[sets[0]], masks, meta, c, surface=True)
    pp_summary, pp_rows = score_postprocessed(probs[tuple(chosen.tta) or ("identity",)], masks, meta, c, chosen.apply)
    summary = {**scores.summary, "n_folds": len(folds), "soft_dice": scores.soft_dice,
               "postprocessed": {**pp_summary, "rule": chosen.to_json()},
               "leave_one_fold_out": {k: v for k, v in honest.items() if k != "per_fold"}}
    if scores.volume_summary is not None:
        summary["per_volume"] = {**scores.volume_summary, "rows": scores.volume_rows}
    return {"full": full, "honest": honest, "chosen": chosen.to_json(), "summary": summary, "volume_rows": scores.volume_rows,
            "cases": [{**r, "fold": fold_of[r["case"]]} for r in scores.image_rows], "pp_rows": pp_rows}


def _assert_close(got, want, tol, where="") -> None:
    """JSON-like values equal, floats within tol (NaN and None alike: JSON writes NaN as null)."""
    if isinstance(want, float) or isinstance(got, float):
        if want is None or got is None or (isinstance(want, float) and np.isnan(want)):
            assert (got is None or np.isnan(got)) and (want is None or np.isnan(want)), where
        else:
            assert got == pytest.approx(want, abs=tol), where
    elif isinstance(want, dict):
        assert set(got) >= set(want), (where, set(want) - set(got))
        for k in want:
            _assert_close(got[k], want[k], tol, f"{where}.{k}")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), where
        for i, (a, b) in enumerate(zip(got, want)):
            _assert_close(a, b, tol, f"{where}[{i}]")
    else:
        assert got == want, where


def _csv_rows(path) -> list[dict]:
    def num(v):
        try:
            return float(v) if v != "" else None
        except ValueError:
            return v
    with open(path, newline="") as f:
        return [{k: num(v) for k, v in r.items()} for r in csv.DictReader(f)]


def _written(path, rows):
    runfs.write_csv(path, rows)
    return path


@pytest.mark.parametrize("volumes, reduction, min_gain", [(False, "per_image", 0.005), (False, "global", 0.005),
                                                           (True, "per_volume", 0.005), (True, "per_image", 0.005),
                                                           (True, "per_volume", 0.45)])
def test_streamed_oof_tuning_equals_the_whole_array_tuning(tmp_path, monkeypatch, volumes, reduction, min_gain):
    """One pass of per-fold searches, merged, and streamed LOFO and metrics give what K+1 whole-array searches gave.

    Images and LiTS-like volumes from the cache (per-volume and per-image contracts); min_gain 0.45 makes the
    candidate lose out of fold there (the raw prediction is kept). The OOF files are never loaded whole:
    they are read a chunk of whole cases at a time.
    """
    from medseg.commands.experiment import tune_experiment
    from medseg.metrics.validation import CHUNK_BATCHES

    exp, loaded = _fake_experiment(tmp_path, volumes, reduction, min_gain)
    want = _whole_array_tuning(exp, loaded)

    from medseg.data.cache import StoredArray

    loads, reads, whole = [], [], []
    real_load, real_rows, real_read = np.load, runfs.OOFProbs.rows, StoredArray.read
    with monkeypatch.context() as m:
        m.setattr(np, "load", lambda path, *a, **kw: loads.append(str(path)) or real_load(path, *a, **kw))
        m.setattr(StoredArray, "read", lambda self: whole.append(self.path) or real_read(self))
        m.setattr(runfs.OOFProbs, "rows", lambda self, idx: reads.append(list(idx)) or real_rows(self, idx))
        got = tune_experiment(exp, loaded=loaded, force=True)
    n_rows = sum(len(runfs.open_oof(exp, ("identity",), [k])) for k in range(3))
    oof = str(exp / runfs.OOF)
    assert not [p for p in loads + whole if str(p).startswith(oof)]  # no OOF file loaded or read whole
    largest = max(s.meta["n_slices"] for s in loaded.samples) if volumes else CHUNK_BATCHES * 2
    assert max(map(len, reads)) <= largest < n_rows  # a volume, or a few eval batches of images, at a time

    full, honest = want["full"], want["honest"]
    saved = runfs.read_json(exp / runfs.POSTPROCESS)
    assert got["chosen"] == saved["chosen"] == want["chosen"] and got["candidate"] == full["chosen"]
    assert got["reason"] == saved["reason"] and got["candidate_reason"] == full["reason"]
    _assert_close(got["rows"], full["rows"], 1e-12, "rows")
    _assert_close(_csv_rows(exp / runfs.POSTPROCESS_CSV), _csv_rows(_written(tmp_path / "grid.csv", full["rows"])), 1e-12,
                  "postprocess.csv")
    searched = {k: v for k, v in full.items() if k not in ("rows", "chosen", "reason")}
    _assert_close(saved, runfs.jsonable(searched), 1e-12, "postprocess.json")
    _assert_close(saved["honest"], runfs.jsonable(honest), 1e-12, "honest")  # the same cases in the same order: the same bootstrap
    _assert_close(runfs.read_json(exp / runfs.SUMMARY), runfs.jsonable(want["summary"]), 1e-9, "summary.json")
    _assert_close(_csv_rows(exp / runfs.CASES_CSV), _csv_rows(_written(tmp_path / "cases.csv", want["cases"])), 1e-9, "cases.csv")
    _assert_close(_csv_rows(exp / runfs.METRICS / runfs.CASES_PP_NAME), _csv_rows(_written(tmp_path / "pp.csv", want["pp_rows"])), 1e-9,
                  "cases_postprocessed.csv")
    if volumes:
        _assert_close(_csv_rows(exp / runfs.VOLUMES_CSV), _csv_rows(_written(tmp_path / "v.csv", want["volume_rows"])), 1e-9, "volumes.csv")
    assert got["n_cases"] == full["n_cases"] and len(honest["per_fold"]) == 3
    assert honest["keep"] == (min_gain < 0.1) and (got["chosen"] != got["candidate"]) == (min_gain > 0.1)  # both branches


def test_missing_damaged_or_mismatched_oof_files_are_one_line_errors(tmp_path):
    from medseg.commands.experiment import tune_experiment
    from medseg.errors import MedsegError

    exp, loaded = _fake_experiment(tmp_path, False, "per_image")
    flip = exp / runfs.OOF / "identity+hflip"
    ids = runfs.read_json(flip / "fold-1.json")
    runfs.write_json(flip / "fold-1.json", ids[::-1])
    with pytest.raises(MedsegError, match="identity\\+hflip: its samples differ from the plain predictions'"):
        tune_experiment(exp, loaded=loaded, force=True)
    runfs.write_json(flip / "fold-1.json", ids[1:])
    with pytest.raises(MedsegError, match=f"fold-1.json: does not list the {len(ids)} samples of fold-1.npy"):
        tune_experiment(exp, loaded=loaded, force=True)
    runfs.write_json(flip / "fold-1.json", ids)
    data = (flip / "fold-1.npy").read_bytes()
    (flip / "fold-1.npy").write_bytes(data[: len(data) // 2])  # truncated: shorter than its header says
    with pytest.raises(MedsegError, match="fold-1.npy: unreadable"):
        tune_experiment(exp, loaded=loaded, force=True)
    (flip / "fold-1.npy").unlink()
    with pytest.raises(MedsegError, match="fold-1.npy: missing"):
        tune_experiment(exp, loaded=loaded, force=True)
    plain = exp / runfs.OOF / "identity"
    runfs.write_json(plain / "fold-0.json", ["gone", *runfs.read_json(plain / "fold-0.json")[1:]])
    with pytest.raises(MedsegError, match="sample 'gone' is not in the data any more"):
        tune_experiment(exp, loaded=loaded, force=True)
    assert not (exp / runfs.POSTPROCESS).exists()  # nothing written before the files are known good
