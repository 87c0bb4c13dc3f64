"""medseg tune end to end: fit tunes on validation, evaluate scores raw and tuned, predict applies the rule."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from medseg import runfolder as runfs
from medseg.commands.evaluate import evaluate_run
from medseg.commands.fit import fit
from medseg.commands.predict import predict_run
from medseg.config import config_from_dict
from medseg.postprocess import PostProcess
from medseg.runfolder import load_postprocess, load_run_config
from tests.conftest import ChunkTracker, make_blob_folder, tiny_config
from tests.test_cli import _cli, _one_error_line


@pytest.fixture(scope="module")
def tuned_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tune")
    data = make_blob_folder(tmp / "d", n=16, size=64)
    cfg = tiny_config(data, tmp / "runs", train__epochs=2, schedule__warmup_epochs=0,
                      split={"mode": "holdout", "val_fraction": 0.25, "test_fraction": 0.25})
    return fit(config_from_dict(cfg), progress=False), data, tmp


@pytest.mark.slow
def test_fit_tunes_and_evaluate_scores_the_rule_independently(tuned_run):
    run, data, _ = tuned_run
    saved = runfs.read_json(run / "postprocess.json")
    rows = runfs.read_csv(run / "postprocess.csv")
    cfg = load_run_config(run)
    n_gates = len({0.0, *cfg.postprocess.min_scores})
    assert len(rows) == len(cfg.postprocess.thresholds) * len(cfg.postprocess.min_area_fractions) * 2 * n_gates
    assert saved["raw"]["threshold"] == 0.5 and saved["n_cases"] == len(runfs.read_json(run / runfs.SPLIT)["val"])
    pp = load_postprocess(run)
    assert pp == PostProcess.from_json(saved["chosen"])
    summary = runfs.read_json(run / "metrics" / "summary.json")
    # the raw figure stays the contract's and matches the tuning's raw row
    assert summary["dice"] == pytest.approx(saved["raw"]["dice"], abs=1e-9)
    # the post-processed figure, recomputed here from the saved probabilities' rule with numpy
    from medseg.inference import predict_probs
    from medseg.runfolder import load_network
    from medseg.runfolder import load_split_part as load_validation

    val = load_validation(run, cfg)
    net, _ = load_network(run, cfg, 1)
    # the run's precision (bf16 where the CPU has it): its pixels near a threshold differ from float32's
    precision = runfs.read_json(run / runfs.STATE)["precision"]
    probs = predict_probs(net, val.images, cfg.eval.batch_size, precision, "cpu", cfg.train.channels_last, tta=pp.tta)
    dices = []
    for p, m in zip(probs, val.masks):
        pred, t = pp.apply(p), m.astype(bool)
        dices.append(1.0 if not pred.any() and not t.any() else 2 * (pred & t).sum() / (pred.sum() + t.sum()))
    assert summary["postprocessed"]["dice"] == pytest.approx(np.mean(dices), abs=1e-6)
    assert summary["postprocessed"]["dice"] == pytest.approx(saved["best"]["dice"] if saved["gain"] >= saved["min_gain"] else saved["raw"]["dice"], abs=1e-6)


@pytest.mark.slow
def test_tune_refuses_to_overwrite_and_force_replaces(tuned_run):
    run, _, _ = tuned_run
    before = (run / "postprocess.json").read_text()
    r = _cli("tune", str(run), "--no-progress")
    assert r.returncode == 2 and "already tuned" in _one_error_line(r)
    assert (run / "postprocess.json").read_text() == before
    r = _cli("tune", str(run), "--force", "--no-progress", "--set", "postprocess.thresholds=[0.5]", "--set", "postprocess.min_gain=1.0")
    assert r.returncode == 0, r.stderr
    after = json.loads((run / "postprocess.json").read_text())
    assert after["chosen"] == {"threshold": 0.5, "min_area": 0, "keep_largest": False, "min_score": 0.0, "tta": []}  # nothing gains 1.0 Dice
    r = _cli("tune", str(run), "--force", "--set", "train.epochs=3")
    assert r.returncode == 2 and "postprocess" in _one_error_line(r)


def test_evaluate_on_test_split_writes_a_separate_folder(tuned_run):
    run, _, _ = tuned_run
    split = runfs.read_json(run / runfs.SPLIT)
    s = evaluate_run(run, part="test", progress=False)
    assert s["n_cases"] == len(split["test"]) and s["evaluated_on"] == "test split"
    assert (run / "evaluations" / "test" / "summary.json").is_file()
    assert "postprocessed" in s and "training_reported" not in s
    r = _cli("evaluate", str(run), "--split", "train")
    assert r.returncode == 2 and "--split" in _one_error_line(r)


def test_predict_applies_the_rule_unless_raw(tuned_run, tmp_path):
    run, data, _ = tuned_run
    new = tmp_path / "in"
    new.mkdir()
    img = np.full((64, 64), 20, np.uint8)
    img[30:40, 30:40] = 240  # a lesion-like square
    img[5, 5] = 255  # a one-pixel speck
    Image.fromarray(img).save(new / "x.png")
    # the model does predict foreground here, so an empty mask below is the rule's doing
    assert np.array(Image.open(predict_run(run, new, tmp_path / "before", raw=True) / "masks" / "x.png")).any()
    (run / "postprocess.json").write_text(json.dumps({"chosen": {"threshold": 0.5, "min_area": 5000, "keep_largest": False}}))
    out = predict_run(run, new, tmp_path / "pp")
    assert not np.array(Image.open(out / "masks" / "x.png")).any()  # every component is < 5000 px: removed
    assert json.loads((out / "prediction.json").read_text())["postprocess"]["min_area"] == 5000
    raw = predict_run(run, new, tmp_path / "raw", raw=True)
    prob = np.array(Image.open(raw / "probs" / "x.png")).astype(np.float64) / 65535
    assert (np.array(Image.open(raw / "masks" / "x.png")) > 0).sum() == (prob >= 0.5).sum()


def test_predict_follows_a_tta_rule_and_its_gate(tuned_run, tmp_path):
    run, _, _ = tuned_run
    new = tmp_path / "in"
    new.mkdir()
    img = np.full((64, 64), 20, np.uint8)
    img[30:40, 20:44] = 240  # asymmetric, so flipping changes the probabilities
    Image.fromarray(img).save(new / "x.png")
    (run / "postprocess.json").write_text(json.dumps({"chosen": {"threshold": 0.5, "min_area": 0, "keep_largest": False, "min_score": 0.0, "tta": True}}))
    out = predict_run(run, new, tmp_path / "tta")
    assert json.loads((out / "prediction.json").read_text())["tta"] is True
    probs = lambda folder: np.array(Image.open(folder / "probs" / "x.png"))
    plain = predict_run(run, new, tmp_path / "plain", raw=True)
    flipped = predict_run(run, new, tmp_path / "flipped", raw=True, tta=True)
    assert np.array_equal(probs(out), probs(flipped)) and not np.array_equal(probs(out), probs(plain))
    assert np.array(Image.open(out / "masks" / "x.png")).any()  # ungated, the case has foreground
    # a gate above every probability empties the case
    (run / "postprocess.json").write_text(json.dumps({"chosen": {"threshold": 0.5, "min_area": 0, "keep_largest": False, "min_score": 0.999999, "tta": False}}))
    gated = predict_run(run, new, tmp_path / "gated")
    assert not np.array(Image.open(gated / "masks" / "x.png")).any()


@pytest.mark.slow
def test_tune_streams_volume_by_volume_and_chooses_what_the_whole_part_search_chooses(tmp_path, monkeypatch):
    """LiTS-like volumes from the cache, a per-volume contract and two TTA sets: tune holds one volume at a time."""
    import medseg.commands.tune as tune_mod
    from bench.synthetic_sets import write_lits
    from medseg.commands.tune import tune_run
    from medseg.inference import run_prob_sets
    from medseg.metrics import sweep_cases
    from medseg.postprocess import tune_over_tta
    from medseg.runfolder import load_network, load_split_part, load_state

    root = tmp_path / "lits"
    write_lits(root, 6, side=48, slices=(8, 14))
    raw = tiny_config(root, tmp_path / "runs", train__epochs=1, schedule__warmup_epochs=0,
                      data={"source": "volumes", "root": str(root), "input_size": [32, 32], "context_slices": 1,
                            "cache_dir": str(tmp_path / "cache")},
                      model={"name": "unet", "channels": [4, 8], "res_units": 0},
                      split={"mode": "holdout", "val_fraction": 0.34, "test_fraction": 0.0},
                      eval={"batch_size": 2, "contract": {"reduction": "per_volume"}},
                      postprocess={"tta": True, "min_scores": [0.6, 0.9]})
    run = fit(config_from_dict(raw), progress=False)
    cfg, state = load_run_config(run), load_state(run)
    val = load_split_part(run, cfg)
    n_volumes = len({m["volume"] for m in val.meta})
    assert n_volumes >= 2

    calls = ChunkTracker(run_prob_sets)
    monkeypatch.setattr(tune_mod, "run_prob_sets", calls)
    streamed = tune_run(run, force=True, progress=False)
    seen = calls.sizes
    assert calls.alive == [0] * n_volumes  # each volume's sets dropped before the next volume is predicted

    # what tune did before it streamed: every probability of the part under each set, then one search
    net, _ = load_network(run, cfg, state["in_channels"])
    sets = cfg.postprocess.tta_sets()
    whole = []
    for names, probs in zip(sets, run_prob_sets(net, np.asarray(val.images), cfg, state, sets)):
        cases_p, truths = sweep_cases(probs, np.asarray(val.masks), val.meta, cfg.eval.contract)
        whole.append((names, cases_p))
    pp = cfg.postprocess
    want = tune_over_tta(whole, truths, cfg.eval.contract, pp.thresholds, pp.min_area_fractions, pp.keep_largest,
                         pp.min_gain, min_scores=pp.min_scores)

    longest = max(m["n_slices"] for m in val.meta)
    assert len(seen) == n_volumes and max(seen) <= longest and sum(seen) == len(val.meta)  # one volume per call
    assert streamed["n_cases"] == want["n_cases"] == n_volumes
    assert streamed["chosen"] == want["chosen"] and len(streamed["tta_sets"]) == len(want["tta_sets"]) == len(sets) > 1
    for a, b in zip(streamed["tta_sets"], want["tta_sets"]):
        assert a["tta"] == b["tta"] and a["best_dice"] == pytest.approx(b["best_dice"], abs=1e-9)
    assert len(streamed["rows"]) == len(want["rows"])
    for a, b in zip(streamed["rows"], want["rows"]):
        assert {k: v for k, v in a.items() if k != "dice"} == {k: v for k, v in b.items() if k != "dice"}
        assert a["dice"] == pytest.approx(b["dice"], abs=1e-9, nan_ok=True)
    assert streamed["raw"]["dice"] == pytest.approx(want["raw"]["dice"], abs=1e-9)

    # evaluate streams the same way: the raw and the rule's (TTA) probabilities of a volume are gone
    # before the next volume is predicted
    import medseg.commands.evaluate as evaluate_mod
    import medseg.inference as inference_mod

    raw_calls, rule_calls = ChunkTracker(inference_mod.run_probs), ChunkTracker(evaluate_mod.run_probs)
    monkeypatch.setattr(inference_mod, "run_probs", raw_calls)
    monkeypatch.setattr(evaluate_mod, "run_probs", rule_calls)
    monkeypatch.setattr(runfs, "load_postprocess", lambda _: PostProcess(0.5, tta=("identity", "hflip")))  # a TTA rule
    evaluate_run(run, progress=False)
    assert raw_calls.sizes == rule_calls.sizes == seen
    assert raw_calls.alive == rule_calls.alive == [0] * n_volumes
