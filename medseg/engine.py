"""Lightning wiring: the LightningModule, its optimiser/schedule, checkpointing and epoch log.

Validation does not use Lightning's validation loop: at the end of each training epoch the
module scores the validation images with `infer.predict_probs` (the same function `evaluate`
uses) under the metric contract, so the number that picks the best checkpoint is the number
`medseg evaluate` recomputes.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from medseg import run as runfs
from medseg.config import Config
from medseg.data.sampling import audit_warning, composition_columns, epoch_target
from medseg.data.slices import slices_by_volume
from medseg.infer import predict_probs
from medseg.losses import build_loss
from medseg.metrics import case_metrics, summarize
from medseg.models import create_model, load_weights


def lr_lambda(cfg: Config, total_steps: int, steps_per_epoch: int):
    """Multiplier on the peak LR per optimiser step: linear warm-up, then cosine/poly decay."""
    warm = int(round(cfg.schedule.warmup_epochs * steps_per_epoch))
    floor = cfg.schedule.min_lr_ratio
    name = cfg.schedule.name

    def f(step: int) -> float:
        if warm > 0 and step < warm:
            # start at 1/warm, not 0, so the first step already learns something
            return (step + 1) / warm
        if name in ("constant", "plateau"):
            return 1.0
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        if name == "cosine":
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        return floor + (1 - floor) * (1 - progress) ** cfg.schedule.poly_power

    return f


class SegModule(pl.LightningModule):
    """Network + loss + optimiser for one run; validates under the metric contract.

    Args:
        cfg: the resolved config.
        in_channels: from the data.
        pos_fraction: training foreground pixel fraction (for `pos_weight: auto`).
        val_images / val_masks: validation arrays at input size (N, C, H, W) / (N, H, W).
        val_meta: per-image meta (sample_id, volume, slice) for per-volume metrics.
        steps_per_epoch: optimiser steps per epoch (for the schedule).
        run_dir: where epochs.csv is written (None: nothing is written).
        precision: the Lightning precision string in use.
    """

    def __init__(
        self,
        cfg: Config,
        in_channels: int,
        pos_fraction: Optional[float] = None,
        val_images: Optional[np.ndarray] = None,
        val_masks: Optional[np.ndarray] = None,
        val_meta: Optional[list[dict]] = None,
        steps_per_epoch: int = 1,
        run_dir: Optional[Path] = None,
        precision: str = "32-true",
    ):
        super().__init__()
        self.cfg = cfg
        self.net = create_model(cfg.model.name, in_channels, cfg.model.channels, cfg.model.dropout, cfg.model.res_units)
        if cfg.model.pretrained is not None:
            self.pretrained_info = load_weights(self.net, cfg.model.pretrained)
        if cfg.train.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.loss_fn = build_loss(cfg.loss, pos_fraction)
        self.val_images, self.val_masks, self.val_meta = val_images, val_masks, val_meta or []
        self.steps_per_epoch = steps_per_epoch
        self.run_dir = Path(run_dir) if run_dir else None
        self.precision_name = precision
        self.console = None  # fit sets its rich Console: where training warnings are shown
        self._reset_epoch_stats()

    # -- training ---------------------------------------------------------------------------
    def _reset_epoch_stats(self) -> None:
        self._stats: dict[str, Any] = {"loss": [], "terms": {}, "pos_img": [], "pos_px": [], "t0": time.time(), "n": 0}

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y, _ = batch
        if self.cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        logits = self.net(x)
        loss = self.loss_fn(logits, y)
        if not torch.isfinite(loss):
            # recorded (and later diagnosed) rather than silently skipped
            self._stats.setdefault("nonfinite_steps", []).append(int(self.global_step))
            # which terms overflowed, so `medseg doctor` can name the one to fix
            bad_terms = [k for k, v in self.loss_fn.last_terms.items() if not math.isfinite(v)] or ["total"]
            self._stats.setdefault("nonfinite_terms", set()).update(bad_terms)
        s = self._stats
        s["loss"].append(float(loss.detach()))
        for k, v in self.loss_fn.last_terms.items():
            s["terms"].setdefault(k, []).append(v)
        pos = (y.flatten(1).amax(1) > 0).float()
        s["pos_img"].append(float(pos.mean()))
        s["pos_px"].append(float(y.mean()))
        s["n"] += len(x)
        self.log("train/loss_step", loss.detach(), prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def on_train_epoch_start(self) -> None:
        self._reset_epoch_stats()

    def on_train_epoch_end(self) -> None:
        s = self._stats
        train_seconds = time.time() - s["t0"]
        row: dict[str, Any] = {
            "epoch": int(self.current_epoch),
            "step": int(self.global_step),
            "lr": float(self.trainer.optimizers[0].param_groups[0]["lr"]),
            "train_loss": float(np.mean(s["loss"])) if s["loss"] else float("nan"),
        }
        for k, v in s["terms"].items():
            row[f"train_loss_{k}"] = float(np.mean(v))
        # batch composition as the model received it (after crops and augmentation) vs the sampler's target
        target = epoch_target(self.cfg.sampler, int(self.current_epoch), self.cfg.train.epochs)
        row.update(composition_columns(s["pos_img"], s["pos_px"], target))
        warning = audit_warning(row["epoch"], row["batch_pos_image_share_mean"], target)
        if warning and self.trainer.is_global_zero:
            self._warn(warning)
        row["nonfinite_steps"] = len(s.get("nonfinite_steps", []))
        row["first_nonfinite_step"] = s["nonfinite_steps"][0] if s.get("nonfinite_steps") else float("nan")
        row["nonfinite_terms"] = ";".join(sorted(s.get("nonfinite_terms", ())))
        row["train_seconds"] = train_seconds
        row["train_images_per_s"] = s["n"] / max(train_seconds, 1e-9)
        t1 = time.time()
        if self.val_images is not None and len(self.val_images):
            val = self.validate_arrays()
            row.update({f"val_{k}": v for k, v in val.items()})
        row["val_seconds"] = time.time() - t1
        monitor = self.cfg.train.monitor
        mval = row.get(f"val_{monitor}", float("nan"))
        if mval != mval:  # NaN (e.g. only empty-empty cases with empty=nan): never "best"
            mval = -1.0 if monitor != "loss" else 1e9
        self.log("val/monitor", float(mval), prog_bar=True)
        self.log("val/dice", float(row.get("val_dice", float("nan"))), prog_bar=True)
        self.log("train/loss", row["train_loss"])
        self.last_row = row
        if self.run_dir is not None and self.trainer.is_global_zero:
            rows = [r for r in runfs.read_csv(self.run_dir / runfs.EPOCHS_CSV) if int(r["epoch"]) < row["epoch"]]
            runfs.write_csv(self.run_dir / runfs.EPOCHS_CSV, rows + [row])
            for logger in self.loggers:
                if hasattr(logger, "log_metrics"):
                    logger.log_metrics({k: v for k, v in row.items() if isinstance(v, (int, float)) and k not in ("epoch", "step")}, step=row["epoch"])

    def _warn(self, message: str) -> None:
        """A training warning, into the run's train.log (the logger fit sets up) and onto the console."""
        logging.getLogger(f"medseg.run.{self.run_dir.name}" if self.run_dir else "medseg.run").warning(message)
        from rich.console import Console
        from rich.markup import escape

        (self.console or Console(stderr=True)).print(f"[yellow]WARNING {escape(message)}")

    def validate_arrays(self) -> dict[str, float]:
        """Hard (per contract) validation metrics on the held validation arrays."""
        probs = predict_probs(
            self.net, self.val_images, self.cfg.eval.batch_size, self.precision_name, self.device, self.cfg.train.channels_last
        )
        contract = self.cfg.eval.contract
        with torch.no_grad():
            logits = torch.logit(torch.from_numpy(probs).clamp(1e-6, 1 - 1e-6))[:, None]
            val_loss = float(self.loss_fn(logits, torch.from_numpy(self.val_masks).float()[:, None]))
        rows = [case_metrics(p, m, contract, surface=False) for p, m in zip(probs, self.val_masks)]
        summ = summarize(rows, contract.model_copy(update={"reduction": "per_image"}) if contract.reduction == "per_volume" else contract)
        out = {"dice": summ["dice"], "iou": summ["iou"], "loss": val_loss}
        soft = contract.model_copy(update={"kind": "soft"})
        out["soft_dice"] = summarize([case_metrics(p, m, soft, surface=False) for p, m in zip(probs, self.val_masks)], soft)["dice"]
        for k in ("dice_nonempty", "fp_rate_empty", "lesion_recall", "n_empty_empty"):
            if k in summ:
                out[k] = summ[k]
        if self.val_meta and self.val_meta[0].get("volume") is not None:
            vol = volume_metrics(probs, self.val_masks, self.val_meta, contract, surface=False)
            out["dice_per_volume"] = vol["summary"]["dice"]
            if contract.reduction == "per_volume":
                out["dice"] = vol["summary"]["dice"]
                out["iou"] = vol["summary"]["iou"]
        return out

    # -- optimiser -------------------------------------------------------------------------
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


def volume_metrics(probs: np.ndarray, masks: np.ndarray, meta: list[dict], contract, surface: bool = True) -> dict:
    """Stack 2D slice predictions back into volumes and score each volume."""
    rows = []
    for vol, idx in slices_by_volume(meta).items():
        spacing = meta[idx[0]].get("volume_spacing")
        r = case_metrics(probs[idx], masks[idx], contract, spacing=tuple(spacing) if spacing else None, surface=surface)
        rows.append({"volume": vol, "n_slices": len(idx), **r})
    return {"rows": rows, "summary": summarize(rows, contract)}


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write checkpoints to a temporary file and rename, so a kill never leaves half a file."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        path = str(path)
        tmp = path + ".tmp"
        torch.save(checkpoint, tmp)
        os.replace(tmp, path)


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls run in hardware (elsewhere bf16 autocast can be slower than fp32)."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # private helpers; absent from other torch builds
        return False


def resolve_precision(requested: str, accelerator: str) -> str:
    cuda = torch.cuda.is_available() and accelerator != "cpu"
    if requested == "auto":
        if cuda:
            return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
        # measured on a 2-core AVX512-BF16 CPU: 1.77x the fp32 step for ResNet-34 and higher
        # Dice at equal budget on both cross-validation folds of BUSI (BENCHMARKS.md §5c)
        return "bf16-mixed" if cpu_has_native_bf16() else "32-true"
    if requested == "bf16":
        return "bf16-mixed"
    if requested == "16":
        if not cuda:
            from medseg.errors import MedsegError

            raise MedsegError("config error: train.precision: '16' (float16 mixed) needs a GPU; use 'bf16' or '32' on CPU")
        return "16-mixed"
    return "32-true"
