"""What a fit does besides the training step, each a Lightning callback.

* `BatchCompositionAudit`: the positive share of images and pixels in every batch as the
  model received it (after crops and augmentation) against the sampler's target;
* `ContractValidation`: the validation images scored under the metric contract with the
  same inference and the same scorer `medseg evaluate` uses, logged as `val/monitor` (which
  picks the best checkpoint and drives early stopping);
* `EpochLog`: one row per epoch into metrics/epochs.csv and the loggers;
* `KillSwitch`: fault injection for the resume tests.

Lightning runs these before the checkpoint and early-stopping callbacks at the end of each
training epoch, in the order the trainer lists them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO

from medseg import runfolder as runfs
from medseg.config import Config
from medseg.data.arrays import SplitArrays
from medseg.data.sampling import audit_warning, composition_columns, epoch_target
from medseg.inference import predict_probs
from medseg.metrics.validation import score_validation


class BatchCompositionAudit(Callback):
    """Per-epoch batch composition columns, and a warning when the realised share is off the target.

    Args:
        cfg: the resolved config (sampler target and epochs).
        warn: called with a warning line (fit writes it to train.log and the console).
    """

    def __init__(self, cfg: Config, warn: Optional[Callable[[str], None]] = None):
        self.cfg = cfg
        self.warn = warn
        self.pos_img: list[float] = []
        self.pos_px: list[float] = []
        self.columns: dict[str, Any] = {}

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.pos_img, self.pos_px = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        y = batch[1]
        self.pos_img.append(float((y.flatten(1).amax(1) > 0).float().mean()))
        self.pos_px.append(float(y.mean()))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        epoch = int(trainer.current_epoch)
        target = epoch_target(self.cfg.sampler, epoch, self.cfg.train.epochs)
        self.columns = composition_columns(self.pos_img, self.pos_px, target)
        warning = audit_warning(epoch, self.columns["batch_pos_image_share_mean"], target)
        if warning and trainer.is_global_zero and self.warn is not None:
            self.warn(warning)


class ContractValidation(Callback):
    """Validation metrics under the run's metric contract at the end of every training epoch.

    Args:
        cfg: the resolved config (contract, eval batch size, monitor, loss for the val loss).
        val: the validation arrays.
        precision: the Lightning precision string in use (inference runs under the same autocast).
    """

    def __init__(self, cfg: Config, val: SplitArrays, precision: str):
        self.cfg = cfg
        self.val = val
        self.precision = precision
        self.metrics: dict[str, float] = {}
        self.seconds = 0.0

    def validate(self, pl_module) -> dict[str, float]:
        """Hard (per contract) validation metrics of the module's network now."""
        probs = predict_probs(pl_module.net, self.val.images, self.cfg.eval.batch_size, self.precision, pl_module.device,
                              self.cfg.train.channels_last)
        with torch.no_grad():
            logits = torch.logit(torch.from_numpy(probs).clamp(1e-6, 1 - 1e-6))[:, None]
            val_loss = float(pl_module.loss_fn(logits, torch.from_numpy(self.val.masks).float()[:, None]))
        scores = score_validation(probs, self.val.masks, self.val.meta, self.cfg.eval.contract, surface=False)
        image = scores.image_summary
        out = {"dice": scores.summary["dice"], "iou": scores.summary["iou"], "loss": val_loss, "soft_dice": scores.soft_dice}
        for k in ("dice_nonempty", "fp_rate_empty", "lesion_recall", "n_empty_empty"):
            if k in image:
                out[k] = image[k]
        if scores.volume_summary is not None:
            out["dice_per_volume"] = scores.volume_summary["dice"]
        return out

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        t0 = time.time()
        self.metrics = self.validate(pl_module) if len(self.val.images) else {}
        self.seconds = time.time() - t0
        monitor = self.cfg.train.monitor
        value = self.metrics.get(monitor, float("nan"))
        if value != value:  # NaN (e.g. only empty-empty cases with empty=nan): never "best"
            value = -1.0 if monitor != "loss" else 1e9
        pl_module.log("val/monitor", float(value), prog_bar=True)
        pl_module.log("val/dice", float(self.metrics.get("dice", float("nan"))), prog_bar=True)


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
        row: dict[str, Any] = {
            "epoch": int(trainer.current_epoch),
            "step": int(trainer.global_step),
            "lr": float(trainer.optimizers[0].param_groups[0]["lr"]),
            **stats.columns(),
            **self.audit.columns,
            **stats.nonfinite_columns(),
            **stats.timing_columns(),
            **{f"val_{k}": v for k, v in self.validation.metrics.items()},
            "val_seconds": self.validation.seconds,
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


class KillSwitch(Callback):
    """Fault injection for the resume tests: MEDSEG_KILL_AT_STEP=N ends the process hard at step N."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args, **kwargs):
        if trainer.global_step >= self.step:
            os._exit(137)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write checkpoints to a temporary file and rename, so a kill never leaves half a file; read them without unpickling code."""

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        return super().load_checkpoint(path, map_location=lambda storage, loc: storage, weights_only=True)

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        path = str(path)
        tmp = path + ".tmp"
        torch.save(checkpoint, tmp)
        os.replace(tmp, path)

