"""training.callbacks: validation streams chunk by chunk and scores what the whole-set scorer scores."""

from __future__ import annotations

from typing import Optional

import numpy as np
import pytest
import torch

import medseg.training.callbacks as callbacks
from bench.synthetic_sets import write_lits
from medseg.config import config_from_dict
from medseg.data.arrays import SampleStack, stack_part
from medseg.data.sources import load_data
from medseg.inference import predict_probs
from medseg.metrics.validation import CHUNK_BATCHES, score_validation
from medseg.training.module import SegModule
from tests.conftest import ChunkTracker, make_blob_folder, tiny_config


def _whole_set(module, val, cfg) -> dict:
    """The metrics validation reported before it streamed: every probability first, then one scoring call."""
    probs = predict_probs(module.net, np.asarray(val.images), batch_size=4)
    s = score_validation(probs, np.asarray(val.masks), val.meta, cfg.eval.contract, surface=False)
    out = {"dice": s.summary["dice"], "iou": s.summary["iou"], "soft_dice": s.soft_dice, "images": float(len(probs)),
           **{k: s.image_summary[k] for k in ("dice_nonempty", "fp_rate_empty", "lesion_recall") if k in s.image_summary}}
    if s.volume_summary is not None:
        out["dice_per_volume"] = s.volume_summary["dice"]
    return out


@pytest.mark.parametrize("kind", ["images", "volumes"])
def test_streamed_validation_from_the_cache_equals_whole_set_scoring_in_memory(tmp_path, monkeypatch, kind):
    if kind == "images":
        root = make_blob_folder(tmp_path / "data", n=20, size=32, empty_every=3)
        data = {"source": "images", "root": str(root), "input_size": [32, 32]}
    else:
        root = tmp_path / "lits"
        write_lits(root, 4, side=48, slices=(8, 14))
        data = {"source": "volumes", "root": str(root), "input_size": [32, 32], "context_slices": 1}
    raw = tiny_config(root, tmp_path / "runs", data=data, model={"name": "unet", "channels": [4, 8], "res_units": 0},
                      eval={"batch_size": 2, "contract": {"reduction": "per_volume" if kind == "volumes" else "per_image"}})
    cfg = config_from_dict(raw)
    cases = sorted({s.case_id for s in load_data(cfg.data).samples})
    memory = stack_part(load_data(cfg.data), cases)
    cached = stack_part(load_data(cfg.data.model_copy(update={"cache_dir": tmp_path / "cache"})), cases)
    assert isinstance(cached.images, SampleStack) and isinstance(cached.masks, SampleStack)
    torch.manual_seed(0)
    module = SegModule(cfg, int(memory.images.shape[1]), memory.foreground_fraction)
    module.eval()

    calls = ChunkTracker(callbacks.predict_probs)
    monkeypatch.setattr(callbacks, "predict_probs", calls)
    streamed = callbacks.ContractValidation(cfg, cached, "32-true").validate(module)
    in_memory = callbacks.ContractValidation(cfg, memory, "32-true").validate(module)
    want = _whole_set(module, memory, cfg)

    # streaming: no call saw more than one chunk (8 images, or one volume), and every image was scored once
    seen = calls.sizes
    assert calls.alive == [0] * len(seen)  # a chunk's probabilities are dropped before the next is predicted
    biggest_volume = max(m["n_slices"] for m in memory.meta) if kind == "volumes" else 0
    assert max(seen) <= max(2 * CHUNK_BATCHES, biggest_volume) and sum(seen) == 2 * len(memory.meta)
    assert len(seen) > 2
    for key, value in want.items():
        assert streamed[key] == pytest.approx(value, abs=1e-6, nan_ok=True), key
        assert in_memory[key] == pytest.approx(value, abs=1e-6, nan_ok=True), key
    assert streamed["loss"] == pytest.approx(in_memory["loss"], abs=1e-6)
    if kind == "volumes":
        assert streamed["dice"] == streamed["dice_per_volume"]  # the per-volume contract scores stacked volumes


def _fit_on_a_fake_clock(tmp_path, monkeypatch, follow: bool, startup_s: float = 0.0, epochs: int = 12, fill: bool = False,
                         batch_s: tuple = (), progressive: Optional[dict] = None):
    """An `epochs`-epoch fit (2 batches an epoch) under a 1-minute budget where each batch "takes" 5 s
    on a fake clock (or batch_s[i] for batch i; times its pixel share with train.progressive), the first
    batch `startup_s` more; returns (epochs.csv rows, LR / peak, train.log)."""
    from types import SimpleNamespace

    from lightning.pytorch.callbacks import Timer

    import medseg.training.module as module_mod
    from medseg import runfolder as runfs
    from medseg.commands.fit import fit

    clock = {"t": 0.0, "batches": 0}
    monkeypatch.setattr(Timer, "time_elapsed", lambda self, stage="train": clock["t"])
    monkeypatch.setattr(module_mod, "time", SimpleNamespace(time=lambda: clock["t"]))  # the epochs' training seconds
    real_end = SegModule.on_train_batch_end

    def tick(self, *a, **k):
        i = clock["batches"]
        clock["t"] += (batch_s[i] if i < len(batch_s) else 5.0) * self.epoch_stats.pixel_share + (startup_s if i == 0 else 0.0)
        clock["batches"] += 1
        return real_end(self, *a, **k)

    monkeypatch.setattr(SegModule, "on_train_batch_end", tick)
    root = make_blob_folder(tmp_path / "data", n=16, size=32, empty_every=4)
    raw = tiny_config(root, tmp_path / "runs", data={"source": "images", "root": str(root), "input_size": [32, 32]},
                      model={"name": "unet", "channels": [4, 8], "res_units": 0}, augment={"preset": "none"},
                      schedule={"warmup_epochs": 0, "min_lr_ratio": 0.01, "follow_budget": follow, "fill_budget": fill},
                      train={"epochs": epochs, "batch_size": 6, "budget_minutes": 1.0, "progressive": progressive})
    run = fit(config_from_dict(raw), progress=False)
    rows = runfs.read_csv(run / runfs.EPOCHS_CSV)
    return rows, [r["lr"] / 0.01 for r in rows], (run / runfs.TRAIN_LOG).read_text()


@pytest.mark.parametrize("follow", [True, False])
def test_a_budget_shorter_than_the_planned_epochs_ends_the_decay_inside_it(tmp_path, monkeypatch, follow):
    """A 1-minute budget holds 6 of the 12 epochs (10 s each).

    With schedule.follow_budget the run stops after 6 epochs with the LR at the floor; without
    it Lightning's max_time stops it at the same point with the cosine only halfway down.
    """
    rows, lr_share, log = _fit_on_a_fake_clock(tmp_path, monkeypatch, follow)
    if follow:
        # shortened after the second epoch (10 s an epoch: 6 fit): six whole epochs, the last ends at the floor
        assert [r["step"] for r in rows] == [2, 4, 6, 8, 10, 12]
        assert lr_share[-1] == pytest.approx(0.01, abs=1e-6), lr_share
        assert all(a > b for a, b in zip(lr_share, lr_share[1:])), lr_share
        assert "holds 6 epochs, not the planned 12" in log
    else:
        # max_time stops one batch into a seventh epoch, with the 12-epoch cosine just past its middle
        assert [r["step"] for r in rows] == [2, 4, 6, 8, 10, 12, 13]
        assert lr_share[5] == pytest.approx(0.01 + 0.99 * 0.5, abs=1e-6), lr_share
        assert "holds" not in log


def test_a_slow_first_epoch_alone_does_not_shorten_the_run(tmp_path, monkeypatch):
    # 25 s of start-up in the first batch: epoch 0 takes 35 s, the others 10 s, so 3 epochs fit in 60 s
    # (judged from the first epoch alone, only 1 would)
    rows, lr_share, log = _fit_on_a_fake_clock(tmp_path, monkeypatch, True, startup_s=25.0)
    assert [r["step"] for r in rows] == [2, 4, 6]
    assert lr_share[-1] == pytest.approx(0.01, abs=1e-6), lr_share
    assert "epochs take 10.0 s, so the budget holds 3 epochs, not the planned 12" in log


@pytest.mark.parametrize("fill", [True, False])
def test_epochs_faster_than_planned_fill_the_budget_only_with_fill_budget(tmp_path, monkeypatch, fill):
    """4 planned epochs of 10 s under a 1-minute budget: after epoch 1 the rest (40 s) holds 4 more.

    With schedule.fill_budget the run goes on to 5 epochs (6 fit, one kept spare) and its cosine
    is stretched to reach the floor at the fifth; without it, the 4 planned epochs are the most
    that run. Neither shortens: the rest always holds what is left.
    """
    rows, lr_share, log = _fit_on_a_fake_clock(tmp_path, monkeypatch, True, epochs=4, fill=fill)
    if fill:
        assert [r["step"] for r in rows] == [2, 4, 6, 8, 10]
        assert "epochs take 10.0 s, so the budget holds 6 epochs, not the planned 4; training goes on to 5" in log
        # epochs 0 and 1 trained under the 4-epoch cosine (the stretch comes at the end of epoch 1), epochs 2-4
        # under the 5-epoch one, which ends at the floor
        cos = lambda step, total: 0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * step / total))  # noqa: E731
        assert lr_share == pytest.approx([cos(2, 8), cos(4, 8), cos(6, 10), cos(8, 10), 0.01], abs=1e-6)
    else:
        assert [r["step"] for r in rows] == [2, 4, 6, 8]
        assert lr_share[-1] == pytest.approx(0.01, abs=1e-6), lr_share
        assert "holds" not in log


def test_several_changes_are_reported_once_then_summed_up_at_the_end(tmp_path, monkeypatch):
    """4 planned epochs: 10 s epochs stretch the run to 5 after epoch 1, then 20 s epochs shorten it back to 4."""
    rows, lr_share, log = _fit_on_a_fake_clock(tmp_path, monkeypatch, True, epochs=4, fill=True, batch_s=(5, 5, 5, 5, 10, 10))
    assert [r["step"] for r in rows] == [2, 4, 6, 8]
    assert lr_share[-1] == pytest.approx(0.01, abs=1e-6), lr_share  # the decay ends at the last count
    assert log.count("train.budget_minutes") == 2
    assert "so the budget holds 6 epochs, not the planned 4; training goes on to 5" in log
    assert "the epoch count was changed 2 times in all (4 -> 5 -> 4; the LR decay ends at the last)" in log
    assert "training ends after epoch 3" not in log  # the second change is in the summary only


def test_a_progressive_run_counts_its_small_epochs_as_cheaper_when_it_fills_the_budget(tmp_path, monkeypatch):
    """train.progressive (0.5, 0.5) on 32-pixel inputs (stride 2), a batch costs 5 s x its pixel share, 4 planned epochs.

    By hand: epochs 0 and 1 train at 16 and 24 pixels (2.5 s and 5.625 s); after epoch 1 a full-size epoch's
    training is 5.625 / 0.5625 = 10 s and nothing else costs time, so of the 51.875 s left a 7-epoch run needs
    5.625 + 7.656 + 3 x 10 = 43.3 s (epochs 2 and 3 still ramping: 24 and 28 pixels) and an 8-epoch one 53.3 s:
    7 fit, the run goes on to 6 (one kept spare), where epoch 2 trains at 26 pixels. At the flat 10 s an epoch
    of the same clock without resizing, the rest (40 s after epoch 1) holds 6 and the run goes on to 5.
    """
    rows, lr_share, log = _fit_on_a_fake_clock(tmp_path, monkeypatch, True, epochs=4, fill=True,
                                               progressive={"start_scale": 0.5, "share": 0.5})
    assert [r["step"] for r in rows] == [2, 4, 6, 8, 10, 12]
    assert [r["train_pixel_share"] for r in rows] == pytest.approx([(s / 32) ** 2 for s in (16, 24, 26, 32, 32, 32)])
    assert "so the budget holds 7 epochs, not the planned 4; training goes on to 6" in log
    assert lr_share[-1] == pytest.approx(0.01, abs=1e-6)
    rows, _, log = _fit_on_a_fake_clock(tmp_path / "flat", monkeypatch, True, epochs=4, fill=True)
    assert [r["step"] for r in rows] == [2, 4, 6, 8, 10] and "train_pixel_share" not in rows[0]


@pytest.mark.parametrize("lengthen", [True, False])
def test_a_resumed_run_keeps_the_epochs_its_checkpointed_schedule_holds(lengthen):
    """The checkpoint's LRSchedule spans the stretched (10 steps = 5 epochs) or shortened (6 = 3) run."""
    from types import SimpleNamespace

    from medseg.training.module import LRSchedule

    cfg = config_from_dict(tiny_config("d", "r", schedule={"warmup_epochs": 0}, train={"epochs": 4}))
    for total, want in ((10, 5 if lengthen else 4), (6, 3)):
        net = torch.nn.Linear(1, 1)
        sched = torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD(net.parameters(), lr=0.1), LRSchedule(cfg, total, 2))
        trainer = SimpleNamespace(max_epochs=4, current_epoch=1, lr_scheduler_configs=[SimpleNamespace(scheduler=sched)],
                                  fit_loop=SimpleNamespace(max_epochs=4))
        callbacks.BudgetSchedule(1.0, shorten=True, lengthen=lengthen).on_train_start(trainer, SimpleNamespace(steps_per_epoch=2))
        assert trainer.fit_loop.max_epochs == want, (total, lengthen)


def _ema_fit(accumulate: int, epochs: int = 3, steps: int = 4, share: float = 0.5):
    """A Lightning fit of a tiny SegModule with WeightEMA and two spies: the weights after each optimiser step
    (`steps`), the weights validation sees at each epoch end (`validated`), the weights at each epoch's first batch."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import Callback
    from torch.utils.data import DataLoader, TensorDataset

    cfg = config_from_dict(tiny_config(".", ".", model={"name": "unet", "channels": [4, 8], "res_units": 1},
                                       train={"epochs": epochs, "batch_size": 2, "ema_share": share, "accumulate": accumulate}))
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2 * steps * accumulate, 1, 16, 16, generator=g)
    y = (x > 0.6).float()
    loader = DataLoader(TensorDataset(x, y, torch.arange(len(x))), batch_size=2)
    torch.manual_seed(0)
    module = SegModule(cfg, 1, steps_per_epoch=steps)
    copy = lambda: {k: v.detach().clone() for k, v in module.net.state_dict().items()}  # noqa: E731

    class Spy(Callback):
        def __init__(self):
            self.steps, self.validated, self.first_batch, self._step = [], [], [], 0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 0:
                self.first_batch.append(copy())

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step != self._step:
                self._step = trainer.global_step
                self.steps.append(copy())

        def on_train_epoch_end(self, trainer, pl_module):
            self.validated.append(copy())

    spy_steps, spy_val = Spy(), Spy()
    ema = callbacks.WeightEMA(share)
    # the order of build_trainer: the average goes in before the validation reads the network
    trainer = pl.Trainer(max_epochs=epochs, callbacks=[spy_steps, ema, spy_val], accumulate_grad_batches=accumulate,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, num_sanity_val_steps=0, accelerator="cpu", devices=1)
    trainer.fit(module, train_dataloaders=loader)
    return spy_steps, spy_val, ema, steps * epochs


@pytest.mark.parametrize("accumulate", [1, 2])
def test_weight_ema_is_the_average_of_the_trained_weights_and_what_validation_sees(accumulate):
    steps, val, ema, total = _ema_fit(accumulate)
    assert len(steps.steps) == total  # one update per optimiser step, not per micro-batch
    decay = 1.0 - 1.0 / (0.5 * total)
    # independently: the average over the recorded weights after each optimiser step, from the initial weights
    init = steps.first_batch[0]
    avg = {k: v.double() for k, v in init.items()}
    per_epoch = total // 3
    for n, w in enumerate(steps.steps):
        d = min(decay, (1.0 + n) / (10.0 + n))
        for k, v in w.items():
            avg[k] = d * avg[k] + (1 - d) * v.double() if v.is_floating_point() else v.double()
        if (n + 1) % per_epoch == 0:
            seen = val.validated[(n + 1) // per_epoch - 1]
            for k in avg:
                assert torch.allclose(seen[k].double(), avg[k], atol=1e-5), k
    # the average is not the trained weights (else the test proves nothing), and each epoch trains on from its
    # own last weights, not from the average validation saw
    last = steps.steps[-1]
    assert max(float((val.validated[-1][k] - last[k]).abs().max()) for k in last if last[k].is_floating_point()) > 1e-3
    for e in (1, 2):
        trained = steps.steps[e * per_epoch - 1]
        assert all(torch.equal(steps.first_batch[e][k], trained[k]) for k in trained)
    assert ema.updates == total
