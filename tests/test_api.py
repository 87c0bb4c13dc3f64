"""The Python API: medseg.fit, medseg.load(run).predict on arrays and files, medseg.metrics.score on arrays."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import medseg
from medseg import runfolder as runfs
from medseg.commands.predict import predict_run
from medseg.errors import MedsegError
from medseg.metrics import MetricContract
from tests.conftest import make_blob_folder, tiny_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_and_data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api")
    data = make_blob_folder(tmp / "d", n=12)
    run = medseg.fit(tiny_config(data, tmp / "runs"), train={"epochs": 2}, schedule={"warmup_epochs": 0})
    return run, data


def test_fit_applies_section_overrides(run_and_data):
    run, _ = run_and_data
    cfg = runfs.load_run_config(run)
    assert cfg.train.epochs == 2 and cfg.schedule.warmup_epochs == 0 and runfs.is_finished(run)


def test_predictor_on_arrays_equals_medseg_predict_on_files(run_and_data, tmp_path):
    run, data = run_and_data
    predictor = medseg.load(run)
    # all the files, in medseg predict's order: the same batches (bf16 kernels may differ with the batch size)
    files = sorted((data / "images").iterdir())
    by_cli = predict_run(run, data / "images", tmp_path / "out")
    arrays = [np.asarray(Image.open(f)) for f in files]
    for f, got in zip(files, predictor.predict(arrays)):
        prob_png = np.asarray(Image.open(by_cli / "probs" / f.name)).astype(np.float64) / 65535
        mask_png = np.asarray(Image.open(by_cli / "masks" / f.name)) > 0
        assert got.prob.shape == prob_png.shape and np.abs(got.prob - prob_png).max() <= 1 / 65535 + 1e-7
        assert np.array_equal(got.mask, mask_png)
    one = predictor.predict(files[0])  # a path, alone (a batch of one: bf16 may move a borderline pixel)
    agree = (one.mask == (np.asarray(Image.open(by_cli / "masks" / files[0].name)) > 0)).mean()
    assert one.name == files[0].stem and agree >= 0.999


def test_predictor_rule_options(run_and_data):
    run, data = run_and_data
    predictor = medseg.load(run)
    img = np.asarray(Image.open(sorted((data / "images").iterdir())[1]))
    raw = predictor.predict(img, raw=True)
    assert np.array_equal(raw.mask, raw.prob >= predictor.cfg.eval.contract.threshold)
    high = predictor.predict(img, threshold=0.99)
    assert np.array_equal(high.mask, high.prob >= 0.99)
    with pytest.raises(MedsegError, match="image 0"):
        predictor.predict(np.zeros((4, 4, 7)))


def test_metrics_score_on_arrays_against_numpy():
    rng = np.random.default_rng(0)
    truths = [rng.random((16, 16)) > 0.7 for _ in range(4)] + [np.zeros((16, 16), bool)]
    probs = [np.clip(t * 0.7 + rng.random((16, 16)) * 0.5, 0, 1) for t in truths]
    out = medseg.metrics.score(probs, truths, MetricContract(threshold=0.5))
    dice = []
    for p, t in zip(probs, truths):
        pred = p >= 0.5
        dice.append(1.0 if not pred.any() and not t.any() else 2 * (pred & t).sum() / (pred.sum() + t.sum()))
    assert out["summary"]["dice"] == pytest.approx(np.mean(dice), abs=1e-12) and len(out["rows"]) == 5
