"""Positive-aware batch sampling, foreground-biased crops and the per-epoch composition audit.

Tiny targets leave most training images empty (SIIM-ACR: about 22% positive), so a naturally
ordered batch may hold no lesion at all. `PositiveAwareSampler` gives every batch a target share
of positive images (mask has any foreground); the target may follow a schedule over training
(e.g. 0.8 -> 0.6 -> 0.4, as the SIIM-ACR winners did). `CropDataset` trains on random crops of
large images, a share of them centred on a foreground pixel (nnU-Net's 0.33 oversampling).

Determinism: like `SeededSampler`, every draw is a function of (seed, epoch, position), so a run
resumed from its last checkpoint replays exactly what an uninterrupted run would have drawn.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
from torch.utils.data import Sampler

from medseg.data.dataset import SeededSampler, SegDataset
from medseg.errors import MedsegError

# A realised epoch-mean positive share further than this from the target is logged as a warning.
AUDIT_TOLERANCE = 0.10

# Separate random streams per purpose, so changing one never shifts another.
_STREAM_COUNTS, _STREAM_AUG, _STREAM_CROP = 41, 29, 61


def scheduled_target(schedule: Sequence[float], epoch: int, epochs: int) -> float:
    """The target of `epoch` under a schedule spread evenly, piecewise constant, over `epochs`.

    Stage k of K covers epochs [k*E/K, (k+1)*E/K); epochs past the end keep the last value
    (a resumed run trained for longer). Piecewise constant, not linear, because each stage is
    then a fixed data distribution whose effect shows in the epoch log as a step.

    Args:
        schedule: one or more targets in [0, 1].
        epoch: 0-based epoch.
        epochs: the planned number of epochs (train.epochs).
    """
    stage = min(len(schedule) - 1, (max(0, epoch) * len(schedule)) // max(1, epochs))
    return float(schedule[stage])


def epoch_target(sampler_cfg, epoch: int, epochs: int) -> Optional[float]:
    """The positive-share target of an epoch from the `sampler` config; None: no rebalancing."""
    if sampler_cfg.schedule:
        return scheduled_target(sampler_cfg.schedule, epoch, epochs)
    return sampler_cfg.positive_share


def positive_images(masks: np.ndarray) -> np.ndarray:
    """(N, H, W) masks -> (N,) bool: the image has any foreground pixel."""
    return np.asarray(masks).reshape(len(masks), -1).max(axis=1) > 0 if len(masks) else np.zeros(0, bool)


class PositiveAwareSampler(Sampler):
    """Batches with a target share of positive images; yields (index, augmentation_seed).

    For batch size B and target t each batch holds floor(t*B) or ceil(t*B) positives, chosen by
    seeded systematic rounding: every batch gets t*B positives in expectation and the epoch's
    total is within one image of t * num_samples, so the epoch mean matches t (not only on
    average over epochs). Positives and negatives are drawn without replacement within an
    epoch while the pool allows; a pool smaller than its demand is cycled through in fresh
    permutations (every image used equally often, within one). Positions inside a batch are
    shuffled. A pool that is empty cannot be served: its share goes to the other pool (fit
    rejects a positive target without positive images before this happens).

    With several processes every batch is split: rank r takes its positions r, r + W, ... (W =
    world_size), so the ranks' micro-batches of one step are together exactly the batch a single
    process draws (same images, same augmentation seeds) and the composition is the target's
    over the step, whatever the number of ranks. Positions are shuffled within a batch, so each
    rank's share has the target composition in expectation.

    Args:
        positive: (N,) bool, the image has foreground.
        batch_size: images per batch over all ranks; each rank's DataLoader takes batch_size / world_size.
        seed: run seed.
        schedule: targets in [0, 1]; one value is a constant target (see `scheduled_target`).
        epochs: the planned number of epochs, over which the schedule is spread.
        num_samples: draws per epoch over all ranks (default N); a multiple of batch_size keeps every batch full.
        rank / world_size: this process and the number of processes.
    """

    def __init__(
        self,
        positive: np.ndarray,
        batch_size: int,
        seed: int,
        schedule: Sequence[float],
        epochs: int = 1,
        num_samples: Optional[int] = None,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.positive = np.asarray(positive, bool)
        if len(self.positive) == 0:
            raise ValueError("PositiveAwareSampler: empty dataset")
        if not schedule or any(not 0.0 <= t <= 1.0 for t in schedule):
            raise ValueError("PositiveAwareSampler: schedule needs one or more targets in [0, 1]")
        self.pos_pool = np.flatnonzero(self.positive)
        self.neg_pool = np.flatnonzero(~self.positive)
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.schedule, self.epochs = [float(t) for t in schedule], int(epochs)
        self.num_samples = int(num_samples or len(self.positive))
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def target(self) -> float:
        return scheduled_target(self.schedule, self.epoch, self.epochs)

    def _batch_sizes(self) -> np.ndarray:
        full, rest = divmod(self.num_samples, self.batch_size)
        return np.array([self.batch_size] * full + ([rest] if rest else []), dtype=np.int64)

    def positives_per_batch(self) -> np.ndarray:
        """How many positive images each batch of this epoch holds (all ranks, in batch order)."""
        sizes = self._batch_sizes()
        if len(self.pos_pool) == 0:
            return np.zeros_like(sizes)
        if len(self.neg_pool) == 0:
            return sizes.copy()
        rng = np.random.default_rng([self.seed, self.epoch, _STREAM_COUNTS])
        # systematic rounding with a random offset: E[count_b] = t * size_b and the running
        # total never drifts more than one image from the target
        cum = np.concatenate([[0.0], np.cumsum(self.target * sizes)])
        counts = np.diff(np.floor(cum + rng.random())).astype(np.int64)
        full = sizes == self.batch_size
        counts[full] = rng.permutation(counts[full])  # no fixed floor/ceil pattern across batches
        return np.minimum(counts, sizes)

    @staticmethod
    def _stream(pool: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
        """k draws from pool: without replacement while k <= len(pool), else whole permutations repeated."""
        if k == 0:
            return np.zeros(0, np.int64)
        reps = -(-k // len(pool))
        return np.concatenate([rng.permutation(pool) for _ in range(reps)])[:k]

    def epoch_batches(self) -> list[np.ndarray]:
        """The epoch's batches over all ranks, each an array of dataset indices."""
        sizes = self._batch_sizes()
        counts = self.positives_per_batch()
        rng = np.random.default_rng([self.seed, self.epoch, 17])
        pos = iter(self._stream(self.pos_pool, int(counts.sum()), rng))
        neg = iter(self._stream(self.neg_pool, int((sizes - counts).sum()), rng))
        batches = []
        for size, n_pos in zip(sizes, counts):
            is_pos = rng.permutation(np.arange(size) < n_pos)
            batches.append(np.array([next(pos) if p else next(neg) for p in is_pos], np.int64))
        return batches

    def __iter__(self):
        batches = self.epoch_batches()
        starts = np.concatenate([[0], np.cumsum([len(b) for b in batches])])
        # one augmentation seed per global position, as SeededSampler does
        seeds = np.random.default_rng([self.seed, self.epoch, _STREAM_AUG]).integers(0, 2**31 - 1, size=self.num_samples)
        for b, batch in enumerate(batches):
            for j in range(self.rank, len(batch), self.world_size):
                yield int(batch[j]), int(seeds[starts[b] + j])

    def __len__(self) -> int:
        return int(sum(len(range(self.rank, int(size), self.world_size)) for size in self._batch_sizes()))


def crop_window(mask: np.ndarray, size: Sequence[int], foreground_share: float, rng: np.random.Generator) -> tuple[int, int]:
    """Top-left corner of a crop of `size` in an (H, W) mask.

    With probability foreground_share (and only if the mask has foreground) the crop is centred
    on a uniformly chosen foreground pixel, shifted inside the image, so it always contains
    that pixel; otherwise its position is uniform over all crops that fit.

    Args:
        mask: (H, W) array, foreground > 0.
        size: crop (height, width), each at most the mask's.
        foreground_share: probability of a foreground-centred crop.
        rng: the sample's generator.
    """
    H, W = mask.shape
    h, w = int(size[0]), int(size[1])
    if h > H or w > W:
        raise ValueError(f"crop {h}x{w} larger than the image {H}x{W}")
    if rng.random() < foreground_share:  # always drawn, so the stream does not depend on the mask
        fg = np.flatnonzero(mask > 0)
        if fg.size:
            cy, cx = divmod(int(fg[rng.integers(fg.size)]), W)
            return int(np.clip(cy - h // 2, 0, H - h)), int(np.clip(cx - w // 2, 0, W - w))
    return int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))


class CropDataset(SegDataset):
    """`SegDataset` returning a random crop of each (augmented) sample, seeded per sample.

    Cropping after augmentation keeps geometric transforms free of the zero-filled borders a
    rotated small crop would get, and the foreground pixel is chosen in the mask the network
    actually receives. The crop's generator derives from the sample's augmentation seed (from
    its index when the key has none), so a replay draws the same crop.

    Args:
        images / masks / augment: as `SegDataset`.
        crop_size: (height, width) of the crops.
        foreground_share: share of crops centred on a foreground pixel.
    """

    def __init__(
        self, images: np.ndarray, masks: np.ndarray, augment=None, crop_size: Sequence[int] = (128, 128), foreground_share: float = 0.33, paste=None
    ):
        super().__init__(images, masks, augment, paste)
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.foreground_share = float(foreground_share)

    def __getitem__(self, key):
        img, mask, idx = super().__getitem__(key)
        aug_seed = key[1] if isinstance(key, tuple) else None
        rng = np.random.default_rng([int(aug_seed) if aug_seed is not None else int(idx), _STREAM_CROP])
        y0, x0 = crop_window(mask[0].numpy(), self.crop_size, self.foreground_share, rng)
        h, w = self.crop_size
        return img[:, y0 : y0 + h, x0 : x0 + w].contiguous(), mask[:, y0 : y0 + h, x0 : x0 + w].contiguous(), idx


# ---------------------------------------------------------------------------------------
# Wiring for fit, and the epoch audit


def check_sampler_pool(sampler_cfg, epochs: int, positive: np.ndarray) -> None:
    """Fail before training when the config asks for positives the training set lacks.

    Args:
        positive: (N,) bool, the training image has foreground (`SplitArrays.positive`).
    """
    targets = list(sampler_cfg.schedule or []) + ([sampler_cfg.positive_share] if sampler_cfg.positive_share is not None else [])
    if any(t > 0 for t in targets) and not np.asarray(positive, bool).any():
        key = "sampler.schedule" if sampler_cfg.schedule else "sampler.positive_share"
        raise MedsegError(f"config error: {key}: asks for positive images but the training set has no image with foreground")


def build_train_dataset(images: np.ndarray, masks: np.ndarray, augment, sampler_cfg, paste=None) -> SegDataset:
    """The training dataset: full images, or crops when sampler.crop_size is set.

    Args:
        images / masks: ndarrays, or `SampleStack`s that read each sample from the cache when drawn.
        paste: a `LesionCopyPaste` (augment.copy_paste) or None; it pastes into the full image, before any crop.
    """
    if sampler_cfg.crop_size is None or tuple(sampler_cfg.crop_size) == tuple(masks.shape[1:]):
        return SegDataset(images, masks, augment, paste)
    return CropDataset(images, masks, augment, sampler_cfg.crop_size, sampler_cfg.foreground_crop_share, paste)


def build_train_sampler(
    sampler_cfg, positive: np.ndarray, batch_size: int, seed: int, epochs: int, num_samples: int, rank: int = 0, world_size: int = 1
) -> Sampler:
    """SeededSampler (natural order) when no target is set, else PositiveAwareSampler.

    Args:
        positive: (N,) bool per training image (`SplitArrays.positive`: from the cache's
            records, no mask read).
    """
    schedule = sampler_cfg.schedule or ([sampler_cfg.positive_share] if sampler_cfg.positive_share is not None else None)
    if schedule is None:
        return SeededSampler(len(positive), seed, num_samples=num_samples, rank=rank, world_size=world_size)
    return PositiveAwareSampler(
        positive, batch_size, seed, schedule, epochs=epochs, num_samples=num_samples, rank=rank, world_size=world_size
    )


def describe_sampler(sampler_cfg, positive: np.ndarray) -> str:
    """One line for the run log: the natural positive share and what the sampler does with it."""
    natural = float(np.mean(positive)) if len(positive) else float("nan")
    if sampler_cfg.schedule:
        what = f"positive share scheduled {sampler_cfg.schedule} (piecewise constant over the epochs)"
    elif sampler_cfg.positive_share is not None:
        what = f"positive share {sampler_cfg.positive_share:g} per batch"
    else:
        what = "natural order (no rebalancing)"
    crop = f"; crops {sampler_cfg.crop_size[0]}x{sampler_cfg.crop_size[1]}, {sampler_cfg.foreground_crop_share:g} foreground-centred" if sampler_cfg.crop_size else ""
    return f"sampler: {what}{crop}; natural positive image share {natural:.3f}"


def composition_columns(pos_image_shares: Sequence[float], pos_pixel_shares: Sequence[float], target: Optional[float]) -> dict[str, float]:
    """The epoch row's audit columns from per-batch shares of what the model received."""
    def stat(fn, values):
        return float(fn(values)) if len(values) else float("nan")

    return {
        "batch_pos_image_share_mean": stat(np.mean, pos_image_shares),
        "batch_pos_image_share_min": stat(np.min, pos_image_shares),
        "batch_pos_image_share_max": stat(np.max, pos_image_shares),
        "batch_pos_pixel_share_mean": stat(np.mean, pos_pixel_shares),
        "batch_pos_pixel_share_min": stat(np.min, pos_pixel_shares),
        "batch_pos_pixel_share_max": stat(np.max, pos_pixel_shares),
        "sampler_target_pos_share": float("nan") if target is None else float(target),
    }


def audit_warning(epoch: int, realised_mean: float, target: Optional[float]) -> Optional[str]:
    """A warning line when the realised mean positive share is more than AUDIT_TOLERANCE off the target."""
    if target is None or not math.isfinite(realised_mean) or abs(realised_mean - target) <= AUDIT_TOLERANCE + 1e-12:
        return None
    return (
        f"epoch {epoch}: batches held {realised_mean:.1%} positive images on average, target {target:.1%} "
        f"(sampler.positive_share/schedule); the share counts masks as received, after crops and augmentation"
    )
