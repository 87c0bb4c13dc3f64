"""`medseg fit`: data -> split -> fingerprint and plan -> run folder -> Lightning training -> tune, evaluate, report."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import lightning.pytorch as pl
import torch
from rich.console import Console
from rich.markup import escape

import medseg
from medseg import runfolder as runfs
from medseg.commands.console import print_plan
from medseg.commands.evaluate import evaluate_run
from medseg.commands.report import report_run
from medseg.commands.tune import tune_run
from medseg.config import Config, config_from_dict, dump_config, read_yaml
from medseg.data import load_data
from medseg.data.arrays import combined_hash, describe_changes, sample_hashes, stack_part
from medseg.data.fingerprint import compute_fingerprint
from medseg.data.sampling import check_sampler_pool, describe_sampler
from medseg.data.split import make_split, save_split
from medseg.errors import MedsegError
from medseg.planning import plan_run
from medseg.runtime import check_accelerator, fit_device_overrides, machine_description, resolve_precision, tcmalloc_active
from medseg.training import SegDataModule, SegModule, build_trainer, distributed, tracking


def _setup_logging(run_dir: Path) -> logging.Logger:
    log = logging.getLogger(f"medseg.run.{run_dir.name}")
    log.setLevel(logging.INFO)
    path = str((run_dir / runfs.TRAIN_LOG).resolve())
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


def data_notes(fingerprint: dict, train) -> list[tuple[int, str]]:
    """(log level, one line) for each thing the data does that the user should know before trusting the run."""
    out = []
    b = fingerprint.get("mask_binarisation") or {}
    values = fingerprint.get("raw_mask_values") or []
    if b.get("n_half_max"):
        out.append((logging.WARNING, f"{b['n_half_max']} of {b['n_masks']} masks are 8-bit with values between 0 and their "
                    f"maximum ({b['n_pixels_between']} such pixels, e.g. JPEG noise): foreground where >= half the maximum"))
    elif not fingerprint.get("mask_values_binary01", True):
        shown = ", ".join(str(v) for v in values[:8]) + (", ..." if len(values) > 8 else "")
        out.append((logging.INFO, f"mask values seen: {shown} — anything > 0 is treated as foreground"))
    if len(train.masks) and not train.positive.any():
        out.append((logging.WARNING, "every training mask is empty: the network can only learn to predict nothing (check data.masks_dir)"))
    return out


def _open_for_resume(resume: Path, console: Console) -> tuple[Path, Config, dict]:
    """The run to continue, its config and state; refused in one line if it finished or its checkpoint is unusable."""
    run_dir = runfs.open_run(resume)
    cfg = config_from_dict(read_yaml(run_dir / runfs.CONFIG), run_dir)
    state = runfs.optional_dict(run_dir / runfs.STATE)
    if runfs.is_finished(run_dir, state):
        raise MedsegError(
            f"{run_dir}: the run finished ({runfs.STATE} finished: true) and a finished run is never changed; to train "
            f"longer, start a new run from its config: medseg fit {run_dir / runfs.CONFIG} --set train.epochs=N"
        )
    last = run_dir / runfs.LAST_CKPT
    if last.is_file():
        runfs.check_checkpoint(last)  # a truncated or foreign last.ckpt: refuse now, before anything is written
    else:
        console.print(f"[yellow]{run_dir}: no last checkpoint yet; starting its training from the beginning")
    return run_dir, cfg, state


def _check_same_data(run_dir: Path, split: dict, hashes: dict[str, str]) -> None:
    """A resumed run must see the split and the data it started with; one line naming what changed otherwise."""
    saved = runfs.read_json(run_dir / runfs.SPLIT)
    for part in ("train", "val", "test"):
        if sorted(saved.get(part) or []) != sorted(split.get(part) or []):
            moved = sorted(set(saved.get(part) or []) ^ set(split.get(part) or []))
            raise MedsegError(
                f"{run_dir / runfs.SPLIT}: the '{part}' cases computed from the data now differ from the run's "
                f"({len(moved)} cases, e.g. '{moved[0]}'); the data or split changed since the run started, so it cannot resume"
            )
    before = runfs.optional_dict(run_dir / runfs.DATA_HASHES)
    if before and before != hashes:
        raise MedsegError(
            f"{run_dir}: the training and validation data changed since the run started ({describe_changes(before, hashes)}; "
            f"{runfs.DATA_HASHES}), so it cannot resume; start a new run"
        )


def with_device(cfg: Config, device: Optional[str]) -> Config:
    """The config with `--device` applied to train.accelerator / train.devices (unchanged for None or 'auto')."""
    over = fit_device_overrides(device)
    return cfg.model_copy(update={"train": cfg.train.model_copy(update=over)}) if over else cfg


def fit(cfg: Optional[Config] = None, resume: Optional[Path] = None, console: Optional[Console] = None, progress: bool = True,
        loaded=None, device: Optional[str] = None) -> Path:
    """Train a model; returns the run folder.

    Everything that can fail on the user's input (config values, devices, data, split, pretrained
    weights, a resumed run's checkpoint and data) fails before anything is written. Under DDP
    (`training.distributed`) rank 0 does all of this and writes the run folder; the other ranks
    read it, train their share and return.

    Args:
        cfg: the validated config (ignored when resuming: the run's saved config is used).
        resume: a run folder to continue from its last checkpoint.
        console: where to print.
        progress: show progress bars.
        loaded: the data of `cfg.data` already in memory (an experiment reads it once for all its folds).
        device: 'cpu', 'cuda', 'cuda:N' or 'auto' (`--device`): overrides train.accelerator and train.devices.
    """
    console = console or Console(stderr=True)
    started = distributed.launch()
    if started.rank > 0:
        return _follow(cfg, resume, started, progress, device)
    saved_state: dict = {}
    if resume is not None:
        run_dir, cfg, saved_state = _open_for_resume(resume, console)
    assert cfg is not None
    cfg = with_device(cfg, device)
    if resume is None:
        runfs.check_output_dir(cfg.output_dir)
    runfs.check_cache_dir(cfg.data.cache_dir, cfg.output_dir, cfg.name)
    tracking.require_backend(cfg)  # a missing optional extra fails before any run folder exists
    check_accelerator(cfg)
    world = distributed.world_size(cfg, started)
    precision = resolve_precision(cfg.train.precision, cfg.train.accelerator)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    # Everything that can fail on the user's data fails here, before a run folder exists.
    if loaded is None:
        loaded = load_data(cfg.data, with_masks=True, progress=progress)
    split = make_split([s.case_id for s in loaded.samples], cfg.split, cfg.seed)
    planned = None
    if resume is None and cfg.plan.enabled:
        # the plan fills the keys the config leaves unset (a resumed run keeps its saved, planned config)
        planned = plan_run(cfg, loaded, split, progress=progress, world=world)
        cfg, loaded = planned.config, planned.loaded
        print_plan(console, planned.plan)
    distributed.check_batch_split(cfg, world)  # the planned batch size too
    train = stack_part(loaded, split["train"])
    val = stack_part(loaded, split["val"])
    if len(train.images) == 0 or len(val.images) == 0:
        raise MedsegError("split: the training or validation set has no images")
    check_sampler_pool(cfg.sampler, cfg.train.epochs, train.positive)
    hashes = sample_hashes(train, val)
    if resume is not None:
        _check_same_data(run_dir, split, hashes)
    fingerprint = planned.fingerprint if planned else compute_fingerprint(loaded, split)
    pos_fraction = train.foreground_fraction
    data = SegDataModule(cfg, train)
    module = SegModule(cfg, loaded.in_channels, pos_fraction, data.steps_per_epoch, precision)  # loads model.pretrained

    if resume is None:
        run_dir = runfs.create_run(cfg.output_dir, cfg.name)
        (run_dir / runfs.CONFIG).write_text(dump_config(cfg))
        runfs.write_json(run_dir / runfs.FINGERPRINT, fingerprint)
        if planned:
            runfs.write_json(run_dir / runfs.PLAN, planned.plan.to_json())
        save_split(split, run_dir / runfs.SPLIT, cfg.split, cfg.seed)
        runfs.write_json(run_dir / runfs.BAD_FILES, loaded.bad)
        runfs.write_json(run_dir / runfs.DATA_HASHES, hashes)
    log = _setup_logging(run_dir)
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
        "machine": machine_description(),
        "tcmalloc": tcmalloc_active(),
        "channels_last": cfg.train.channels_last,
        "processes": world,
        "data_hash": combined_hash(hashes),
        "finished": False,
        **({"started": saved_state["started"]} if "started" in saved_state else {"started": _now()}),
    }
    runfs.write_json(run_dir / runfs.STATE, state)
    if getattr(module, "pretrained_info", None):
        info = module.pretrained_info
        enc = f", {info['encoder_share']:.0%} of its encoder" if info.get("encoder_share") is not None else ""
        line = (f"model.pretrained: {info['loaded']} tensors loaded by {info['method']} ({info['share']:.0%} of the network{enc}), "
                f"{len(info['skipped_shape'])} skipped for their shape, {info['missing']} left at their initialisation")
        log.info(line)
        console.print(escape(line))
    if loaded.bad:
        log.warning("skipped %d bad files (bad_files.json)", len(loaded.bad))
        console.print(f"[yellow]skipped {len(loaded.bad)} bad files, listed in {run_dir / runfs.BAD_FILES}")
    for level, line in data_notes(fingerprint, train):
        log.log(level, line)
        console.print(f"[yellow]{escape(line)}")
    log.info("run %s: %d train / %d val images, precision %s, tcmalloc %s, channels_last %s", run_dir, len(train.images),
             len(val.images), precision, "on" if state["tcmalloc"] else "off (install libtcmalloc-minimal4 for ~30% faster CPU steps)",
             cfg.train.channels_last)
    log.info(describe_sampler(cfg.sampler, train.positive))

    def warn(message: str) -> None:
        # a training warning goes into the run's train.log and onto the console
        log.warning(message)
        console.print(f"[yellow]WARNING {escape(message)}")

    trainer = build_trainer(cfg, run_dir, precision, val, data.micro_batches, console, progress, warn)
    last = run_dir / runfs.LAST_CKPT
    ckpt = str(last) if resume is not None and last.is_file() else None
    if ckpt:
        log.info("resuming from %s", runfs.LAST_CKPT)
    handoff = distributed.announce_run(run_dir, cfg.output_dir, started) if world > 1 else None
    if world > 1:
        log.info("DDP: %d processes (%s), %d images per process per batch", world, started.launcher or "Lightning's launcher",
                 cfg.train.batch_size // world)
    t0 = time.time()
    try:
        trainer.fit(module, datamodule=data, ckpt_path=ckpt, weights_only=True)
    finally:
        distributed.retire_handoff(handoff)
    log.info("training finished in %.1f s", time.time() - t0)

    if cfg.postprocess.tune and not (run_dir / runfs.POSTPROCESS).exists():
        tune_run(run_dir, console=console, val=val)
    evaluate_run(run_dir, console=console, val=val, loaded=loaded, own=True)
    try:
        report_run(run_dir, val=val, console=console, loaded=loaded)
    except Exception as e:  # noqa: BLE001 — the report is derived (`medseg report` rewrites it); never fail a finished fit
        log.warning("report not written: %s: %s", type(e).__name__, e, exc_info=True)
        console.print(f"[yellow]report not written ({type(e).__name__}: {e}); retry with: medseg report {run_dir}")
    tracking.finish(cfg, run_dir, console)  # after the report, which it uploads
    runfs.write_json(run_dir / runfs.STATE, {**state, "finished": True, "finished_at": _now()})
    return run_dir


def _follow(cfg: Optional[Config], resume: Optional[Path], started: "distributed.Launch", progress: bool,
            device: Optional[str]) -> Path:
    """A DDP rank other than 0: train the run rank 0 created (or resumes), writing nothing; returns its folder.

    The run's saved config (planned by rank 0), split and data hashes are read, not recomputed,
    so every rank trains the same plan on the same cases; a rank that reads different data
    stops in one line.
    """
    if resume is not None:
        run_dir = runfs.open_run(resume)
    else:
        assert cfg is not None
        run_dir = distributed.wait_for_run(cfg.output_dir, started)
    cfg = with_device(config_from_dict(read_yaml(run_dir / runfs.CONFIG), run_dir), device)
    precision = resolve_precision(cfg.train.precision, cfg.train.accelerator)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    loaded = load_data(cfg.data, with_masks=True, progress=False)
    split = runfs.read_json(run_dir / runfs.SPLIT)
    train = stack_part(loaded, split["train"])
    val = stack_part(loaded, split["val"])
    hashes = sample_hashes(train, val)
    saved = runfs.optional_dict(run_dir / runfs.DATA_HASHES)
    if saved and saved != hashes:
        raise MedsegError(f"DDP: rank {started.rank} reads different data than rank 0 ({describe_changes(saved, hashes)}; "
                          f"{run_dir / runfs.DATA_HASHES}): every rank must see the same data.dir")
    data = SegDataModule(cfg, train)
    module = SegModule(cfg, loaded.in_channels, train.foreground_fraction, data.steps_per_epoch, precision)
    trainer = build_trainer(cfg, run_dir, precision, val, data.micro_batches, Console(stderr=True, quiet=True), progress=False)
    last = run_dir / runfs.LAST_CKPT
    trainer.fit(module, datamodule=data, ckpt_path=str(last) if resume is not None and last.is_file() else None, weights_only=True)
    return run_dir


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
