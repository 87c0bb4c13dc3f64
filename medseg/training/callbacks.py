"""What a fit does besides the training step, each a Lightning callback.

* `BatchCompositionAudit`: the positive share of images and pixels in every batch as the
  model received it (after crops and augmentation) against the sampler's target;
* `ContractValidation`: the validation images scored under the metric contract with the
  same inference and the same scorer `medseg evaluate` uses, logged as `val/monitor` (which
  picks the best checkpoint and drives early stopping);
* `EpochLog`: one row per epoch into metrics/epochs.csv and the loggers;
* `WeightEMA`: an exponential moving average of the weights, validated and saved in their place;
* `BudgetSchedule`: with a time budget, ends training after the epochs the budget really holds
  and shortens the LR decay to end with them;
* `SameRun`: under DDP, every rank checks it trains the run rank 0 announced;
* `KillSwitch`: fault injection for the resume tests.

Lightning runs these before the checkpoint and early-stopping callbacks at the end of each
training epoch, in the order the trainer lists them. Under DDP each rank has seen only its
share of the batches and validates only its share of the cases: the callbacks gather over
the ranks (Lightning's `all_gather` and `broadcast`, `training.distributed`), so the row, the
monitor and the audit are those of the whole epoch, the same on every rank, and equal to a
single process's up to floating-point summation order.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, Timer
from lightning.pytorch.plugins.io import TorchCheckpointIO

from medseg import runfolder as runfs
from medseg.config import Config
from medseg.data.arrays import SplitArrays, take
from medseg.data.sampling import audit_warning, composition_columns, epoch_target
from medseg.data.slices import slices_by_volume
from medseg.errors import MedsegError
from medseg.inference import predict_probs
from medseg.metrics.validation import ValidationScorer, case_chunks, has_volumes
from medseg.training.distributed import gather_numbers, gather_objects
from medseg.training.module import MAX_EPOCHS, LRSchedule
from medseg.training.progressive import epochs_within, shares_for, train_cost_bounds


class BatchCompositionAudit(Callback):
    """Per-epoch batch composition columns, and a warning when the realised share is off the target.

    Each micro-batch's counts (images, positive images, foreground pixels, pixels) are kept as
    the model received them; under DDP the ranks' counts of one step are summed, so the audit
    is of the whole batch of every step over all ranks. The sorted indices drawn over all ranks
    give `train_draw_digest`: equal digests mean the same images were drawn (a resumed epoch,
    or a DDP epoch against a single process).

    Args:
        cfg: the resolved config (sampler target and epochs).
        warn: called with a warning line (fit writes it to train.log and the console).
    """

    def __init__(self, cfg: Config, warn: Optional[Callable[[str], None]] = None):
        self.cfg = cfg
        self.warn = warn
        self.counts: list[tuple[float, float, float, float]] = []
        self.indices: list[np.ndarray] = []
        self.columns: dict[str, Any] = {}

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.counts, self.indices = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        y, idx = batch[1], batch[2]
        self.counts.append((float(len(y)), float((y.flatten(1).amax(1) > 0).sum()), float(y.sum()), float(y.numel())))
        self.indices.append(np.asarray(idx.cpu() if torch.is_tensor(idx) else idx, np.float64).reshape(-1))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        epoch = int(trainer.current_epoch)
        target = epoch_target(self.cfg.sampler, epoch, self.cfg.train.epochs)
        counts = gather_numbers(pl_module, np.asarray(self.counts, np.float64).reshape(-1, 4)).sum(axis=0)  # per step, all ranks
        drawn = gather_numbers(pl_module, np.concatenate(self.indices) if self.indices else np.zeros(0))
        n = np.maximum(counts[:, 0], 1)
        self.columns = composition_columns(list(counts[:, 1] / n), list(counts[:, 2] / np.maximum(counts[:, 3], 1)), target)
        self.columns["train_draw_digest"] = "sha1-" + hashlib.sha1(np.sort(drawn.reshape(-1)).astype(np.int64).tobytes()).hexdigest()[:12]
        warning = audit_warning(epoch, self.columns["batch_pos_image_share_mean"], target)
        if warning and trainer.is_global_zero and self.warn is not None:
            self.warn(warning)


class ContractValidation(Callback):
    """Validation metrics under the run's metric contract at the end of every training epoch.

    Validation streams: chunks of whole cases (a few batches of images, or one volume) are
    read, predicted and scored one after the other (`metrics.validation.ValidationScorer`), so
    memory holds one chunk's images, masks and probabilities, not the validation set's. The
    loss is the mean over cases (an image, or a volume's slices together) of the run's loss.
    Under DDP each rank streams its share of the chunks and the ranks' rows are gathered.

    Args:
        cfg: the resolved config (contract, eval batch size, monitor, loss for the val loss).
        val: the validation arrays (in memory, or `SampleStack`s read from the cache).
        precision: the Lightning precision string in use (inference runs under the same autocast).
    """

    def __init__(self, cfg: Config, val: SplitArrays, precision: str):
        self.cfg = cfg
        self.val = val
        self.precision = precision
        self.metrics: dict[str, float] = {}
        self.seconds = 0.0

    def _case_losses(self, probs: np.ndarray, masks: np.ndarray, meta: list[dict], pl_module) -> list[float]:
        """The loss of each case of a chunk: an image, or every slice of a volume together."""
        cases = [idx for idx in slices_by_volume(meta).values()] if has_volumes(meta) else [[i] for i in range(len(meta))]
        out = []
        with torch.no_grad():
            for idx in cases:
                logits = torch.logit(torch.from_numpy(probs[idx]).clamp(1e-6, 1 - 1e-6))[:, None]
                out.append(float(pl_module.loss_fn(logits, torch.from_numpy(masks[idx]).float()[:, None])))
        return out

    def validate(self, pl_module, trainer=None) -> dict[str, float]:
        """Hard (per contract) validation metrics of the module's network now, the same on every rank."""
        world = int(getattr(trainer, "world_size", 1) or 1) if trainer is not None else 1
        rank = int(trainer.global_rank) if world > 1 else 0
        if world > 1:
            # rank 0's buffers (BatchNorm running statistics) on every rank: the shards are scored by the network
            # the checkpoint holds, not by each rank's own last update of them
            buffers = trainer.strategy.broadcast({k: v.detach().cpu() for k, v in pl_module.net.named_buffers()}, src=0)
            with torch.no_grad():
                for k, v in pl_module.net.named_buffers():
                    v.copy_(buffers[k].to(v.device))
        bs = max(1, self.cfg.eval.batch_size)
        scorer = ValidationScorer(self.cfg.eval.contract, surface=False, soft=True)
        losses: list[float] = []
        for idx in case_chunks(self.val.meta, bs)[rank::world]:
            meta = [self.val.meta[i] for i in idx]
            masks = np.asarray(self.val.masks[idx])
            probs = predict_probs(pl_module.net, take(self.val.images, idx), bs, self.precision, pl_module.device, self.cfg.train.channels_last,
                                  window=self.cfg.eval.sliding_window)
            scorer.add(probs, masks, meta)
            losses += self._case_losses(probs, masks, meta, pl_module)
            del probs  # before the next chunk's prediction: not two volumes' probabilities at once
        if world > 1:
            # every rank merges the shards in rank order, so all of them score the same rows
            shards = gather_objects((scorer, losses))
            scorer, losses = ValidationScorer(self.cfg.eval.contract, surface=False, soft=True), []
            for other, other_losses in shards:
                scorer.merge(other)
                losses += other_losses
        scores = scorer.result()
        image = scores.image_summary
        out = {"dice": scores.summary["dice"], "iou": scores.summary["iou"], "loss": float(np.mean(losses)) if losses else float("nan"),
               "soft_dice": scores.soft_dice, "images": float(len(scores.image_rows))}
        for k in ("dice_nonempty", "fp_rate_empty", "lesion_recall", "n_empty_empty"):
            if k in image:
                out[k] = image[k]
        if scores.volume_summary is not None:
            out["dice_per_volume"] = scores.volume_summary["dice"]
        return out

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        t0 = time.time()
        self.metrics = self.validate(pl_module, trainer) if len(self.val.images) else {}
        self.seconds = time.time() - t0
        monitor = self.cfg.train.monitor
        value = self.metrics.get(monitor, float("nan"))
        if value != value:  # NaN (e.g. only empty-empty cases with empty=nan): never "best"
            value = -1.0 if monitor != "loss" else 1e9
        pl_module.log("val/monitor", float(value), prog_bar=True)
        pl_module.log("val/dice", float(self.metrics.get("dice", float("nan"))), prog_bar=True)


class WeightEMA(Callback):
    """An exponential moving average (EMA) of the network's weights, which validation, checkpoints and inference use.

    After every optimiser step the average moves towards the weights: `ema = d * ema + (1 - d) * w`,
    BatchNorm running statistics included (integer buffers are copied). The decay `d` gives the
    average a time constant of `share` of the run's planned optimiser steps (`1 - d = 1 / (share *
    steps)`), so it averages over the same part of a short CPU run as of a long GPU run; in the
    first steps `d` is at most `(1 + n) / (10 + n)` (n updates so far), so the random
    initialisation is forgotten at once. At the end of each training epoch the average takes the
    trained weights' place in the network, before `ContractValidation` scores it and the
    checkpoint callbacks save it (what is validated is what is saved and predicted with); the
    trained weights wait in this callback and go back into the network when the next epoch starts.
    A checkpoint holds the average as the module's weights and the trained weights in this
    callback's state, so a resumed run continues both. (Lightning's `WeightAveraging` swaps the
    average in around Lightning's validation loop, which medseg turns off, and saves it only into
    checkpoints: the best checkpoint would be chosen by the trained weights' score.)

    Args:
        share: `train.ema_share` (> 0).
    """

    def __init__(self, share: float):
        self.share = float(share)
        self.decay = 0.0
        self.updates = 0
        self.ema: Optional[dict[str, torch.Tensor]] = None
        self.trained: Optional[dict[str, torch.Tensor]] = None  # the trained weights while the average sits in the network
        self._step = -1
        self._pairs: tuple[list, list, list] = ([], [], [])  # float averages, their live tensors, (int average, live) pairs

    def on_train_start(self, trainer, pl_module) -> None:
        steps = max(1, int(pl_module.steps_per_epoch) * int(trainer.max_epochs))
        self.decay = 1.0 - 1.0 / max(1.0, self.share * steps)
        if self.ema is None:  # a new run: the initial weights; a resumed one: the average its checkpoint restored
            self.ema = {k: v.detach().clone() for k, v in pl_module.net.state_dict().items()}
        self._step = int(trainer.global_step)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self.trained is not None:
            self._load(pl_module, self.trained)
            self.trained = None
        # once an epoch, not every step: state_dict()'s tensors share the parameters' storage
        live = pl_module.net.state_dict()
        floats = [k for k, e in self.ema.items() if e.is_floating_point()]
        self._pairs = ([self.ema[k] for k in floats], [live[k] for k in floats],
                       [(e, live[k]) for k, e in self.ema.items() if not e.is_floating_point()])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if int(trainer.global_step) == self._step:  # accumulating: no optimiser step yet
            return
        self._step = int(trainer.global_step)
        d = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        self.updates += 1
        averages, live, ints = self._pairs
        with torch.no_grad():
            torch._foreach_lerp_(averages, live, 1.0 - d)
            for e, v in ints:
                e.copy_(v)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.ema is None or self.trained is not None:
            return
        self.trained = {k: v.detach().clone() for k, v in pl_module.net.state_dict().items()}
        self._load(pl_module, self.ema)

    @staticmethod
    def _load(pl_module, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for k, v in pl_module.net.state_dict().items():
                v.copy_(state[k])

    def state_dict(self) -> dict[str, Any]:
        # while the average sits in the network it is the checkpoint's own weights: not stored twice
        return {"share": self.share, "updates": self.updates, "trained": self.trained,
                "ema": self.ema if self.trained is None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # ema None: on_train_start takes it from the restored network, which holds it
        self.updates = int(state["updates"])
        self.ema, self.trained = state["ema"], state["trained"]


class EpochLog(Callback):
    """One row per epoch: training losses per term, LR, batch composition, timing and validation metrics.

    Written to metrics/epochs.csv by rank 0 (a resumed run replaces the rows of epochs it
    trains again) and handed to every Lightning logger (TensorBoard, MLflow) at step = epoch.

    Args:
        run_dir: the run folder.
        audit: the composition audit whose columns go into the row.
        validation: the contract validation whose metrics go into the row (as val_*).
    """

    def __init__(self, run_dir: Path, audit: BatchCompositionAudit, validation: ContractValidation):
        self.run_dir = Path(run_dir)
        self.audit = audit
        self.validation = validation
        self.last_row: dict[str, Any] = {}

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        stats = pl_module.epoch_stats
        if trainer.world_size > 1:
            stats = stats.over_ranks(lambda v: gather_numbers(pl_module, v))
        row: dict[str, Any] = {
            "epoch": int(trainer.current_epoch),
            "step": int(trainer.global_step),
            "lr": float(trainer.optimizers[0].param_groups[0]["lr"]),
            **stats.columns(),
            **self.audit.columns,
            **stats.nonfinite_columns(),
            **stats.timing_columns(),
            # train.progressive: the epoch's training pixels as a share of the full size's
            **({"train_pixel_share": stats.pixel_share} if pl_module.cfg.train.progressive is not None else {}),
            **{f"val_{k}": v for k, v in self.validation.metrics.items()},
            "val_seconds": self.validation.seconds,
            "processes": int(trainer.world_size),
            "gpu_peak_gib": self._gpu_peak_gib(trainer, pl_module),
            # the process's peak resident memory so far (rank 0): flat over epochs and dataset sizes when streaming
            "rss_peak_mib": _rss_peak_mib(),
        }
        pl_module.log("train/loss", row["train_loss"])
        self.last_row = row
        if not trainer.is_global_zero:
            return
        path = self.run_dir / runfs.EPOCHS_CSV
        rows = [r for r in runfs.read_csv(path) if int(r["epoch"]) < row["epoch"]]
        runfs.write_csv(path, rows + [row])
        numbers = {k: v for k, v in row.items() if isinstance(v, (int, float)) and k not in ("epoch", "step")}
        for logger in trainer.loggers:
            logger.log_metrics(numbers, step=row["epoch"])


    @staticmethod
    def _gpu_peak_gib(trainer, pl_module):
        """Peak GPU memory allocated this epoch (GiB, the largest over ranks); None off CUDA."""
        if pl_module.device.type != "cuda":
            return None
        peak = np.asarray([torch.cuda.max_memory_allocated(pl_module.device) / 2**30])
        torch.cuda.reset_peak_memory_stats(pl_module.device)
        if trainer.world_size > 1:
            peak = gather_numbers(pl_module, peak)
        return float(np.max(peak))


class BudgetSchedule(Callback):
    """Keeps the whole LR schedule inside the wall-clock budget, and the budget used.

    The plan sets `train.epochs` from a step cost measured before training; the real epochs can
    be slower (a busy machine, slower validation) or faster (the measurement's start-up, a
    quieter machine). Slower: Lightning's `max_time` would stop training partway through the
    schedule, while the LR is still far above its floor, so the decay never happens. Faster: the
    run ends with budget left and, as measured, its best epoch the last. From the second epoch
    on, at the end of every epoch, this callback estimates an epoch's time from the epochs after
    the first (the first also pays for start-up: workers, the first validation, allocator
    warm-up) and the time elapsed from Lightning's `Timer` (which survives a resume).

    - Shortening (`schedule.follow_budget`): when the rest of the budget holds fewer epochs than
      are left, training ends after the epochs that fit and the decay is shortened to end there.
    - Lengthening (`schedule.fill_budget`, set by the plan): while training is in the first half
      of its epochs, when the rest of the budget holds more epochs than are left with one to
      spare, the run goes on to them (at most `MAX_EPOCHS`) and the decay is stretched. Only in
      the first half, where the LR is still high and stretching the cosine moves it little. The
      spare epoch damps a noisy estimate's back and forth; a run whose epochs slow down later
      is shortened again (BENCHMARKS §5e: stretched to 65 epochs, ended at 61).

    The first change is reported when it happens; later ones (a noisy estimate moves the count
    by an epoch or two several times: 10 lines on CHASE, BENCHMARKS §5e) are summed up in one
    line when training ends.

    Args:
        budget_minutes: `train.budget_minutes`.
        warn: where the changes are reported (fit: train.log and the console).
        shorten: `schedule.follow_budget`.
        lengthen: `schedule.fill_budget`.
    """

    def __init__(self, budget_minutes: float, warn: Optional[Callable[[str], None]] = None,
                 shorten: bool = True, lengthen: bool = False):
        self.budget_s = 60.0 * float(budget_minutes)
        self.warn = warn
        self.shorten, self.lengthen = bool(shorten), bool(lengthen)
        self.first_epoch_end: Optional[tuple[int, float]] = None  # (epochs done, Timer seconds) when first seen
        self.history: list[int] = []  # the planned epochs, then each change's
        # train.progressive: each epoch's training seconds and pixel share since the first epoch seen
        self.train_s: list[float] = []
        self.shares: list[float] = []

    @staticmethod
    def _schedules(trainer) -> list[LRSchedule]:
        out = []
        for conf in trainer.lr_scheduler_configs:
            out += [f for f in getattr(conf.scheduler, "lr_lambdas", []) if isinstance(f, LRSchedule)]
        return out

    def on_train_start(self, trainer, pl_module) -> None:
        self.history = [int(trainer.max_epochs)]  # planned
        # a resumed run keeps the shortening or lengthening its checkpointed schedule carries
        for f in self._schedules(trainer):
            held = math.ceil(f.total_steps / max(1, pl_module.steps_per_epoch))
            if held < trainer.max_epochs or (self.lengthen and held > trainer.max_epochs):
                trainer.fit_loop.max_epochs = max(min(held, MAX_EPOCHS), trainer.current_epoch + 1)

    def _set_epochs(self, trainer, pl_module, epochs: int) -> None:
        trainer.fit_loop.max_epochs = epochs
        for f in self._schedules(trainer):
            f.total_steps = epochs * pl_module.steps_per_epoch

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
        if timer is None:
            return
        done = int(trainer.current_epoch) + 1
        elapsed = float(timer.time_elapsed("train"))
        if self.first_epoch_end is None:
            self.first_epoch_end = (done, elapsed)  # after a resume: the first epoch this process trained
            return
        since_done, since_s = self.first_epoch_end
        per_epoch = (elapsed - since_s) / max(done - since_done, 1)
        rest = max(0.0, self.budget_s - elapsed)
        progressive = pl_module.cfg.train.progressive
        if progressive is None:
            short = long = done + int(rest // max(per_epoch, 1e-9))
        else:
            short, long = self._progressive_fits(pl_module, progressive, done, rest, per_epoch)
        # every rank must stop after the same epoch: rank 0's clock decides
        short, long = (int(v) for v in trainer.strategy.broadcast((short, long), src=0))
        now, longer = int(trainer.max_epochs), min(long - 1, MAX_EPOCHS)  # lengthening keeps one epoch spare
        if self.shorten and short < now:
            self._set_epochs(trainer, pl_module, short)
            change = f"{short} epochs, not the planned {self.history[0]}; training ends after epoch {short - 1} and the LR decay was shortened to end there (schedule.follow_budget)"
        elif self.lengthen and 2 * done <= now and longer > now:
            self._set_epochs(trainer, pl_module, longer)
            change = (f"{long} epochs, not the planned {self.history[0]}; training goes on to {longer} (one kept spare) and the "
                      "LR decay was stretched to end there (schedule.fill_budget)")
        else:
            return
        self.history.append(int(trainer.max_epochs))
        if self.warn is not None and len(self.history) == 2:
            self.warn(f"train.budget_minutes {self.budget_s / 60:g}: epochs take {per_epoch:.1f} s, so the budget holds {change}")

    def _progressive_fits(self, pl_module, progressive, done: int, rest: float, per_epoch: float) -> tuple[int, int]:
        """train.progressive: (the most epochs the rest may hold, the fewest it surely holds), from the training
        seconds and pixel shares of the epochs so far (`progressive.train_cost_bounds`); validation and the rest of an
        epoch do not scale. Shortening uses the first, lengthening the second, so an uncertain cost model changes
        nothing; once the epochs measured differ in size, the two agree."""
        stats = pl_module.epoch_stats
        self.train_s.append(stats.t_last - stats.t0)
        self.shares.append(stats.pixel_share)
        other = max(0.0, per_epoch - sum(self.train_s) / len(self.train_s))
        shares = shares_for(progressive, pl_module.train_full_size, pl_module.stride)
        low, high = train_cost_bounds(self.train_s, self.shares)
        return (epochs_within(rest, done, other + low[0], low[1], shares, MAX_EPOCHS),
                epochs_within(rest, done, other + high[0], high[1], shares, MAX_EPOCHS))

    def on_train_end(self, trainer, pl_module) -> None:
        if self.warn is not None and len(self.history) > 2:
            self.warn(f"train.budget_minutes {self.budget_s / 60:g}: as the epochs' times changed, the epoch count was changed "
                      f"{len(self.history) - 1} times in all ({' -> '.join(map(str, self.history))}; "
                      "the LR decay ends at the last)")


def _rss_peak_mib() -> Optional[float]:
    try:
        import resource
    except ImportError:  # not POSIX
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class SameRun(Callback):
    """Under DDP: every rank checks, once the process group exists, that it trains the run folder rank 0 announced.

    Args:
        run_dir: the run folder this rank was given.
    """

    def __init__(self, run_dir: Path):
        self.run_dir = str(Path(run_dir).resolve())

    def setup(self, trainer, pl_module, stage: str) -> None:
        if trainer.world_size > 1:
            lead = trainer.strategy.broadcast(self.run_dir, src=0)
            if lead != self.run_dir:
                raise MedsegError(f"DDP: rank {trainer.global_rank} was set to train {self.run_dir} but rank 0 trains {lead} "
                                  "(a stale .medseg-ddp file from an earlier job? remove it and restart every rank)")


class KillSwitch(Callback):
    """Fault injection for the resume tests: MEDSEG_KILL_AT_STEP=N ends the process hard at step N."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args, **kwargs):
        if trainer.global_step >= self.step:
            os._exit(137)


class LatestCheckpoint(ModelCheckpoint):
    """checkpoints/last.ckpt: the latest finished epoch, what `fit --resume` continues from.

    Its own callback because Lightning 2.6's ``save_last`` writes last.ckpt only at epochs that saved a
    new best: a resume restarted from the best epoch and `evaluate --checkpoint last` scored the best.
    Written at the end of an epoch once `every_s` seconds have passed since the last write (0: every
    epoch), and always at the final one (max_epochs reached, or a callback such as the budget or early
    stopping stopping the run: Lightning runs checkpoint callbacks after the others).

    Args:
        dirpath: the run's checkpoints folder.
        every_s: the least seconds between two writes.
    """

    def __init__(self, dirpath: Path, every_s: float):
        super().__init__(dirpath=dirpath, filename=Path(runfs.LAST_CKPT).stem, monitor=None, save_top_k=1,
                         save_on_train_epoch_end=True, enable_version_counter=False)
        self.every_s = float(every_s)
        self._written_at: Optional[float] = None

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        final = trainer.should_stop or (trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs)
        due = final or self._written_at is None or time.monotonic() - self._written_at >= self.every_s
        # rank 0 decides for all: saving is collective under DDP (a barrier), and each rank's clock differs a little
        if not trainer.strategy.broadcast(due, src=0):
            return
        super().on_train_epoch_end(trainer, pl_module)
        self._written_at = time.monotonic()


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write checkpoints to a temporary file and rename, so a kill never leaves half a file; read them without unpickling code."""

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        return super().load_checkpoint(path, map_location=lambda storage, loc: storage, weights_only=True)

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        path = str(path)
        tmp = path + ".tmp"
        torch.save(checkpoint, tmp)
        os.replace(tmp, path)

