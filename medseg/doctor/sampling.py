"""Sampling checks: the share of positive images the model actually received per batch."""

from __future__ import annotations

import numpy as np

from medseg.doctor.evidence import RunEvidence, finite
from medseg.doctor.finding import Finding

# Realised share further than this from the sampler's target is reported.
TARGET_TOLERANCE = 0.15
# Below this many positive images per batch, most batches teach only "predict nothing".
MIN_POSITIVES_PER_BATCH = 1.0


def check(ev: RunEvidence) -> list[Finding]:
    f = positives_per_batch(ev) or off_target(ev) or below_data(ev)
    return [f] if f else []


def _realised(ev: RunEvidence) -> float:
    s = ev.series("batch_pos_image_share_mean")
    return float(np.nanmean(s)) if np.isfinite(s).any() else float("nan")


def _target(ev: RunEvidence) -> float:
    s = ev.series("sampler_target_pos_share")
    if np.isfinite(s).any():
        return float(np.nanmean(s))
    t = ev.get("sampler.positive_share")
    return float(t) if finite(t) else float("nan")


def _data_share(ev: RunEvidence) -> float:
    """Share of training images with foreground (measured on reload, else from the fingerprint)."""
    if ev.eval is not None and finite(ev.eval.train_positive_share):
        return ev.eval.train_positive_share
    e = ev.fingerprint.get("empty_image_fraction")
    return 1.0 - e if finite(e) else float("nan")


def _val_dice_nonempty(ev: RunEvidence) -> float:
    s = ev.series("val_dice_nonempty")
    return float(np.nanmax(s)) if np.isfinite(s).any() else float("nan")


def positives_per_batch(ev: RunEvidence) -> Finding | None:
    """Batches that hold on average less than one positive image although the data has positives."""
    realised, target, data = _realised(ev), _target(ev), _data_share(ev)
    bs = int(ev.get("train.batch_size", 8))
    if not finite(realised) or not finite(data) or data <= 0:
        return None
    per_batch = realised * bs
    if per_batch >= MIN_POSITIVES_PER_BATCH or realised >= 0.25:
        return None
    dice = _val_dice_nonempty(ev)
    # what the data allows: any share up to 1 by oversampling; 0.5 is the usual choice
    fix = 0.5
    target_text = f"sampler target {target:.2f}" if finite(target) else "no sampler target (natural order)"
    return Finding(
        id="sampling.few_positives", family="sampling", severity="serious" if per_batch < 0.5 else "warning",
        confidence=0.9, impact=0.95 if not finite(dice) or dice < 0.5 else 0.6,
        title=f"training batches of {bs} held {per_batch:.2f} positive images on average ({realised:.1%})",
        evidence=f"realised positive-image share {realised:.1%} per batch ({target_text}); {data:.1%} of training images "
        f"have foreground" + (f"; best validation Dice on non-empty images {dice:.3f}" if finite(dice) else ""),
        why="a batch without a lesion only teaches the network to predict nothing; oversampling positive images "
        "gives every batch a lesion to learn from while empty images still teach restraint",
        fix_key="sampler.positive_share", fix_value=fix,
        numbers={"realised_share": realised, "positives_per_batch": per_batch, "target": target, "data_share": data, "batch_size": bs},
    )


def off_target(ev: RunEvidence) -> Finding | None:
    """The realised share misses the sampler's target (crops or augmentation remove lesions)."""
    realised, target = _realised(ev), _target(ev)
    if not finite(realised) or not finite(target) or abs(realised - target) <= TARGET_TOLERANCE:
        return None
    crop = ev.get("sampler.crop_size")
    fg_crop = ev.get("sampler.foreground_crop_share", 0.33)
    if crop and realised < target:
        fix_key, fix_value = "sampler.foreground_crop_share", round(min(1.0, max(0.5, fg_crop + 0.3)), 2)
    else:
        fix_key, fix_value = "augment.preset", "light"
    return Finding(
        id="sampling.off_target", family="sampling", severity="warning", confidence=0.85, impact=min(0.8, abs(realised - target) * 2),
        title=f"batches held {realised:.0%} positive images, the sampler targets {target:.0%}",
        evidence=f"realised mean share {realised:.1%} vs target {target:.1%} (sampler_target_pos_share); crop {crop}, "
        f"foreground_crop_share {fg_crop}",
        why="crops and geometric augmentation can cut the lesion out of a positive image, so the model sees fewer "
        "lesions than the sampler promised",
        fix_key=fix_key, fix_value=fix_value, numbers={"realised_share": realised, "target": target},
    )


def below_data(ev: RunEvidence) -> Finding | None:
    """Without a target, batches hold far fewer positives than the training set does."""
    realised, target, data = _realised(ev), _target(ev), _data_share(ev)
    if finite(target) or not finite(realised) or not finite(data) or realised >= 0.5 * data or data - realised <= TARGET_TOLERANCE:
        return None
    return Finding(
        id="sampling.below_data", family="sampling", severity="warning", confidence=0.75, impact=min(0.8, (data - realised) * 2),
        title=f"batches held {realised:.0%} positive images although {data:.0%} of training images have foreground",
        evidence=f"realised mean share {realised:.1%} vs {data:.1%} of training images positive; augment.preset "
        f"{ev.get('augment.preset')}, crop {ev.get('sampler.crop_size')}",
        why="lesions are lost between the data and the batch (crops, augmentation), so the model trains on fewer lesions than exist",
        fix_key="sampler.positive_share", fix_value=round(max(0.5, data), 2),
        numbers={"realised_share": realised, "data_share": data},
    )
