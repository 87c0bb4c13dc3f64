"""The notebook baseline: what the seeds' users wrote, in plain PyTorch (no Lightning, no medseg).

U-Net with a ResNet-34 encoder (MONAI FlexibleUNet, random init), BCE-with-logits + soft Dice
1:1, Adam lr 1e-4, batch 4, WeightedRandomSampler (weight 10 for images with a lesion, 1 for
empty ones, len(train) samples per epoch, with replacement), albumentations HorizontalFlip +
VerticalFlip + ElasticTransform (p=0.5 each, library defaults), images scaled to [0, 1] then
standardised with the training-set mean/std (one for all channels; colour images enter as 3 channels). Trains epoch after epoch until the wall-clock
budget (training + validation) is spent, stopping mid-epoch if needed, validates on "val" after
every epoch (per-image Dice at 0.5, empty truth & empty prediction = 1), keeps the best weights
and predicts the test cases with them at 0.5 (no TTA, no post-processing). Deliberately untuned.

    python bench/recipe/notebook.py /work/cache/busi256 OUT --budget-s 900 --seed 0
"""

from __future__ import annotations

import argparse
import copy
import random
import time
from pathlib import Path

import albumentations as A
import numpy as np
import torch
from monai.networks.nets import FlexibleUNet
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

try:
    from bench.recipe.common import load_split, log, open_out, read_image, read_mask, write_pred, write_stats
except ImportError:  # run as a script: bench/recipe is sys.path[0]
    from common import load_split, log, open_out, read_image, read_mask, write_pred, write_stats

POS_WEIGHT = 10.0
BATCH = 4
LR = 1e-4
THRESHOLD = 0.5


class SegSet(Dataset):
    """Images and masks held in memory; augment (uint8) -> scale to [0, 1] -> standardise."""

    def __init__(self, images: list[np.ndarray], masks: list[np.ndarray], mean: float, std: float, augment: A.Compose | None):
        self.images, self.masks, self.mean, self.std, self.augment = images, masks, mean, std, augment

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img, mask = self.images[i], self.masks[i].astype(np.uint8)
        if self.augment is not None:
            out = self.augment(image=img, mask=mask)
            img, mask = out["image"], out["mask"]
        x = (img.astype(np.float32) / 255.0 - self.mean) / self.std
        return torch.from_numpy(_chw(x)), torch.from_numpy(mask.astype(np.float32))[None]


def _chw(x: np.ndarray) -> np.ndarray:
    """One image, (H, W) -> (1, H, W) and (H, W, 3) -> (3, H, W)."""
    return x[None] if x.ndim == 2 else np.ascontiguousarray(x.transpose(2, 0, 1))


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - soft Dice over the whole batch (the usual notebook form, smooth=1)."""
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum()
    return 1.0 - (2.0 * inter + smooth) / (prob.sum() + target.sum() + smooth)


def image_dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Hard Dice of one image; both empty counts as 1."""
    denom = pred.sum() + truth.sum()
    return 1.0 if denom == 0 else 2.0 * np.logical_and(pred, truth).sum() / denom


@torch.no_grad()
def predict(net: torch.nn.Module, images: list[np.ndarray], mean: float, std: float) -> list[np.ndarray]:
    """Binary masks (prob > 0.5) for a list of uint8 images, batch 4, no TTA."""
    net.eval()
    preds = []
    for start in range(0, len(images), BATCH):
        x = np.stack(images[start:start + BATCH]).astype(np.float32) / 255.0
        x = torch.from_numpy(np.stack([_chw(i) for i in (x - mean) / std]))
        preds.extend((torch.sigmoid(net(x))[:, 0] > THRESHOLD).numpy())
    return preds


def validate(net: torch.nn.Module, images: list[np.ndarray], masks: list[np.ndarray], mean: float, std: float) -> float:
    """Mean per-image Dice at 0.5 on the validation images."""
    preds = predict(net, images, mean, std)
    return float(np.mean([image_dice(p, m) for p, m in zip(preds, masks)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("prep", type=Path, help="prepared folder with images/, masks/, split.json")
    ap.add_argument("out", type=Path, help="output folder (pred/, stats.json); must not exist")
    ap.add_argument("--budget-s", type=float, default=900.0, help="wall-clock seconds for training + validation")
    ap.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--force", action="store_true", help="replace an existing OUT")
    args = ap.parse_args()
    wall0 = time.perf_counter()

    split = load_split(args.prep)
    out = open_out(args.out, args.force)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    random.seed(args.seed)
    torch.set_num_threads(args.threads)

    def load(key: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
        return ([read_image(args.prep / "images" / f"{c}.png") for c in split[key]],
                [read_mask(args.prep / "masks" / f"{c}.png") for c in split[key]])

    train_img, train_mask = load("train")
    val_img, val_mask = load("val")
    stack = np.stack(train_img).astype(np.float64) / 255.0
    mean, std = float(stack.mean()), float(stack.std())
    del stack
    log(f"data: {len(train_img)} train, {len(val_img)} val, {len(split['test'])} test; train mean {mean:.4f} std {std:.4f}")

    augment = A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5), A.ElasticTransform(p=0.5)])
    weights = [POS_WEIGHT if m.any() else 1.0 for m in train_mask]
    sampler = WeightedRandomSampler(weights, num_samples=len(train_img), replacement=True,
                                    generator=torch.Generator().manual_seed(args.seed))
    loader = DataLoader(SegSet(train_img, train_mask, mean, std, augment), batch_size=BATCH, sampler=sampler, num_workers=0)

    net = FlexibleUNet(in_channels=3 if train_img[0].ndim == 3 else 1, out_channels=1, backbone="resnet34", pretrained=False, spatial_dims=2)
    optimizer = torch.optim.Adam(net.parameters(), lr=LR)
    bce = torch.nn.BCEWithLogitsLoss()

    # The budget covers training and validation; training stops early enough that the next
    # step and the final validation (estimated by the last ones) still fit in it.
    train_seconds = val_seconds = 0.0
    last_val_seconds = last_step_seconds = 0.0
    images_seen, steps, epoch = 0, 0, 0
    best_dice, best_epoch, best_state = -1.0, 0, None
    history = []
    out_of_budget = False
    while not out_of_budget:
        epoch += 1
        net.train()
        t_epoch, loss_sum, n_batches = time.perf_counter(), 0.0, 0
        t_mark = time.perf_counter()  # training time includes loading and augmenting each batch
        for x, y in loader:
            # stop when one more step and the final validation would no longer fit (before the
            # first validation, guess it as half a training step per validation batch)
            val_guess = last_val_seconds or 0.5 * last_step_seconds * -(-len(val_img) // BATCH)
            if train_seconds + (time.perf_counter() - t_mark) + last_step_seconds + val_seconds + val_guess >= args.budget_s:
                train_seconds += time.perf_counter() - t_mark
                out_of_budget = True
                break
            logits = net(x)
            loss = bce(logits, y) + soft_dice_loss(logits, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            now = time.perf_counter()
            last_step_seconds = now - t_mark
            train_seconds += last_step_seconds
            t_mark = now
            images_seen += x.shape[0]
            steps += 1
            loss_sum += loss.item()
            n_batches += 1
        if n_batches == 0:  # the budget ran out before this epoch took a step
            epoch -= 1
            break
        t = time.perf_counter()
        dice = validate(net, val_img, val_mask, mean, std)
        last_val_seconds = time.perf_counter() - t
        val_seconds += last_val_seconds
        if dice > best_dice:
            best_dice, best_epoch, best_state = dice, epoch, copy.deepcopy(net.state_dict())
        history.append({"epoch": epoch, "steps": n_batches, "train_loss": loss_sum / n_batches, "val_dice": dice,
                        "epoch_seconds": time.perf_counter() - t_epoch, "partial": out_of_budget})
        log(f"epoch {epoch}{' (partial)' if out_of_budget else ''}: {n_batches} steps, loss {loss_sum / n_batches:.4f}, "
            f"val dice {dice:.4f} (best {best_dice:.4f} @ {best_epoch}), train {train_seconds:.0f}s + val {val_seconds:.0f}s "
            f"of {args.budget_s:.0f}s, {images_seen / train_seconds:.1f} img/s")

    if best_state is None:
        raise SystemExit("error: the budget ran out before one training step; raise --budget-s")
    net.load_state_dict(best_state)
    test_img = [read_image(args.prep / "images" / f"{c}.png") for c in split["test"]]
    for case, pred in zip(split["test"], predict(net, test_img, mean, std)):
        write_pred(out, case, pred)
    log(f"wrote {len(split['test'])} predictions to {out / 'pred'} with the epoch-{best_epoch} weights")

    write_stats(out, {
        "method": "notebook",
        "budget_s": args.budget_s,
        "train_seconds": train_seconds,
        "val_seconds": val_seconds,
        "wall_seconds": time.perf_counter() - wall0,
        "images_seen": images_seen,
        "steps": steps,
        "epochs": epoch,
        "epochs_float": images_seen / len(train_img),
        "best_epoch": best_epoch,
        "best_val_dice": best_dice,
        "seed": args.seed,
        "threads": args.threads,
        "recipe": {"net": "monai FlexibleUNet resnet34, pretrained=False", "loss": "BCEWithLogits + soft Dice (batch, smooth 1) 1:1",
                   "optimizer": f"Adam lr {LR}", "batch": BATCH, "sampler": f"WeightedRandomSampler pos {POS_WEIGHT} / empty 1, replacement",
                   "augment": "HorizontalFlip 0.5, VerticalFlip 0.5, ElasticTransform 0.5 (albumentations defaults)",
                   "norm": {"mean": mean, "std": std}, "threshold": THRESHOLD, "tta": False},
        "history": history,
    })
    log(f"done: best val dice {best_dice:.4f} at epoch {best_epoch}; stats in {out / 'stats.json'}")


if __name__ == "__main__":
    main()
