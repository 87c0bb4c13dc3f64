"""`medseg fit`: data -> split -> fingerprint and plan -> run folder -> Lightning training -> final evaluation."""

from __future__ import annotations

import logging
from datetime import timedelta
import os
import platform
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, RichProgressBar, TQDMProgressBar
from rich.console import Console
from torch.utils.data import DataLoader

import medseg
from medseg import run as runfs
from medseg import tracking
from medseg.config import Config, config_from_dict, dump_config, read_yaml
from medseg.data import load_data
from medseg.data.augment import build_augment
from medseg.data.fingerprint import compute_fingerprint
from medseg.data.sampling import build_train_dataset, build_train_sampler, check_sampler_pool, describe_sampler
from medseg.data.split import make_split, save_split
from medseg.engine import AtomicCheckpointIO, SegModule, resolve_precision
from medseg.errors import MedsegError


@dataclass
class SplitArrays:
    """Stacked arrays of one split part, with the samples' meta in the same order."""

    images: np.ndarray
    masks: np.ndarray
    meta: list[dict]


def stack_part(loaded, case_ids: list[str]) -> SplitArrays:
    wanted = set(case_ids)
    chosen = [s for s in loaded.samples if s.case_id in wanted]
    if not chosen:
        return SplitArrays(np.zeros((0, loaded.in_channels, 1, 1), np.float32), np.zeros((0, 1, 1), np.uint8), [])
    images = np.stack([s.image for s in chosen]).astype(np.float32, copy=False)
    masks = np.stack([s.mask for s in chosen]).astype(np.uint8, copy=False)
    meta = []
    for s in chosen:
        m = {"sample_id": s.sample_id, "case_id": s.case_id, **s.meta}
        # metrics are computed at network input size, so distances need the spacing there
        sy, sx = (m.get("resize") or {}).get("scale", (1.0, 1.0))
        if m.get("spacing"):
            m["spacing_input"] = [m["spacing"][0] / sy, m["spacing"][1] / sx]
        vol = m.get("volume")
        if vol is not None and vol in loaded.volumes and loaded.volumes[vol].get("spacing"):
            z, r, c = loaded.volumes[vol]["spacing"]
            m["volume_spacing"] = [z, r / sy, c / sx]
        meta.append(m)
    return SplitArrays(images, masks, meta)


class _KillSwitch(Callback):
    """Fault injection for the resume tests: MEDSEG_KILL_AT_STEP=N ends the process hard at step N."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args, **kwargs):
        if trainer.global_step >= self.step:
            os._exit(137)


def _setup_logging(run_dir: Path) -> logging.Logger:
    log = logging.getLogger(f"medseg.run.{run_dir.name}")
    log.setLevel(logging.INFO)
    path = str((run_dir / runfs.LOGS / "train.log").resolve())
    for old in list(log.handlers):
        # a run of the same name in another output_dir (same process) must not write here
        if isinstance(old, logging.FileHandler) and old.baseFilename != path:
            log.removeHandler(old)
            old.close()
    if not log.handlers:
        h = logging.FileHandler(path)
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(h)
    return log


def fit(cfg: Optional[Config] = None, resume: Optional[Path] = None, console: Optional[Console] = None, progress: bool = True) -> Path:
    """Train a model; returns the run folder.

    Args:
        cfg: the validated config (ignored when resuming: the run's saved config is used).
        resume: a run folder to continue from its last checkpoint.
        console: where to print.
        progress: show progress bars.
    """
    console = console or Console(stderr=True)
    if resume is not None:
        run_dir = runfs.open_run(resume)
        cfg = config_from_dict(read_yaml(run_dir / runfs.CONFIG), run_dir)
        if not (run_dir / runfs.LAST_CKPT).is_file():
            console.print(f"[yellow]{run_dir}: no last checkpoint yet; starting its training from the beginning")
    assert cfg is not None
    tracking.require_backend(cfg)  # a missing optional extra fails before any run folder exists
    precision = resolve_precision(cfg.train.precision, cfg.train.accelerator)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    # Everything that can fail on the user's data fails here, before a run folder exists.
    loaded = load_data(cfg.data, with_masks=True, progress=progress)
    split = make_split([s.case_id for s in loaded.samples], cfg.split, cfg.seed)
    planned = None
    if resume is None and cfg.plan.enabled:
        # the plan fills the keys the config leaves unset (a resumed run keeps its saved, planned config)
        from medseg.plan import plan_run, print_plan

        planned = plan_run(cfg, loaded, split, progress=progress)
        cfg, loaded = planned.config, planned.loaded
        print_plan(console, planned.plan)
    train = stack_part(loaded, split["train"])
    val = stack_part(loaded, split["val"])
    if len(train.images) == 0 or len(val.images) == 0:
        raise MedsegError("split: the training or validation set has no images")
    check_sampler_pool(cfg.sampler, cfg.train.epochs, train.masks)
    fingerprint = planned.fingerprint if planned else compute_fingerprint(loaded, split)

    if resume is None:
        run_dir = runfs.create_run(cfg.output_dir, cfg.name)
        (run_dir / runfs.CONFIG).write_text(dump_config(cfg))
        runfs.write_json(run_dir / runfs.FINGERPRINT, fingerprint)
        if planned:
            from medseg.plan import PLAN_JSON

            runfs.write_json(run_dir / PLAN_JSON, planned.plan.to_json())
        save_split(split, run_dir / runfs.SPLIT, cfg.split, cfg.seed)
        runfs.write_json(run_dir / runfs.BAD_FILES, loaded.bad)
    log = _setup_logging(run_dir)
    pos_fraction = float(train.masks.mean())
    state = {
        "run_version": runfs.RUN_VERSION,
        "medseg_version": medseg.__version__,
        "torch_version": torch.__version__,
        "precision": precision,
        "in_channels": loaded.in_channels,
        "source": loaded.source,
        "pos_fraction_train": pos_fraction,
        "n_train_images": len(train.images),
        "n_val_images": len(val.images),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, torch threads {torch.get_num_threads()}",
        "tcmalloc": "tcmalloc" in os.environ.get("LD_PRELOAD", ""),
        "channels_last": cfg.train.channels_last,
    }
    runfs.write_json(run_dir / runfs.STATE, state)
    if loaded.bad:
        log.warning("skipped %d bad files (bad_files.json)", len(loaded.bad))
        console.print(f"[yellow]skipped {len(loaded.bad)} bad files, listed in {run_dir / runfs.BAD_FILES}")
    if not fingerprint.get("mask_values_binary01", True):
        console.print(f"[yellow]mask values seen: {fingerprint['raw_mask_values']} — anything > 0 is treated as foreground")
    log.info("run %s: %d train / %d val images, precision %s, tcmalloc %s, channels_last %s", run_dir, len(train.images),
             len(val.images), precision, "on" if state["tcmalloc"] else "off (install libtcmalloc-minimal4 for ~30% faster CPU steps)",
             cfg.train.channels_last)
    log.info(describe_sampler(cfg.sampler, train.masks))

    bs = cfg.train.batch_size
    samples_per_epoch = (cfg.train.steps_per_epoch * bs) if cfg.train.steps_per_epoch else len(train.images)
    micro_batches = max(1, samples_per_epoch // bs)
    steps_per_epoch = max(1, micro_batches // cfg.train.accumulate)
    dataset = build_train_dataset(train.images, train.masks, build_augment(cfg.augment.preset, cfg.augment.overrides), cfg.sampler)
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    sampler = build_train_sampler(
        cfg.sampler, train.masks, bs, cfg.seed, cfg.train.epochs, num_samples=micro_batches * bs * world, rank=rank, world_size=world
    )
    loader = DataLoader(
        dataset, batch_size=bs, sampler=sampler, num_workers=cfg.train.num_workers, drop_last=True,
        persistent_workers=cfg.train.num_workers > 0,
    )
    module = SegModule(
        cfg, loaded.in_channels, pos_fraction, val.images, val.masks, val.meta, steps_per_epoch, run_dir, precision
    )
    module.console = console  # the batch-composition audit warns here too, not only in train.log
    monitor_mode = "min" if cfg.train.monitor == "loss" else "max"
    callbacks: list[Callback] = [
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints", filename="best", monitor="val/monitor", mode=monitor_mode,
            save_top_k=1, save_last=True, save_on_train_epoch_end=True, enable_version_counter=False,
        ),
    ]
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
        callbacks.append(_KillSwitch(int(os.environ["MEDSEG_KILL_AT_STEP"])))
    loggers = tracking.make_loggers(cfg, run_dir, console)
    torch.use_deterministic_algorithms(cfg.train.deterministic, warn_only=True)
    # Lightning's start-up chatter (GPU/TPU lines, advertising tips) hides medseg's own output
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated")
    trainer = pl.Trainer(
        max_epochs=cfg.train.epochs,
        accelerator=cfg.train.accelerator,
        devices=cfg.train.devices,
        precision=precision,
        gradient_clip_val=cfg.train.grad_clip or None,
        accumulate_grad_batches=cfg.train.accumulate,
        callbacks=callbacks,
        logger=loggers or False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        log_every_n_steps=max(1, min(50, micro_batches)),
        plugins=[AtomicCheckpointIO()],
        enable_model_summary=False,
        default_root_dir=str(run_dir),
        enable_progress_bar=progress,
        # the budget is wall-clock: the planned epochs come from a measured step cost, this is the backstop
        max_time=timedelta(minutes=cfg.train.budget_minutes) if cfg.train.budget_minutes else None,
    )
    last = run_dir / runfs.LAST_CKPT
    t0 = time.time()
    trainer.fit(module, train_dataloaders=loader, ckpt_path=str(last) if resume is not None and last.is_file() else None)
    log.info("training finished in %.1f s", time.time() - t0)
    if not trainer.is_global_zero:
        return run_dir

    from medseg.evaluate import evaluate_run

    from medseg.postprocess import POSTPROCESS_JSON

    if cfg.postprocess.tune and not (run_dir / POSTPROCESS_JSON).exists():
        from medseg.tune import tune_run

        tune_run(run_dir, console=console, val=val)
    evaluate_run(run_dir, console=console, val=val, loaded=loaded)
    try:
        from medseg.report import build_report

        build_report(run_dir, val=val, console=console, loaded=loaded)
    except Exception as e:  # noqa: BLE001 — the report is derived (`medseg report` rewrites it); never fail a finished fit
        log.warning("report not written: %s: %s", type(e).__name__, e, exc_info=True)
        console.print(f"[yellow]report not written ({type(e).__name__}: {e}); retry with: medseg report {run_dir}")
    tracking.finish(cfg, run_dir, console)  # after the report, which it uploads
    return run_dir
