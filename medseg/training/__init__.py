"""Training, in Lightning's split of concerns.

* `module.SegModule`: the network, the loss, the training step and the optimiser/schedule;
* `datamodule.SegDataModule`: the training dataset, the positive-aware sampler (sharded per
  rank by Lightning's rank and world size) and the loader;
* `callbacks`: validation under the metric contract, the batch-composition audit and the
  `epochs.csv` writer, each a Lightning callback;
* `trainer.build_trainer`: the one place a `pl.Trainer` is made;
* `distributed`: DDP: which rank leads and writes the run folder, how the others find it, and
  Lightning's collectives for the callbacks;
* `tracking`: TensorBoard / MLflow.
"""

from medseg.training import distributed
from medseg.training.datamodule import SegDataModule
from medseg.training.module import MAX_EPOCHS, SELECT_MIN_VAL_CASES, WARMUP_MAX_SHARE, WARMUP_PLANNED_SHARE, SegModule, lr_lambda
from medseg.training.trainer import build_trainer

__all__ = ["distributed", "MAX_EPOCHS", "SELECT_MIN_VAL_CASES", "WARMUP_MAX_SHARE", "WARMUP_PLANNED_SHARE", "SegDataModule", "SegModule", "build_trainer", "lr_lambda"]
