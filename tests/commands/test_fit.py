"""End to end on a synthetic PNG folder: fit -> run folder -> evaluate matches -> resume equality."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from medseg import runfolder as runfs
from medseg.commands.evaluate import evaluate_run
from medseg.commands.fit import fit
from medseg.config import config_from_dict
from tests.conftest import tiny_config, write_config


def _cli(*args, env=None, cwd=None):
    e = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "medseg.cli", *map(str, args)], capture_output=True, text=True, env=e, cwd=cwd)


@pytest.mark.slow
def test_fit_writes_the_run_folder_contract_and_evaluate_matches(blob_data, tmp_path):
    cfg = config_from_dict(tiny_config(blob_data, tmp_path / "runs", train__epochs=3))
    run = fit(cfg, progress=False)
    for rel in (runfs.CONFIG, runfs.FINGERPRINT, runfs.SPLIT, runfs.EPOCHS_CSV, runfs.CASES_CSV, runfs.SUMMARY, runfs.BEST_CKPT, runfs.LAST_CKPT):
        assert (run / rel).is_file(), rel
    epochs = runfs.read_csv(run / runfs.EPOCHS_CSV)
    assert [r["epoch"] for r in epochs] == [0, 1, 2]
    assert all(np.isfinite(r["train_loss"]) for r in epochs)
    summary = json.loads((run / runfs.SUMMARY).read_text())
    assert summary["contract"]["kind"] == "hard" and "contract_text" in summary
    assert summary["training_reported"]["match"], summary["training_reported"]
    fp = json.loads((run / runfs.FINGERPRINT).read_text())
    assert fp["raw_mask_values"] == [0, 255] and fp["n_images"] == 16
    split = json.loads((run / runfs.SPLIT).read_text())
    assert not set(split["train"]) & set(split["val"])
    # the standalone verb recomputes from best.ckpt and must agree to 1e-4
    again = evaluate_run(run, progress=False)
    assert abs(again["dice"] - summary["training_reported"]["dice"]) <= 1e-4
    # a second fit never overwrites the first
    run2 = fit(cfg, progress=False)
    assert run2 != run and run2.name == "t-2"


@pytest.mark.slow
def test_training_learns_the_synthetic_lesions(tmp_path):
    from tests.conftest import make_blob_folder

    data = make_blob_folder(tmp_path / "d", n=32)
    cfg = config_from_dict(tiny_config(data, tmp_path / "runs", train__epochs=12, augment__preset="none", schedule__warmup_epochs=1, model={"name": "unet", "channels": [8, 16, 32], "res_units": 0}))
    run = fit(cfg, progress=False)
    summary = json.loads((run / runfs.SUMMARY).read_text())
    assert summary["dice"] > 0.7, summary["dice"]


@pytest.mark.slow
def test_last_checkpoint_is_the_last_epoch_when_it_is_not_the_best(blob_data, tmp_path):
    # lr 1e-9: the weights barely move, so the validation Dice never beats epoch 0's and only epoch 0 is "best".
    # Lightning 2.6's save_last wrote last.ckpt only at a new best: a resume then replayed from epoch 0.
    cfg = tiny_config(blob_data, tmp_path / "runs", optim={"lr": 1e-9}, train={"epochs": 4, "batch_size": 4, "last_checkpoint_every_s": 0})
    path = write_config(tmp_path / "c.yaml", cfg)
    killed = _cli("fit", path, "--no-progress", env={"MEDSEG_KILL_AT_STEP": "7"})  # 3 steps per epoch: inside epoch 2
    assert killed.returncode == 137, killed.stderr[-2000:]
    run = tmp_path / "runs" / "t"
    rows = runfs.read_csv(run / runfs.EPOCHS_CSV)
    assert [r["epoch"] for r in rows] == [0, 1] and rows[1]["val_dice"] == rows[0]["val_dice"]
    assert torch.load(run / runfs.BEST_CKPT, weights_only=True)["epoch"] == 0
    assert torch.load(run / runfs.LAST_CKPT, weights_only=True)["epoch"] == 1
    resumed = _cli("fit", "--resume", run, "--no-progress")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after = runfs.read_csv(run / runfs.EPOCHS_CSV)
    assert [r["epoch"] for r in after] == [0, 1, 2, 3]
    assert [r["train_seconds"] for r in after[:2]] == [r["train_seconds"] for r in rows]  # epoch 1 was not trained again
    assert torch.load(run / runfs.BEST_CKPT, weights_only=True)["epoch"] == 0
    assert torch.load(run / runfs.LAST_CKPT, weights_only=True)["epoch"] == 3
    last = evaluate_run(run, progress=False, checkpoint="last")
    assert last["epoch"] == 3 and last["training_reported"]["epoch"] == 3 and last["training_reported"]["match"]


@pytest.mark.slow
def test_train_checkpoint_last_makes_the_final_epoch_the_model_of_every_verb(blob_data, tmp_path):
    from medseg.api import Predictor
    from medseg.errors import MedsegError

    # lr 1e-9: no later epoch beats epoch 0 on validation, so "best" would be epoch 0 and "last" is epoch 2
    cfg = tiny_config(blob_data, tmp_path / "runs", optim={"lr": 1e-9},
                      train={"epochs": 3, "batch_size": 4, "checkpoint": "last", "last_checkpoint_every_s": 1e6})
    run = fit(config_from_dict(cfg), progress=False)
    assert not (run / runfs.BEST_CKPT).exists()  # nothing picks from it, so it is not written
    assert torch.load(run / runfs.LAST_CKPT, weights_only=True)["epoch"] == 2
    summary = runfs.read_json(run / runfs.SUMMARY)
    assert summary["checkpoint"] == runfs.LAST_CKPT and summary["epoch"] == 2 and "best_epoch" not in summary
    assert summary["training_reported"]["epoch"] == 2 and summary["training_reported"]["match"]
    tuned = runfs.read_json(run / runfs.POSTPROCESS)
    assert tuned["checkpoint"] == runfs.LAST_CKPT and tuned["epoch"] == 2
    assert "last epoch 2 (train.checkpoint: last)" in (run / runfs.REPORT_MD).read_text()
    assert Predictor(run).checkpoint["epoch"] == 2
    s = evaluate_run(run, progress=False)  # the run's model: its folder has no suffix
    assert s["epoch"] == 2 and s["written_to"] == str(run / runfs.EVALUATIONS / "val")
    with pytest.raises(MedsegError, match="keeps only its last epoch"):
        evaluate_run(run, progress=False, checkpoint="best")
    r = _cli("evaluate", run, "--checkpoint", "best", "--no-progress")
    assert r.returncode == 2 and "best.ckpt: no checkpoint: this run keeps only its last epoch" in r.stderr
    assert sorted(p.name for p in (run / runfs.EVALUATIONS).iterdir()) == ["val"]  # the refusal wrote nothing


@pytest.mark.slow
def test_last_checkpoint_throttled_is_written_first_and_at_the_final_epoch(blob_data, tmp_path):
    # every_s far beyond the run: last.ckpt is written at epoch 0 and at the final epoch only
    cfg = tiny_config(blob_data, tmp_path / "runs", train={"epochs": 4, "batch_size": 4, "last_checkpoint_every_s": 1e6})
    path = write_config(tmp_path / "c.yaml", cfg)
    killed = _cli("fit", path, "--no-progress", env={"MEDSEG_KILL_AT_STEP": "7"})  # inside epoch 2
    assert killed.returncode == 137, killed.stderr[-2000:]
    run = tmp_path / "runs" / "t"
    rows = runfs.read_csv(run / runfs.EPOCHS_CSV)
    assert [r["epoch"] for r in rows] == [0, 1]
    assert torch.load(run / runfs.LAST_CKPT, weights_only=True)["epoch"] == 0
    resumed = _cli("fit", "--resume", run, "--no-progress")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after = runfs.read_csv(run / runfs.EPOCHS_CSV)
    assert [r["epoch"] for r in after] == [0, 1, 2, 3]
    assert after[0]["train_seconds"] == rows[0]["train_seconds"]  # epoch 0 kept; epoch 1 trained again from its seed
    assert after[1]["train_loss"] == pytest.approx(rows[1]["train_loss"], abs=1e-6)
    assert torch.load(run / runfs.LAST_CKPT, weights_only=True)["epoch"] == 3


@pytest.mark.slow
@pytest.mark.parametrize("ema_share", [0.0, 0.3])
def test_resume_after_kill_equals_uninterrupted_run(blob_data, tmp_path, ema_share):
    cfg = tiny_config(blob_data, tmp_path / "runs", train={"epochs": 4, "batch_size": 4, "ema_share": ema_share, "last_checkpoint_every_s": 0})
    path = write_config(tmp_path / "c.yaml", cfg)
    full = _cli("fit", path, "--no-progress")
    assert full.returncode == 0, full.stderr[-2000:]
    # 12 train images / batch 4 = 3 steps per epoch: step 7 is in the middle of epoch 2
    killed = _cli("fit", path, "--no-progress", "--set", "name=k", env={"MEDSEG_KILL_AT_STEP": "7"})
    assert killed.returncode == 137
    run_k = tmp_path / "runs" / "k"
    assert len(runfs.read_csv(run_k / runfs.EPOCHS_CSV)) == 2
    # the kill left the checkpoint of the last finished epoch, and the run is not marked finished
    assert torch.load(run_k / runfs.LAST_CKPT, weights_only=True)["epoch"] == 1
    assert runfs.read_json(run_k / runfs.STATE)["finished"] is False
    rows_before = runfs.read_csv(run_k / runfs.EPOCHS_CSV)
    resumed = _cli("fit", "--resume", run_k, "--no-progress")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # it continued from epoch 2: the killed run's rows (their timings too) were not trained again
    kept = runfs.read_csv(run_k / runfs.EPOCHS_CSV)[: len(rows_before)]
    assert [r["train_seconds"] for r in kept] == [r["train_seconds"] for r in rows_before]
    assert "resuming from checkpoints/last.ckpt" in (run_k / runfs.TRAIN_LOG).read_text()
    assert runfs.read_json(run_k / runfs.STATE)["finished"] is True
    a = runfs.read_csv(tmp_path / "runs" / "t" / runfs.EPOCHS_CSV)
    b = runfs.read_csv(run_k / runfs.EPOCHS_CSV)
    assert [r["epoch"] for r in b] == [0, 1, 2, 3]
    for ra, rb in zip(a, b):
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], abs=1e-6)
        assert ra["val_dice"] == pytest.approx(rb["val_dice"], abs=1e-6, nan_ok=True)
    ca = torch.load(tmp_path / "runs" / "t" / runfs.LAST_CKPT, weights_only=True)
    cb = torch.load(run_k / runfs.LAST_CKPT, weights_only=True)
    wa, wb = ca["state_dict"], cb["state_dict"]
    for k in wa:
        assert torch.allclose(wa[k].float(), wb[k].float(), atol=1e-6), k
    if ema_share:
        # the checkpoint's weights are the average; the trained weights a resume continues from are the callback's
        ta, tb = ca["callbacks"]["WeightEMA"]["trained"], cb["callbacks"]["WeightEMA"]["trained"]
        assert cb["callbacks"]["WeightEMA"]["ema"] is None  # the average is the checkpoint's weights, not stored twice
        assert max(float((ta[k] - wa["net." + k]).abs().max()) for k in ta if ta[k].is_floating_point()) > 1e-4
        for k in ta:
            assert torch.allclose(ta[k].float(), tb[k].float(), atol=1e-6), k
        summary = json.loads((run_k / runfs.SUMMARY).read_text())
        assert summary["training_reported"]["match"], summary["training_reported"]  # evaluate scores the average too
