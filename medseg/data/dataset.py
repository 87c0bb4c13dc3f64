"""The in-memory training dataset and its seeded sampler.

Every random draw (order and augmentation) is a function of (seed, epoch, position), so a
run resumed from its last checkpoint replays exactly what an uninterrupted run would have.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from medseg.data.copy_paste import STREAM_PASTE


class SegDataset(Dataset):
    """Images (N, C, H, W) float32 and masks (N, H, W) uint8 held in memory.

    Args:
        images: stacked normalised images.
        masks: stacked binary masks.
        augment: an `Augmenter` (or any callable with its signature) or None.
        paste: a `LesionCopyPaste` run before `augment`, or None.
    """

    def __init__(self, images: np.ndarray, masks: np.ndarray, augment=None, paste=None):
        self.images = images
        self.masks = masks
        self.augment = augment
        self.paste = paste

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key):
        idx, aug_seed = key if isinstance(key, tuple) else (key, None)
        img, mask = self.images[idx], self.masks[idx]
        if self.paste is not None and aug_seed is not None:
            img, mask, _ = self.paste(img, mask, idx, self.images, self.masks, np.random.default_rng([int(aug_seed), STREAM_PASTE]))
        if self.augment is not None and aug_seed is not None:
            self.augment.set_random_seed(int(aug_seed))
            out = self.augment(image=np.ascontiguousarray(img.transpose(1, 2, 0)), mask=mask)
            img = out["image"].transpose(2, 0, 1)
            mask = out["mask"]
        return (
            torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)),
            torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None],
            idx,
        )


class SeededSampler(Sampler):
    """Shuffles with a per-epoch seed and hands each index its own augmentation seed.

    Lightning calls `set_epoch` before each epoch (also after a resume). With several
    processes (DDP) each rank takes every world_size-th draw: with per-rank batches of
    batch_size / world_size, the ranks' micro-batches of one step are together the batch one
    process would draw.

    Args:
        n: dataset size.
        seed: run seed.
        num_samples: draws per epoch (default n).
        shuffle: False for a fixed order (validation).
    """

    def __init__(self, n: int, seed: int, num_samples: int | None = None, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.num_samples = num_samples or n
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _draws(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch, 17])
        if not self.shuffle:
            return np.arange(self.num_samples) % self.n
        reps = -(-self.num_samples // self.n)
        return np.concatenate([rng.permutation(self.n) for _ in range(reps)])[: self.num_samples]

    def __iter__(self):
        draws = self._draws()
        seeds = np.random.default_rng([self.seed, self.epoch, 29]).integers(0, 2**31 - 1, size=len(draws))
        for i in range(self.rank, len(draws), self.world_size):
            yield int(draws[i]), int(seeds[i])

    def __len__(self) -> int:
        return len(range(self.rank, self.num_samples, self.world_size))
