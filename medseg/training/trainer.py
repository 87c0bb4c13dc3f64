"""The one place a `pl.Trainer` is made: precision, clipping, accumulation, checkpoints, callbacks, loggers."""

from __future__ import annotations

import logging
import os
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Callable, Optional

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, RichProgressBar, TQDMProgressBar
from rich.console import Console

from medseg import runfolder as runfs
from medseg.config import Config
from medseg.data.arrays import SplitArrays
from medseg.runtime import training_device
from medseg.training import tracking
from medseg.training.callbacks import (
    AtomicCheckpointIO, BatchCompositionAudit, BudgetSchedule, ContractValidation, EpochLog, KillSwitch, LatestCheckpoint, SameRun,
    WeightEMA,
)
from medseg.training.distributed import trainer_devices, world_size


def build_trainer(
    cfg: Config,
    run_dir: Path,
    precision: str,
    val: SplitArrays,
    micro_batches: int,
    console: Console,
    progress: bool = True,
    warn: Optional[Callable[[str], None]] = None,
) -> pl.Trainer:
    """The Trainer of one fit, with medseg's callbacks and loggers.

    Lightning's own validation loop is off: `ContractValidation` scores the validation images
    under the metric contract at the end of each training epoch, before the checkpoint and
    early-stopping callbacks read its `val/monitor`.

    More than one process (train.devices, or torchrun / srun) trains with Lightning's DDP; on
    GPUs BatchNorm is synchronised over the ranks, so its statistics are those of the whole
    batch, as in a single process.

    Args:
        cfg: the resolved config.
        run_dir: the run folder (checkpoints/, logs/, metrics/epochs.csv).
        precision: the Lightning precision string (`runtime.resolve_precision`).
        val: the validation arrays.
        micro_batches: training micro-batches per epoch (progress refresh and logging interval).
        console: where warnings and progress go.
        progress: show progress bars.
        warn: where training warnings go (fit: train.log and the console).
    """
    audit = BatchCompositionAudit(cfg, warn)
    validation = ContractValidation(cfg, val, precision)
    monitor_mode = "min" if cfg.train.monitor == "loss" else "max"
    callbacks: list[Callback] = [
        SameRun(run_dir),
        audit,
        # before the validation: the average takes the trained weights' place at the end of each epoch
        *([WeightEMA(cfg.train.ema_share)] if cfg.train.ema_share > 0 else []),
        validation,
        EpochLog(run_dir, audit, validation),
        # train.checkpoint last: the final epoch is the model, so no best.ckpt is written (284 MB at each new best)
        *([ModelCheckpoint(
            dirpath=run_dir / runfs.CHECKPOINTS, filename="best", monitor="val/monitor", mode=monitor_mode,
            save_top_k=1, save_on_train_epoch_end=True, enable_version_counter=False,
        )] if cfg.train.checkpoint == "best" else []),
        LatestCheckpoint(run_dir / runfs.CHECKPOINTS, cfg.train.last_checkpoint_every_s),
    ]
    if cfg.train.budget_minutes and (cfg.schedule.follow_budget or cfg.schedule.fill_budget):
        # after EpochLog: the row shows the epoch as trained
        callbacks.append(BudgetSchedule(cfg.train.budget_minutes, warn, cfg.schedule.follow_budget, cfg.schedule.fill_budget))
    if progress:
        callbacks.append(RichProgressBar() if console.is_terminal else TQDMProgressBar(refresh_rate=max(1, micro_batches // 4)))
    if cfg.train.early_stopping.patience > 0:
        callbacks.append(
            EarlyStopping(
                monitor="val/monitor", mode=monitor_mode, patience=cfg.train.early_stopping.patience,
                min_delta=cfg.train.early_stopping.min_delta, check_on_train_epoch_end=True,
            )
        )
    if os.environ.get("MEDSEG_KILL_AT_STEP"):
        callbacks.append(KillSwitch(int(os.environ["MEDSEG_KILL_AT_STEP"])))
    loggers = tracking.make_loggers(cfg, run_dir, console)
    torch.use_deterministic_algorithms(cfg.train.deterministic, warn_only=True)
    # Lightning's start-up chatter (GPU/TPU lines, advertising tips) hides medseg's own output
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated")
    # under DDP the callbacks log values that are already the same on every rank (gathered or broadcast): no sync needed
    warnings.filterwarnings("ignore", message=".*when logging on epoch level in distributed setting.*")
    warnings.filterwarnings("ignore", message=".*torch.distributed.nn.functional.all_gather is deprecated.*")
    placement = trainer_devices(cfg)
    distributed = world_size(cfg) > 1
    return pl.Trainer(
        max_epochs=cfg.train.epochs,
        accelerator=cfg.train.accelerator,
        **placement,
        sync_batchnorm=distributed and training_device(cfg) == "gpu",  # torch's SyncBatchNorm is GPU-only
        precision=precision,
        gradient_clip_val=cfg.train.grad_clip or None,
        accumulate_grad_batches=cfg.train.accumulate,
        callbacks=callbacks,
        logger=loggers or False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # the DataModule's sampler shards by rank itself
        log_every_n_steps=max(1, min(50, micro_batches)),
        plugins=[AtomicCheckpointIO()],
        enable_model_summary=False,
        default_root_dir=str(run_dir),
        enable_progress_bar=progress,
        # the budget is wall-clock: the planned epochs come from a measured step cost, this is the backstop
        max_time=timedelta(minutes=cfg.train.budget_minutes) if cfg.train.budget_minutes else None,
    )
