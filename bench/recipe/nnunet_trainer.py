"""nnU-Net v2 trainers for the recipe benchmark: stock nnU-Net, only the training length changes.

This file is imported by nnU-Net itself (inside its own venv), never by medseg: the runner
(bench/recipe/nnunet_runner.py) copies it into a private folder and points the
`nnUNet_extTrainer` environment variable there, which nnunetv2 >= 2.6 searches for trainer
classes (both `nnUNetv2_train -tr` and `nnUNetv2_predict -tr`).

nnUNetTrainer_MedsegShort
    nnUNetTrainer with num_iterations_per_epoch, num_val_iterations_per_epoch and num_epochs
    taken from the environment, so that its own poly LR schedule runs to the end within a
    wall-clock budget. Loss, augmentation, batch, patch, deep supervision, optimizer and LR
    are untouched. With MEDSEG_BENCH_NNUNET_BUDGET_S > 0 the number of epochs is re-derived
    once, after epoch 0, from that epoch's measured time (which includes warm-up, so it is
    conservative). Epoch 0 runs at the initial LR whatever num_epochs is, so this is exactly
    the schedule the trainer would have had with that num_epochs from the start. If a later
    epoch shows the budget would be overrun, num_epochs shrinks (a guard, recorded).
nnUNetTrainer_Medseg1epoch
    Stock nnUNetTrainer_1epoch (1 epoch x 250 iterations + 50 validation iterations).

Both write `medseg_timing.json` to the fold folder (training-loop seconds, iterations, batch
size, patch size, per-epoch times and LRs) and, unless MEDSEG_BENCH_NNUNET_FINAL_VAL=1, skip
nnU-Net's post-training sliding-window prediction of the validation cases: the benchmark
predicts the test cases separately and never reads it, so it would only add wall time.

Environment:
    MEDSEG_BENCH_NNUNET_ITERS       training iterations per epoch (short; default 5)
    MEDSEG_BENCH_NNUNET_VAL_ITERS   validation iterations per epoch (short; default 1)
    MEDSEG_BENCH_NNUNET_EPOCHS      initial number of epochs (short; default 8)
    MEDSEG_BENCH_NNUNET_BUDGET_S    training-loop budget in seconds; 0 keeps EPOCHS fixed
    MEDSEG_BENCH_NNUNET_FINAL_VAL   "1" runs nnU-Net's final validation as usual
"""

from __future__ import annotations

import json
import math
import os
import time
from os.path import join

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.training.nnUNetTrainer.variants.training_length.nnUNetTrainer_Xepochs import nnUNetTrainer_1epoch


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


class _MedsegTiming:
    """Mixin: times the training loop and writes medseg_timing.json; nothing about training changes."""

    _medseg_budget_s = 0.0

    def _medseg_setup(self) -> None:
        self._medseg = {"trainer": type(self).__name__, "num_epochs_initial": self.num_epochs,
                        "budget_s": self._medseg_budget_s, "epoch_seconds": [], "epoch_lr": [],
                        "train_step_seconds": [], "adapted_after_epoch0": False, "shrunk_after_epoch": []}

    def on_train_start(self):
        t = time.perf_counter()
        super().on_train_start()
        self._medseg["on_train_start_seconds"] = time.perf_counter() - t
        self._medseg_t0 = time.perf_counter()

    def on_epoch_start(self):
        self._medseg_epoch_t0 = time.perf_counter()
        super().on_epoch_start()

    def train_step(self, batch: dict) -> dict:
        t = time.perf_counter()
        out = super().train_step(batch)
        steps = self._medseg["train_step_seconds"]
        steps.append(time.perf_counter() - t)
        # a long epoch (the stock 1epoch trainer: 250 iterations, hours on a CPU) says how far it is
        if len(steps) % 10 == 0:
            print(f"[medseg] {len(steps)} training iterations, {sum(steps[-10:]) / 10:.1f}s each over the last 10", flush=True)
        return out

    def on_epoch_end(self):
        m = self._medseg
        m["epoch_seconds"].append(time.perf_counter() - self._medseg_epoch_t0)
        m["epoch_lr"].append(self.optimizer.param_groups[0]["lr"])
        if self._medseg_budget_s > 0:
            self._medseg_fit_budget()
        super().on_epoch_end()
        elapsed = time.perf_counter() - self._medseg_t0
        print(f"[medseg] epoch {self.current_epoch}/{self.num_epochs} done, training loop {elapsed:.0f}s"
              f"{f' of {self._medseg_budget_s:.0f}s' if self._medseg_budget_s > 0 else ''}", flush=True)

    def _medseg_fit_budget(self) -> None:
        """Set num_epochs (and the poly schedule's length) so the loop ends within the budget."""
        m, done = self._medseg, self.current_epoch + 1
        elapsed = time.perf_counter() - self._medseg_t0
        per_epoch = max(m["epoch_seconds"]) if done == 1 else sum(m["epoch_seconds"][1:]) / (done - 1)
        fits = done + max(0, math.floor((self._medseg_budget_s - elapsed) / per_epoch))
        if done == 1:
            new = max(1, fits)
            m["adapted_after_epoch0"] = True
            m["epoch0_seconds"] = m["epoch_seconds"][0]
        elif fits < self.num_epochs:
            new = max(done, fits)
            m["shrunk_after_epoch"].append(self.current_epoch)
        else:
            return
        if new != self.num_epochs:
            print(f"[medseg] num_epochs {self.num_epochs} -> {new} (epoch time {per_epoch:.1f}s, "
                  f"{elapsed:.0f}s of {self._medseg_budget_s:.0f}s used)", flush=True)
        self.num_epochs = new
        self.lr_scheduler.max_steps = new

    def run_training(self):
        """nnUNetTrainer.run_training with a while loop, so num_epochs may be set during epoch 0."""
        self.on_train_start()
        while self.current_epoch < self.num_epochs:
            self.on_epoch_start()

            self.on_train_epoch_start()
            train_outputs = []
            for batch_id in range(self.num_iterations_per_epoch):
                train_outputs.append(self.train_step(next(self.dataloader_train)))
            self.on_train_epoch_end(train_outputs)

            with torch.no_grad():
                self.on_validation_epoch_start()
                val_outputs = []
                for batch_id in range(self.num_val_iterations_per_epoch):
                    val_outputs.append(self.validation_step(next(self.dataloader_val)))
                self.on_validation_epoch_end(val_outputs)

            self.on_epoch_end()
        self._medseg["train_loop_seconds"] = time.perf_counter() - self._medseg_t0
        self.on_train_end()
        self._medseg_write()

    def _medseg_write(self) -> None:
        m = self._medseg
        steps = m["train_step_seconds"]
        m.update({
            "num_epochs": self.num_epochs,
            "epochs_run": self.current_epoch,
            "num_iterations_per_epoch": self.num_iterations_per_epoch,
            "num_val_iterations_per_epoch": self.num_val_iterations_per_epoch,
            "train_iterations": len(steps),
            "val_iterations": self.current_epoch * self.num_val_iterations_per_epoch,
            "batch_size": int(self.batch_size),
            "patch_size": [int(v) for v in self.configuration_manager.patch_size],
            "initial_lr": self.initial_lr,
            "oversample_foreground_percent": self.oversample_foreground_percent,
            "deep_supervision": self.enable_deep_supervision,
            "device": str(self.device),
            "torch_threads": torch.get_num_threads(),
            "sec_per_train_step_mean": sum(steps) / len(steps) if steps else None,
            "sec_per_train_step_mean_after_first": sum(steps[1:]) / (len(steps) - 1) if len(steps) > 1 else None,
        })
        with open(join(self.output_folder, "medseg_timing.json"), "w") as f:
            json.dump(m, f, indent=1)

    def perform_actual_validation(self, save_probabilities: bool = False):
        if os.environ.get("MEDSEG_BENCH_NNUNET_FINAL_VAL") == "1":
            return super().perform_actual_validation(save_probabilities)
        print("[medseg] skipping nnU-Net's final validation prediction (MEDSEG_BENCH_NNUNET_FINAL_VAL != 1)", flush=True)


class nnUNetTrainer_MedsegShort(_MedsegTiming, nnUNetTrainer):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_iterations_per_epoch = _env_int("MEDSEG_BENCH_NNUNET_ITERS", 5)
        self.num_val_iterations_per_epoch = _env_int("MEDSEG_BENCH_NNUNET_VAL_ITERS", 1)
        self.num_epochs = _env_int("MEDSEG_BENCH_NNUNET_EPOCHS", 8)
        self._medseg_budget_s = float(os.environ.get("MEDSEG_BENCH_NNUNET_BUDGET_S", 0))
        self._medseg_setup()


class nnUNetTrainer_Medseg1epoch(_MedsegTiming, nnUNetTrainer_1epoch):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self._medseg_setup()
