"""The LightningDataModule: the training dataset, the sampler (sharded per rank) and the loader.

Validation does not go through a loader: the contract-validation callback streams the
validation set, a chunk of whole cases at a time, at the end of each training epoch (see
`callbacks.ContractValidation`).
"""

from __future__ import annotations

import multiprocessing

import lightning.pytorch as pl
from torch.utils.data import DataLoader

from medseg.config import Config
from medseg.data.arrays import SplitArrays
from medseg.data.augment import build_augment
from medseg.data.copy_paste import build_copy_paste
from medseg.data.sampling import build_train_dataset, build_train_sampler
from medseg.runtime import training_device, usable_cores


def epoch_batches(cfg: Config, n_train: int) -> tuple[int, int]:
    """(micro-batches, optimiser steps) per epoch on one rank, from train.steps_per_epoch or one pass over the images."""
    bs = cfg.train.batch_size
    samples_per_epoch = (cfg.train.steps_per_epoch * bs) if cfg.train.steps_per_epoch else n_train
    micro_batches = max(1, samples_per_epoch // bs)
    return micro_batches, max(1, micro_batches // cfg.train.accumulate)


class SegDataModule(pl.LightningDataModule):
    """Training batches of one run.

    Every draw (order, positive share, crops, augmentation) is a function of (seed, epoch,
    position), so a resumed run replays what an uninterrupted run would have drawn. With
    several processes each rank takes batch_size / world_size images of every batch of one
    sequence of draws (Lightning's `global_rank` and `world_size`): together the ranks train
    on the batches a single process would, so the composition, the step count and the
    schedule are the same whatever the number of ranks.

    Args:
        cfg: the resolved config.
        train: the training arrays.
    """

    def __init__(self, cfg: Config, train: SplitArrays):
        super().__init__()
        self.cfg = cfg
        self.train = train
        self.micro_batches, self.steps_per_epoch = epoch_batches(cfg, len(train.images))

    def train_dataloader(self) -> DataLoader:
        cfg = self.cfg
        bs = cfg.train.batch_size
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)
        augment = build_augment(cfg.augment.preset, cfg.augment.overrides)
        paste = build_copy_paste(cfg.augment.copy_paste, self.train.positive)
        dataset = build_train_dataset(self.train.images, self.train.masks, augment, cfg.sampler, paste)
        sampler = build_train_sampler(
            cfg.sampler, self.train.positive, bs, cfg.seed, cfg.train.epochs, num_samples=self.micro_batches * bs,
            rank=rank, world_size=world,
        )
        workers = loader_workers(cfg)
        return DataLoader(
            dataset, batch_size=bs // world, sampler=sampler, num_workers=workers, drop_last=True,
            persistent_workers=workers > 0, worker_init_fn=_worker_init if workers else None,
            multiprocessing_context=WORKER_START if workers else None,
        )


def loader_workers(cfg: Config) -> int:
    """train.num_workers, with 'auto' resolved: 0 on the CPU (the step already uses every core), min(4, cores - 1) on a GPU."""
    if cfg.train.num_workers != "auto":
        return int(cfg.train.num_workers)
    if training_device(cfg) == "cpu":
        return 0
    return max(0, min(4, usable_cores() - 1))


# Workers start from a fresh server process, never by forking the trainer: a fork copies a process
# whose OpenMP / cv2 thread pools hold locks, and a worker that touches them hangs (the
# notebook deadlocks that made users fall back to num_workers=0). The dataset is pickled to each
# worker: from the cache that is paths and offsets; in memory it is the arrays (one copy per worker).
WORKER_START = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"  # spawn: Windows


def _worker_init(worker_id: int) -> None:
    # one thread per worker: the workers only decode, augment and crop, and the trainer's
    # intra-op threads already use the cores
    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
