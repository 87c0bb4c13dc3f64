"""training.datamodule: DataLoader workers read the cache, start without forking the trainer, and change nothing a run draws."""

from __future__ import annotations

import pytest

from medseg import runfolder as runfs
from medseg.training import datamodule
from tests.conftest import make_blob_folder, tiny_config, write_config
from tests.test_cli_conventions import cli


def test_workers_start_from_a_server_process_not_a_fork_of_the_trainer():
    assert datamodule.WORKER_START in ("forkserver", "spawn")


@pytest.mark.parametrize("cached", [True, False])
def test_a_fit_with_two_workers_trains_exactly_what_the_main_process_trains(tmp_path, cached):
    data = make_blob_folder(tmp_path / "data", n=16, size=32, empty_every=3)
    over = {"data": {"source": "images", "root": str(data), "input_size": [32, 32],
                     **({"cache_dir": str(tmp_path / "cache")} if cached else {})},
            "model": {"name": "unet", "channels": [4, 8], "res_units": 0}, "loss": {"bce": 1.0},
            "train": {"epochs": 2, "batch_size": 4}, "augment": {"preset": "medium"}, "sampler": {"positive_share": 0.5},
            "postprocess": {"tune": False}}
    cfg = write_config(tmp_path / "c.yaml", tiny_config(data, tmp_path / "runs", **over))
    for name, workers in (("w0", 0), ("w2", 2)):
        code, _, err = cli("fit", cfg, "--set", f"name={name}", "--set", f"train.num_workers={workers}", "--no-progress")
        assert code == 0, err[-2000:]
    a, b = (runfs.read_csv(tmp_path / "runs" / n / runfs.EPOCHS_CSV) for n in ("w0", "w2"))
    assert len(a) == len(b) == 2
    for x, y in zip(a, b):
        # every draw and augmentation is seeded per sample, so the workers deliver the same batches
        assert x["train_draw_digest"] == y["train_draw_digest"]
        assert float(x["batch_pos_pixel_share_mean"]) == pytest.approx(float(y["batch_pos_pixel_share_mean"]), abs=1e-12)
        assert float(x["train_loss"]) == pytest.approx(float(y["train_loss"]), rel=1e-5)
        assert float(x["val_dice"]) == pytest.approx(float(y["val_dice"]), abs=1e-5)


def test_copy_paste_reaches_the_batches_from_the_cache_and_replays(tmp_path):
    data = make_blob_folder(tmp_path / "data", n=16, size=48, empty_every=3)
    over = {"data": {"source": "images", "root": str(data), "input_size": [48, 48], "cache_dir": str(tmp_path / "cache")},
            "model": {"name": "unet", "channels": [4, 8], "res_units": 0}, "loss": {"bce": 1.0},
            "train": {"epochs": 2, "batch_size": 4}, "augment": {"preset": "light"}, "postprocess": {"tune": False}}
    cfg = write_config(tmp_path / "c.yaml", tiny_config(data, tmp_path / "runs", **over))
    for name, p in (("cp0", 0.0), ("cp1", 1.0), ("cp1b", 1.0)):
        code, _, err = cli("fit", cfg, "--set", f"name={name}", "--set", f"augment.copy_paste={p}", "--no-progress")
        assert code == 0, err[-2000:]
    off, on, on2 = (runfs.read_csv(tmp_path / "runs" / n / runfs.EPOCHS_CSV) for n in ("cp0", "cp1", "cp1b"))
    for a, b, c in zip(off, on, on2):
        # the same images in the same order; the pasted lesions add foreground to what the model receives
        assert a["train_draw_digest"] == b["train_draw_digest"]
        assert float(b["batch_pos_pixel_share_mean"]) > 1.3 * float(a["batch_pos_pixel_share_mean"])
        assert float(b["batch_pos_pixel_share_mean"]) == float(c["batch_pos_pixel_share_mean"])
