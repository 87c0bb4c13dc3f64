"""The LightningModule: the network, the loss, the training step and the optimiser with its schedule.

Everything else a fit does per epoch (validation under the metric contract, the batch
composition audit, the epoch log) is a callback (`medseg.training.callbacks`), so this module
is also what `planning.stepcost` times: the real training step, not a copy of it.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Optional

import lightning.pytorch as pl
import numpy as np
import torch

from medseg.config import Config
from medseg.losses import build_loss
from medseg.models import create_model_from_config, get_model_spec, load_weights
from medseg.training.progressive import resize_batch, size_for


# A warm-up longer than this share of training leaves the LR below its peak for most of the run and
# cuts the decay short: the plan keeps planned warm-ups below it, the doctor warns above it.
WARMUP_MAX_SHARE = 0.25
# the warm-up the plan sets when the configured one would take too large a share of the planned epochs
WARMUP_PLANNED_SHARE = 0.1
# the most epochs a run plans or a budget stretches it to (a tiny set under a long budget)
MAX_EPOCHS = 1000
# Fewer validation cases than this cannot pick an epoch or a post-processing rule: the plan deploys the last
# epoch untuned, the doctor flags a run that picked on fewer. On BUSI the tuned rule first gained on both folds
# at 47 validation images and broke even at 24-25, where the picked epoch still lost up to 0.04 (BENCHMARKS.md §5k).
SELECT_MIN_VAL_CASES = 30


class LRSchedule:
    """Multiplier on the peak LR per optimiser step: linear warm-up, then cosine/poly decay to the floor.

    A callable object, not a closure, so that `LambdaLR` saves its attributes in checkpoints:
    a decay the time budget shortened (`training.callbacks.BudgetSchedule`) resumes shortened.

    Args:
        cfg: the resolved config (its `schedule` section).
        total_steps: optimiser steps the decay spans (warm-up included).
        steps_per_epoch: optimiser steps per epoch (converts the warm-up's epochs to steps).
    """

    def __init__(self, cfg: Config, total_steps: int, steps_per_epoch: int):
        self.warm = int(round(cfg.schedule.warmup_epochs * steps_per_epoch))
        self.floor = float(cfg.schedule.min_lr_ratio)
        self.name = cfg.schedule.name
        self.power = float(cfg.schedule.poly_power)
        self.total_steps = int(total_steps)

    def __call__(self, step: int) -> float:
        warm = self.warm
        if warm > 0 and step < warm:
            # start at 1/warm, not 0, so the first step already learns something
            return (step + 1) / warm
        if self.name in ("constant", "plateau"):
            return 1.0
        progress = min(1.0, (step - warm) / max(1, self.total_steps - warm))
        if self.name == "cosine":
            return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * progress))
        return self.floor + (1 - self.floor) * (1 - progress) ** self.power


def lr_lambda(cfg: Config, total_steps: int, steps_per_epoch: int) -> LRSchedule:
    """The LR multiplier per optimiser step for `cfg.schedule` (an `LRSchedule`)."""
    return LRSchedule(cfg, total_steps, steps_per_epoch)


class EpochStats:
    """What the training steps of one epoch recorded: losses per term, non-finite steps, images, time."""

    def __init__(self) -> None:
        self.loss: list[float] = []
        self.terms: dict[str, list[float]] = {}
        self.nonfinite_steps: list[int] = []
        self.nonfinite_terms: set[str] = set()
        self.n_images = 0
        # the training pixels of this epoch's batches as a share of the full size's (train.progressive)
        self.pixel_share = 1.0
        self.t0 = time.time()
        self.t_last = self.t0

    def columns(self) -> dict[str, Any]:
        """The epoch's training columns of epochs.csv, in their order."""
        row: dict[str, Any] = {"train_loss": float(np.mean(self.loss)) if self.loss else float("nan")}
        for k, v in self.terms.items():
            row[f"train_loss_{k}"] = float(np.mean(v))
        return row

    def nonfinite_columns(self) -> dict[str, Any]:
        return {
            "nonfinite_steps": len(self.nonfinite_steps),
            "first_nonfinite_step": self.nonfinite_steps[0] if self.nonfinite_steps else float("nan"),
            "nonfinite_terms": ";".join(sorted(self.nonfinite_terms)),
        }

    def over_ranks(self, gather: Callable[[np.ndarray], np.ndarray]) -> "EpochStats":
        """The epoch over every DDP rank: losses pooled (each rank's micro-batch is an equal share of the step),
        images summed; non-finite steps: the most any rank had and the first of any rank (a non-finite
        loss on one rank poisons every rank's averaged gradient); the terms named are this rank's;
        timing stays this rank's.

        Args:
            gather: array -> (world, ...) the same array from every rank (`distributed.gather_numbers`).
        """
        keys = sorted(self.terms)
        vec = np.array([float(np.sum(self.loss)), len(self.loss), self.n_images]
                       + [float(np.sum(self.terms[k])) for k in keys] + [len(self.terms[k]) for k in keys], np.float64)
        total = gather(vec).sum(axis=0)
        bad = gather(np.array([len(self.nonfinite_steps), self.nonfinite_steps[0] if self.nonfinite_steps else np.inf], np.float64))
        first = float(bad[:, 1].min())
        steps = [int(first)] * int(bad[:, 0].max()) if np.isfinite(first) else []
        out = EpochStats()
        out.t0, out.t_last = self.t0, self.t_last
        n = max(1, int(total[1]))
        out.loss = [total[0] / n]
        out.terms = {k: [total[3 + i] / max(1.0, total[3 + len(keys) + i])] for i, k in enumerate(keys)}
        out.n_images = int(total[2])
        out.nonfinite_steps = steps
        out.nonfinite_terms = set(self.nonfinite_terms)
        out.pixel_share = self.pixel_share
        return out

    def timing_columns(self) -> dict[str, float]:
        seconds = self.t_last - self.t0
        return {"train_seconds": seconds, "train_images_per_s": self.n_images / max(seconds, 1e-9)}


class SegModule(pl.LightningModule):
    """Network + loss + optimiser for one run.

    Args:
        cfg: the resolved config.
        in_channels: from the data.
        pos_fraction: training foreground pixel fraction (for `pos_weight: auto`).
        steps_per_epoch: optimiser steps per epoch (for the schedule).
        precision: the Lightning precision string in use.
    """

    def __init__(self, cfg: Config, in_channels: int, pos_fraction: Optional[float] = None, steps_per_epoch: int = 1,
                 precision: str = "32-true"):
        super().__init__()
        self.cfg = cfg
        self.net = create_model_from_config(cfg.model, in_channels)
        if cfg.model.pretrained is not None:
            spec = get_model_spec(cfg.model.name)
            self.pretrained_info = load_weights(self.net, cfg.model.pretrained, cfg.model.pretrained_min_share, spec.encoder_prefixes)
        if cfg.train.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        if cfg.train.compile:
            self.net.compile()  # in place: the state dict keeps its keys, checkpoints load into an uncompiled net
        self.loss_fn = build_loss(cfg.loss, pos_fraction)
        self.steps_per_epoch = steps_per_epoch
        self.precision_name = precision
        self.epoch_stats = EpochStats()
        self.stride = get_model_spec(cfg.model.name).output_stride(cfg.model.channels)
        self.train_full_size: tuple[int, ...] = ()  # the training inputs' size before train.progressive resizes them

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y, _ = batch
        size = None if self._trainer is None else size_for(self.cfg, x.shape[2:], int(self.current_epoch), int(self.trainer.max_epochs), self.stride)
        if size is not None:
            self.train_full_size = tuple(int(v) for v in x.shape[2:])
            full = float(np.prod(x.shape[2:]))
            x, y = resize_batch(x, y, size)
            self.epoch_stats.pixel_share = float(np.prod(size)) / full
        if self.cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        logits = self.net(x)
        loss = self.loss_fn(logits, y)
        s = self.epoch_stats
        if not torch.isfinite(loss):
            # recorded (and later diagnosed) rather than silently skipped
            s.nonfinite_steps.append(int(self.global_step))
            # which terms overflowed, so `medseg doctor` can name the one to fix
            s.nonfinite_terms.update([k for k, v in self.loss_fn.last_terms.items() if not math.isfinite(v)] or ["total"])
        s.loss.append(float(loss.detach()))
        for k, v in self.loss_fn.last_terms.items():
            s.terms.setdefault(k, []).append(v)
        s.n_images += len(x)
        if self._trainer is not None:  # planning times this step outside a Trainer
            self.log("train/loss_step", loss.detach(), prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def on_train_epoch_start(self) -> None:
        self.epoch_stats = EpochStats()
        # a loss schedule's terms start and stop at shares of the epochs; the budget may have moved max_epochs
        self.loss_fn.set_progress(int(self.current_epoch) / max(1, int(self.trainer.max_epochs)))

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.epoch_stats.t_last = time.time()

    def configure_optimizers(self):
        o = self.cfg.optim
        if o.name == "adamw":
            opt = torch.optim.AdamW(self.net.parameters(), lr=o.lr, weight_decay=o.weight_decay)
        else:
            opt = torch.optim.SGD(self.net.parameters(), lr=o.lr, momentum=o.momentum, nesterov=True, weight_decay=o.weight_decay)
        total = self.steps_per_epoch * self.cfg.train.epochs
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(self.cfg, total, self.steps_per_epoch))
        scheds = [{"scheduler": sched, "interval": "step"}]
        if self.cfg.schedule.name == "plateau":
            mode = "min" if self.cfg.train.monitor == "loss" else "max"
            plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, mode=mode, factor=self.cfg.schedule.plateau_factor, patience=self.cfg.schedule.plateau_patience
            )
            scheds.append({"scheduler": plateau, "interval": "epoch", "monitor": "val/monitor"})
        return [opt], scheds
