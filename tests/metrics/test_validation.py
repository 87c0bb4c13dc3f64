"""The one validation scorer: training's monitor, evaluate, tune's raw baseline and the doctor agree.

Numbers are checked against an independent numpy Dice as well, so agreement is not only the
scorer agreeing with itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from medseg import runfolder as runfs
from medseg.commands.evaluate import evaluate_run
from medseg.commands.fit import fit
from medseg.commands.tune import tune_run
from medseg.config import config_from_dict
from medseg.doctor.evidence import gather_eval, load_evidence
from medseg.inference import run_probs
from medseg.metrics import MetricContract
from medseg.metrics.validation import image_contract, score_postprocessed, score_validation
from tests.conftest import make_blob_folder, tiny_config

AGREE = 1e-9


def _numpy_dice(probs, masks, threshold=0.5) -> float:
    out = []
    for p, m in zip(probs, masks):
        pred, t = p >= threshold, m.astype(bool)
        out.append(1.0 if not pred.any() and not t.any() else 2 * (pred & t).sum() / (pred.sum() + t.sum()))
    return float(np.mean(out))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("agree")
    data = make_blob_folder(tmp / "d", n=16, size=64)
    cfg = tiny_config(data, tmp / "runs", train__epochs=3, schedule__warmup_epochs=0)
    return fit(config_from_dict(cfg), progress=False)


@pytest.mark.slow
def test_training_evaluate_tune_and_doctor_report_one_number(run):
    summary = runfs.read_json(run / runfs.SUMMARY)
    best = summary["best_epoch"]
    trained = next(r for r in runfs.read_csv(run / runfs.EPOCHS_CSV) if r["epoch"] == best)["val_dice"]
    evaluated = evaluate_run(run)["dice"]
    tuned = tune_run(run, force=True)["raw"]["dice"]
    doctor = gather_eval(load_evidence(run))
    assert abs(trained - evaluated) <= AGREE
    assert abs(tuned - evaluated) <= AGREE
    assert abs(doctor.scores.dice - evaluated) <= AGREE and abs(doctor.hard_summary["dice"] - evaluated) <= AGREE
    assert summary["dice"] == evaluated

    # and the number is the Dice numpy computes from the checkpoint's probabilities
    cfg = runfs.load_run_config(run)
    val = runfs.load_split_part(run, cfg)
    net, _ = runfs.load_network(run, cfg, 1)
    probs = run_probs(net, val.images, cfg, runfs.load_state(run))
    assert evaluated == pytest.approx(_numpy_dice(probs, val.masks), abs=1e-12)


def test_per_volume_contract_scores_volumes_and_falls_back_per_image():
    rng = np.random.default_rng(0)
    masks = np.zeros((6, 16, 16), np.uint8)
    masks[1, 4:8, 4:8] = masks[2, 5:9, 5:9] = masks[4, 2:6, 2:6] = 1
    probs = np.clip(masks * 0.8 + rng.uniform(0, 0.45, masks.shape), 0, 1).astype(np.float32)
    meta = [{"sample_id": f"v{i // 3}_z{i % 3}", "volume": f"v{i // 3}", "slice": i % 3} for i in range(6)]
    contract = MetricContract(reduction="per_volume")
    s = score_validation(probs, masks, meta, contract)
    assert image_contract(contract).reduction == "per_image" and s.image_summary["contract"]["reduction"] == "per_image"
    vols = [(probs[:3], masks[:3]), (probs[3:], masks[3:])]
    assert s.dice == pytest.approx(np.mean([_numpy_dice([p.ravel()], [m.ravel()]) for p, m in vols]), abs=1e-12)
    assert s.image_summary["dice"] == pytest.approx(_numpy_dice(probs, masks), abs=1e-12)
    assert [r["volume"] for r in s.volume_rows] == ["v0", "v1"]


def test_postprocessed_rows_name_their_cases_images_and_volumes():
    """cases_postprocessed.csv pairs with cases.csv by name (not only by position): images by
    sample and case id, volumes of a per-volume contract by volume name."""
    rng = np.random.default_rng(1)
    masks = np.zeros((6, 16, 16), np.uint8)
    masks[0, 4:8, 4:8] = masks[3, 2:9, 5:9] = masks[5, 2:6, 2:6] = 1
    probs = np.clip(masks * 0.7 + rng.uniform(0, 0.5, masks.shape), 0, 1).astype(np.float32)
    meta = [{"sample_id": f"v{i // 3}_z{i % 3}", "case_id": f"p{i}", "volume": f"v{i // 3}", "slice": 2 - i % 3}
            for i in range(6)]
    keep_high = lambda p: p >= 0.6  # noqa: E731 — the "rule": a higher threshold
    _, rows = score_postprocessed(probs, masks, meta, MetricContract(), keep_high)
    image_rows = score_validation(probs, masks, meta, MetricContract()).image_rows
    assert [(r["case"], r["case_id"]) for r in rows] == [(r["case"], r["case_id"]) for r in image_rows]
    assert [r["case_index"] for r in rows] == list(range(6))
    for r, p, m in zip(rows, probs, masks):
        assert r["dice"] == pytest.approx(_numpy_dice([p], [m], threshold=0.6), abs=1e-12)
    _, vol_rows = score_postprocessed(probs, masks, meta, MetricContract(reduction="per_volume"), keep_high)
    assert [(r["case"], r["case_id"]) for r in vol_rows] == [("v0", "v0"), ("v1", "v1")]
    assert vol_rows[1]["dice"] == pytest.approx(_numpy_dice([probs[3:].ravel()], [masks[3:].ravel()], threshold=0.6), abs=1e-12)


def test_only_the_metrics_package_scores():
    """No module outside medseg/metrics calls the per-case metric or its reduction directly."""
    root = Path(__file__).resolve().parents[2] / "medseg"
    callers = []
    for path in root.rglob("*.py"):
        if path.relative_to(root).parts[0] == "metrics":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                if name in ("case_metrics", "summarize", "volume_metrics"):
                    callers.append(f"{path.relative_to(root)}:{node.lineno} {name}")
    assert not callers, callers
