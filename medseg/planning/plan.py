"""The plan: from the dataset fingerprint to the keys a config leaves unset, each with its reason.

`medseg plan CONFIG` and the first step of `medseg fit` (when ``plan.enabled``) fill these keys
with the rules below, and write every value with the reason for it to plan.json:

* ``data.input_size``: start from the median original image scaled so its long side is at most
  256 px (`BASE_SIDE`; smaller images keep their size), then enlarge, up to the original size,
  until the smallest 5% of lesions (the 5% quantile of lesion areas at original resolution)
  cover at least ``plan.min_lesion_px`` pixels at the input; each side rounded up to a multiple
  of the model's output stride (its registry spec: 32 for the FlexibleUNets) and capped at ``plan.max_side`` (256 on CPU, 1024
  on a GPU), never below ``sampler.crop_size``.
* patches (``plan.patches: auto``; off by default): when the smallest lesions would need an
  input above that cap, images are kept at the size that keeps them (at most 1024 px on a CPU,
  2048 on a GPU) and training takes cap-sized crops (``sampler.crop_size``, a third centred on
  foreground) predicted with sliding windows of the crop size (``eval.sliding_window``).
  Volumes are then also resampled in-plane to one spacing (``data.resize_mode: spacing``,
  ``data.target_spacing`` = the median slice's spacing at the planned size), so a lesion of a
  given size in mm covers the same pixels in every case, as nnU-Net resamples to its median
  spacing; 2D images keep the resize (their pixel spacing is often missing, or the detector's).
* ``sampler.positive_share``: 0.5 when fewer than half of the training images hold foreground
  (so a batch is never mostly empty); null (natural order) when most images are positive or
  none is. Not planned when ``sampler.schedule`` is set.
* ``loss``: BCE + Dice. p is the foreground pixel share the batches will hold (share of
  positive images in a batch x mean foreground share of a positive image). From 1% up
  (`PLAIN_BCE_FROM_FG`) BCE is unweighted: the Dice term already weighs foreground by region,
  and on BUSI (p = 7.7%) the former rule's pos_weight 3.46 lost to plain BCE on both
  cross-validation folds with more false alarms on normal images (BENCHMARKS.md §5c); nnU-Net
  and the SIIM-ACR winners weigh no class either. Below 1% BCE gets ``pos_weight`` =
  sqrt((1 - p) / p), capped at 10: the square root weights rare foreground without turning
  BCE into a positives-only loss (the full ratio reaches hundreds on tiny targets). Focal is added when the median positive image has less
  than 1% foreground pixels: its (1 - p)^gamma factor keeps the many easy background pixels
  from drowning the few lesion pixels. When at least 5% of the training images are empty and
  at least 640 optimiser steps are planned, Lovász hinge (per image) joins for the second half of the
  epochs (a loss schedule, as the TGS Salt winners fine-tuned with it): on an empty image its
  hinge falls on the single most confident false positive, the pixel that turns an empty
  image's Dice from one to zero. On BUSI at 15 minutes (22-26 planned epochs) the raw network's
  false alarms on normal images fell from 55% to 9% and its per-image Dice rose by 0.057-0.085
  on two seeds, at a cost in lesion Dice; from the first epoch, or with ~510-550 planned
  steps (the 3-minute demo), it lost (BENCHMARKS.md §5n); on a slower box, one seed, 13 planned epochs of 66 steps (858)
  gained as much as 22-26 epochs of 33 steps (726-858) did (§5p): what it needs is optimiser steps, not epochs.
  The step cost is timed without it.
* ``augment.preset``: by the number of training images: medium below 2000, light otherwise (many
  images carry their own variation). Heavy (medium plus elastic, grid and optical distortions and
  CLAHE) was the rule below 200 images until nested CV at the last epoch found it never better:
  medium won on CHASE_DB1's vessels in every fold (their 1-3 px masks resampled by the
  distortions) and tied on PH2 (68 training images) and BUSI cut to 34 (BENCHMARKS.md §5k).
* ``train.checkpoint`` and ``postprocess.tune``: with fewer than `SELECT_MIN_VAL_CASES` validation
  cases (volumes count once), ``last`` and ``false``: the final epoch is the model and its raw
  prediction is kept, as nnU-Net deploys its final checkpoint; an epoch or a rule picked on a
  handful of images is a lottery (BENCHMARKS.md §5j: on 1-7 BUSI validation images the last epoch
  was never detectably worse than the picked one and up to 0.25 Dice better, and the tuned rule
  lost 0.008 on average on the test images; §5k: the rule broke even at 24-25 validation images,
  where the picked epoch still lost 0.04 on one fold, and first gained on both folds at 47).
  With more, ``best`` and ``true``.
* ``train.batch_size``: the largest power of two (at least 2) that fits in memory (the measured
  or estimated memory per image against 70% of the GPU's memory, or 25% of RAM on CPU),
  keeps at least 8 optimiser steps per epoch, and stays within 32 (GPU) or 16 (CPU); with a
  time budget it is halved (down to 4) while the budget would hold fewer than 500 steps.
* ``train.epochs``: with ``train.budget_minutes``, the budget divided by the seconds per epoch
  (training steps + validation forward passes + 0.5 s), at most 1000; without a budget the
  configured epochs stay.
* ``schedule.fill_budget``: true when the plan chose ``train.epochs`` from the budget, so that
  epochs faster than estimated lengthen the run to what the budget holds (BENCHMARKS §5 and
  §5e: the estimate had left 16–21% of the budget unused in BUSI, PH2 and CHASE runs).
* ``schedule.warmup_epochs``: when the configured warm-up would take 25% or more of the planned
  epochs (`training.WARMUP_MAX_SHARE`, where the doctor warns), 10% of the planned epochs (at most
  the configured warm-up); a warm-up set by the user is kept, and when it is not shorter than
  training it raises the planned epochs just past it.

Seconds and memory per image come from `medseg.stepcost`: timed training steps of the chosen
model at the chosen size on this machine (``plan.measure``), or a formula from the network's
multiply-accumulates (``--no-measure`` / ``plan.measure: false``). Measured plans are not
bit-for-bit repeatable; formula plans are.

A key the user set in the YAML or with ``--set`` always wins; the plan records it as "set by
user" with the value the plan would have chosen. "Set" means present in the config file, found
with pydantic's ``model_fields_set`` recursively (a value equal to the default still counts as
set). A planned config is re-validated as a whole, so the plan cannot produce a config the
schema rejects. The run folder's config.yaml holds the planned values, so a resumed run (or a
fit of that config) trains the same thing without planning again.

The loader resizes while it reads, so when the plan picks an input size other than the
config's ``data.input_size`` the files are read a second time; setting ``data.input_size``
avoids that on large datasets.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np
from pydantic import BaseModel

from medseg import runfolder as runfs
from medseg.config import Config, config_from_dict
from medseg.data import load_data
from medseg.data.fingerprint import compute_fingerprint, original_statistics, part_cases
from medseg.models import get_model_spec
from medseg.planning.stepcost import StepCost, epoch_seconds, measure_cost, micro_batches
from medseg.runtime import training_device
from medseg.training import MAX_EPOCHS, SELECT_MIN_VAL_CASES, WARMUP_MAX_SHARE, WARMUP_PLANNED_SHARE
from medseg.training.progressive import epochs_within, shares_for

PLAN_JSON = runfs.PLAN
PLAN_VERSION = 1

# input size
BASE_SIDE = 256
SIDE_MULTIPLE = 32  # the default model's output stride; make_plan uses the configured model's
MAX_SIDE = {"cpu": 256, "gpu": 1024}
# plan.patches auto: the largest side images are kept at when training on crops of MAX_SIDE
PATCH_MAX_SIDE = {"cpu": 1024, "gpu": 2048}
# sampler
POSITIVE_SHARE_TARGET = 0.5
# loss
POS_WEIGHT_CAP = 10.0
POS_WEIGHT_MIN = 1.5
PLAIN_BCE_FROM_FG = 0.01
FOCAL_BELOW_FG = 0.01
# Lovász hinge for the second half of the epochs when at least this share of the training images is empty and at
# least LOVASZ_MIN_STEPS optimiser steps are planned. Not tuned: BUSI (18% empty) is the one set with empty images it
# was measured on: ~510-550 planned steps lost (the demo, §5n), 726-858 gained (batch 16 x 22-26 epochs, §5n/§5o, and
# batch 8 x 13 epochs on a slower box, §5p); 640 is the middle. Epochs were the first gate and split the slow box
# wrongly. PH2 and CHASE_DB1, with no empty images, gained nothing from it.
LOVASZ_FROM_EMPTY = 0.05
LOVASZ_MIN_STEPS = 640
LOVASZ_START = 0.5
# augmentation
MEDIUM_BELOW_IMAGES = 2000
# batch size and epochs
MAX_BATCH = {"cpu": 16, "gpu": 32}
MIN_BATCH = 2
MIN_STEPS_PER_EPOCH = 8
MIN_BUDGET_STEPS = 500
BUDGET_MIN_BATCH = 4


# ---------------------------------------------------------------------------------------
# Which keys the user set


def user_set_keys(model: BaseModel, prefix: str = "") -> set[str]:
    """Dotted keys the config file (or --set) gave explicitly, leaves only (sections are recursed).

    Args:
        model: a validated `Config` (or a section of one).
        prefix: dotted path of `model` inside the config.
    """
    out: set[str] = set()
    for name in model.model_fields_set:
        value = getattr(model, name)
        key = f"{prefix}{name}"
        if isinstance(value, BaseModel):
            out |= user_set_keys(value, key + ".")
        else:
            out.add(key)
    return out


def _get(raw: dict, key: str) -> Any:
    node: Any = raw
    for part in key.split("."):
        node = node[part]
    return node


def _set(raw: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for p in parts[:-1]:
        node = node[p]
    node[parts[-1]] = value


# ---------------------------------------------------------------------------------------
# The rules: each returns (value, reason)


def _round_up(x: float, multiple: int = SIDE_MULTIPLE) -> int:
    return int(multiple * math.ceil(x / multiple - 1e-9))


def smallest_lesion_area(fp: dict) -> tuple[Optional[float], str]:
    """The 5% quantile of lesion areas at original resolution, and where it came from."""
    q = (fp.get("lesion_area_px_original") or {}).get("q05")
    if q is not None:
        return float(q), "original resolution"
    q = (fp.get("lesion_area_px_at_input") or {}).get("q05")
    scale = fp.get("input_scale_median")
    if q is not None and scale:
        return float(q) / (scale[0] * scale[1]), "input-size masks scaled back (original masks not readable)"
    return None, "no lesions"


def _median_size_and_cap(fp: dict, device: str, max_side: Optional[int], multiple: int) -> tuple[float, float, int]:
    """(median original height, width, largest whole-image side: plan.max_side or the device's, a multiple of `multiple`)."""
    H = float((fp.get("orig_height") or {}).get("q50") or BASE_SIDE)
    W = float((fp.get("orig_width") or {}).get("q50") or BASE_SIDE)
    cap = int(max_side or MAX_SIDE[device])
    return H, W, max(multiple, cap - cap % multiple)


def plan_input_size(fp: dict, device: str, min_lesion_px: float, max_side: Optional[int], crop: Optional[tuple[int, int]],
                    multiple: int = SIDE_MULTIPLE) -> tuple[list[int], str]:
    """Input (h, w) from the median image size and the smallest lesions (see the module docstring).

    Sides are multiples of `multiple`, the network's output stride.
    """
    H, W, cap_side = _median_size_and_cap(fp, device, max_side, multiple)
    scale = min(1.0, BASE_SIDE / max(H, W))
    why = [f"median image {H:g}x{W:g} " + ("kept at its size" if scale >= 1.0 else f"scaled to a {BASE_SIDE} px long side (x{scale:.2f})")]
    a05, where = smallest_lesion_area(fp)
    if a05 is not None:
        need = min(1.0, math.sqrt(min_lesion_px / a05))
        if need > scale:
            scale = need
            why.append(f"enlarged to x{scale:.2f} so the smallest 5% of lesions keep >= {min_lesion_px:g} px")
    h, w = _round_up(H * scale, multiple), _round_up(W * scale, multiple)
    why.append(f"sides rounded up to multiples of {multiple} (the network's output stride)")
    if max(h, w) > cap_side:
        why.append(f"capped at {cap_side} px per side ({'plan.max_side' if max_side else device.upper() + ' default'})")
        h, w = min(h, cap_side), min(w, cap_side)
    if crop is not None and (h < crop[0] or w < crop[1]):
        h, w = max(h, _round_up(crop[0], multiple)), max(w, _round_up(crop[1], multiple))
        why.append(f"raised to hold sampler.crop_size {list(crop)}")
    if a05 is None:
        why.append("no lesions to keep visible")
    else:
        at_input = a05 * (h / H) * (w / W)
        short = " (below the target: a larger plan.max_side would keep them)" if at_input < min_lesion_px - 1e-6 else ""
        why.append(f"smallest 5% of lesions: {a05:.1f} px at {where}, ~{at_input:.1f} px at input (target >= {min_lesion_px:g}){short}")
    return [h, w], "; ".join(why)


def plan_patches(fp: dict, device: str, min_lesion_px: float, max_side: Optional[int], multiple: int = SIDE_MULTIPLE
                 ) -> tuple[Optional[tuple[list[int], list[int]]], str]:
    """((input (h, w), crop (h, w)), why) when whole images at max_side would shrink the smallest lesions below the target, else (None, why).

    The input is the size that keeps the smallest 5% of lesions at ``min_lesion_px`` (never above
    the median original image, at most `PATCH_MAX_SIDE`); the crop is the whole-image cap, so a
    step costs what a resized image costs, and inference slides windows of the crop size.
    """
    H, W, cap_side = _median_size_and_cap(fp, device, max_side, multiple)
    a05, where = smallest_lesion_area(fp)
    if a05 is None:
        return None, "no lesions: whole images"
    scale = min(1.0, math.sqrt(min_lesion_px / a05))
    h, w = _round_up(H * scale, multiple), _round_up(W * scale, multiple)
    if max(h, w) <= cap_side:
        return None, f"whole images at most {cap_side} px keep the smallest 5% of lesions ({a05:.1f} px at {where}) >= {min_lesion_px:g} px"
    top = PATCH_MAX_SIDE[device]
    h, w = min(h, top - top % multiple), min(w, top - top % multiple)
    crop = [min(cap_side, h), min(cap_side, w)]
    return ([h, w], crop), (f"the smallest 5% of lesions ({a05:.1f} px at {where}) need a {max(h, w)} px input to keep >= "
                            f"{min_lesion_px:g} px, above the {cap_side} px whole-image cap: images kept at {h}x{w}, trained on "
                            f"{crop[0]}x{crop[1]} crops, predicted with sliding windows of that size")


def plan_spacing(fp: dict, size: Sequence[int]) -> tuple[Optional[list[float]], str]:
    """(target in-plane spacing (row, col), why) for volumes whose every slice has a spacing, else (None, why).

    The target is the median spacing scaled by the median slice's shrink to `size`, so the
    median slice maps onto the input exactly and every other slice keeps its millimetres.
    """
    if not fp.get("n_volumes"):
        return None, "2D images: resized (no spacing normalisation)"
    n, with_spacing = int(fp.get("n_images") or 0), int(fp.get("n_with_spacing") or 0)
    sp_r, sp_c = (fp.get("spacing_row") or {}).get("q50"), (fp.get("spacing_col") or {}).get("q50")
    if not n or with_spacing < n or not sp_r or not sp_c:
        return None, f"{n - with_spacing} of {n} slices have no spacing: resized (no spacing normalisation)"
    H = float((fp.get("orig_height") or {}).get("q50"))
    W = float((fp.get("orig_width") or {}).get("q50"))
    target = [round(float(sp_r) * H / size[0], 4), round(float(sp_c) * W / size[1], 4)]
    return target, (f"volumes: each slice resampled to {target[0]:g} x {target[1]:g} per pixel (the median spacing "
                    f"{float(sp_r):g} x {float(sp_c):g} of a {H:g}x{W:g} slice at {size[0]}x{size[1]}), so a lesion's size in "
                    f"mm is the same pixels in every volume; a slice larger than the input at that spacing is shrunk to fit")


def window_count(size: tuple[int, int], roi: tuple[int, int], overlap: float) -> int:
    """Windows `monai.inferers.sliding_window_inference` runs on an image of `size` (its scan interval rule)."""
    n = 1
    for s, r in zip(size, roi):
        step = max(1, int(r * (1 - overlap)))
        n *= 1 if s <= r else math.ceil((s - r) / step) + 1
    return n


def _train_stats(fp: dict) -> dict:
    return (fp.get("by_split") or {}).get("train") or fp


def plan_positive_share(fp: dict) -> tuple[Optional[float], str]:
    """Sampler target share of positive images from the training images' empty fraction."""
    t = _train_stats(fp)
    empty = t.get("empty_image_fraction")
    which = "training images" if "by_split" in fp else "images"
    if empty is None:
        return None, "no masks: natural order"
    positive = 1.0 - empty
    if positive <= 0:
        return None, f"no {which} hold foreground: nothing to rebalance"
    if positive < POSITIVE_SHARE_TARGET:
        return POSITIVE_SHARE_TARGET, (
            f"{empty:.0%} of {t.get('n_images', '?')} {which} are empty (only {positive:.0%} positive): "
            f"every batch gets {POSITIVE_SHARE_TARGET:.0%} positive images so lesions are not a rare event"
        )
    return None, f"{positive:.0%} of {which} hold foreground (empty fraction {empty:.0%}): natural order already gives mostly positive batches"


def plan_loss(fp: dict, batch_positive_share: Optional[float]) -> tuple[dict, str, Optional[float]]:
    """The loss mix and BCE pos_weight from the foreground fractions (see the module docstring)."""
    t = _train_stats(fp)
    empty = t.get("empty_image_fraction")
    fg_pos = t.get("foreground_fraction_positive") or {}
    if empty is None or empty >= 1.0 or not fg_pos:
        return {"bce": 1.0, "dice": 1.0}, "no foreground to weigh: BCE + Dice", None
    share = batch_positive_share if batch_positive_share is not None else 1.0 - empty
    p = share * fg_pos["mean"]
    raw_weight = math.sqrt((1.0 - p) / p) if p > 0 else POS_WEIGHT_CAP
    weight = min(raw_weight, POS_WEIGHT_CAP)
    why = [f"batches hold {share:.0%} positive images x {fg_pos['mean']:.3%} foreground per positive image = {p:.3%} foreground pixels"]
    bce: Any
    if p >= PLAIN_BCE_FROM_FG:
        bce = 1.0
        pos_weight = None
        why.append(f"{p:.1%} >= {PLAIN_BCE_FROM_FG:.0%}: plain BCE, the Dice term weighs the foreground (a pos_weight lost in cross-validation on BUSI)")
    elif weight < POS_WEIGHT_MIN:
        bce = 1.0
        pos_weight = None
        why.append(f"sqrt((1-p)/p) = {raw_weight:.2f} < {POS_WEIGHT_MIN:g}: plain BCE")
    else:
        pos_weight = round(weight, 2)
        bce = {"weight": 1.0, "pos_weight": pos_weight}
        why.append(f"BCE pos_weight sqrt((1-p)/p) = {raw_weight:.2f}" + (f", capped at {POS_WEIGHT_CAP:g}" if raw_weight > POS_WEIGHT_CAP else ""))
    loss: dict = {"bce": bce, "dice": 1.0}
    median = fg_pos.get("q50", fg_pos["mean"])
    if median < FOCAL_BELOW_FG:
        loss["focal"] = 1.0
        why.append(f"focal added: the median positive image has {median:.3%} < {FOCAL_BELOW_FG:.0%} foreground pixels")
    else:
        why.append(f"no focal: the median positive image has {median:.2%} >= {FOCAL_BELOW_FG:.0%} foreground pixels")
    return loss, "; ".join(why), pos_weight


def plan_lovasz(fp: dict, epochs: int, steps_per_epoch: int) -> tuple[Optional[dict], str]:
    """The Lovász hinge term to add for the last part of training, or None, with the reason (module docstring).

    Args:
        epochs: the planned epochs.
        steps_per_epoch: optimiser steps per epoch (micro-batches over `train.accumulate`).
    """
    empty = _train_stats(fp).get("empty_image_fraction")
    if empty is None or empty >= 1.0 or empty < LOVASZ_FROM_EMPTY:
        return None, f"no Lovász: {empty or 0:.0%} of training images are empty (it is for >= {LOVASZ_FROM_EMPTY:.0%} and some foreground)"
    steps = epochs * steps_per_epoch
    if steps < LOVASZ_MIN_STEPS or epochs < 2:
        # the loss's schedule moves per epoch: one epoch has no second half
        return None, (f"no Lovász: {epochs} planned epochs x {steps_per_epoch} steps = {steps} optimiser steps (it needs "
                      f">= {LOVASZ_MIN_STEPS} over >= 2 epochs: with fewer, its half of the run was too short to gain "
                      "what it costs lesion Dice)")
    return {"weight": 1.0, "start": LOVASZ_START}, (
        f"Lovász hinge from {LOVASZ_START:.0%} of the {epochs} epochs on ({steps} planned optimiser steps >= "
        f"{LOVASZ_MIN_STEPS}): {empty:.0%} of training images are empty, and per image its hinge falls on an empty "
        "image's most confident false positive")


def plan_checkpoint(fp: dict) -> tuple[str, str]:
    """('best' or 'last', reason): whether the validation part is large enough to pick an epoch and a post-processing rule."""
    n = part_cases(fp, "val")
    if n < SELECT_MIN_VAL_CASES:
        return "last", (f"{n} validation cases (< {SELECT_MIN_VAL_CASES}): an epoch or a post-processing rule picked on so "
                        "few is a lottery (BENCHMARKS.md §5j, §5k), so the final epoch of the decayed schedule is the model and "
                        "its raw prediction is kept; validation only reports")
    return "best", (f"{n} validation cases (>= {SELECT_MIN_VAL_CASES}): the epoch with the best validation "
                    "score (train.monitor) is the model, and post-processing is tuned on them")


def plan_augment(fp: dict) -> tuple[str, str]:
    """Augmentation preset by the number of training images: medium below `MEDIUM_BELOW_IMAGES`, light from there.

    No set measured gained from heavy (medium plus elastic, grid and optical distortions, CLAHE) at the
    short budgets medseg plans for, however few its images (BENCHMARKS.md §5k).
    """
    n = int(_train_stats(fp).get("n_images") or fp.get("n_images") or 0)
    if n < MEDIUM_BELOW_IMAGES:
        return "medium", (f"{n} training images (< {MEDIUM_BELOW_IMAGES}): medium augmentation; heavy's distortions "
                          "gained nothing on 34-136 training images and cost thin structures (BENCHMARKS.md §5k)")
    return "light", f"{n} training images (>= {MEDIUM_BELOW_IMAGES}): the data carry their own variation, light augmentation"


def _pow2_floor(n: int) -> int:
    return 1 << (max(1, n).bit_length() - 1)


def plan_batch_size(cost: StepCost, n_train: int, n_val: int, steps_per_epoch: Optional[int], budget_minutes: Optional[float],
                    shares: Optional[Callable[[int], np.ndarray]] = None) -> tuple[int, str]:
    """The largest power-of-two batch within memory, steps-per-epoch and device caps (see the module docstring)."""
    limits = {
        f"memory (~{cost.mem_per_image_bytes / 2**20:.0f} MiB per image of {cost.mem_available_bytes / 2**30:.1f} GiB usable)": cost.memory_batch_limit(),
        f">= {MIN_STEPS_PER_EPOCH} steps per epoch over {n_train} training images": max(1, n_train // MIN_STEPS_PER_EPOCH),
        f"{cost.device.upper()} cap": MAX_BATCH[cost.device],
    }
    binding = min(limits, key=limits.get)
    batch = max(min(MIN_BATCH, n_train), _pow2_floor(limits[binding]))
    why = f"largest power of 2 within {binding} = {limits[binding]}"
    if budget_minutes:
        first = batch
        while batch > BUDGET_MIN_BATCH:
            epochs = budget_epochs(cost, batch, n_train, n_val, steps_per_epoch, budget_minutes, shares)
            if epochs * micro_batches(n_train, batch, steps_per_epoch) >= MIN_BUDGET_STEPS:
                break
            batch //= 2
        if batch != first:
            why += f"; halved to {batch} so the {budget_minutes:g} min budget holds more optimiser steps (target {MIN_BUDGET_STEPS})"
    return int(batch), why


def budget_epochs(cost: StepCost, batch: int, n_train: int, n_val: int, steps_per_epoch: Optional[int], budget_minutes: float,
                  shares: Optional[Callable[[int], np.ndarray]] = None) -> int:
    """Whole epochs that fit in the budget (at least 1, at most MAX_EPOCHS).

    Args:
        shares: with train.progressive, E -> each epoch's training pixels as a share of the full size's in a run
            of E epochs: the training steps' per-image cost scales with it, their fixed cost (the optimiser
            step), validation and the epoch overhead do not.
    """
    per_epoch = epoch_seconds(cost, batch, n_train, n_val, steps_per_epoch)
    if shares is None:
        return int(min(MAX_EPOCHS, max(1, math.floor(budget_minutes * 60.0 / per_epoch))))
    scaled = micro_batches(n_train, batch, steps_per_epoch) * cost.train_s_per_image * batch
    return max(1, epochs_within(budget_minutes * 60.0, 0, per_epoch - scaled, scaled, shares, MAX_EPOCHS))


# ---------------------------------------------------------------------------------------
# The plan


@dataclass
class PlanEntry:
    """One planned key: the value the run uses, who chose it and why.

    Attributes:
        key: dotted config key.
        value: the value in the resolved config.
        set_by: 'plan', 'user' (explicit in the config) or 'default' (the schema default, not planned).
        reason: why this value.
        planned: what the plan would choose (differs from value only when set by the user).
    """

    key: str
    value: Any
    set_by: str
    reason: str
    planned: Any = None


@dataclass
class Plan:
    """The resolved plan: entries in order, the step cost it used, and whether fit applies it."""

    entries: list[PlanEntry]
    cost: StepCost
    enabled: bool
    estimates: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def entry(self, key: str) -> PlanEntry:
        return next(e for e in self.entries if e.key == key)

    def to_json(self) -> dict:
        return {
            "plan_version": PLAN_VERSION,
            "applied_by_fit": self.enabled,
            "entries": {e.key: {"value": e.value, "set_by": e.set_by, "reason": e.reason, "planned": e.planned} for e in self.entries},
            "estimates": self.estimates,
            "notes": self.notes,
            "cost": self.cost.to_json(),
        }


class _Planner:
    """Fills keys in a copy of the config's raw dict, recording an entry for each."""

    def __init__(self, cfg: Config):
        self.raw = cfg.model_dump(mode="json")
        self.user = user_set_keys(cfg)
        self.entries: list[PlanEntry] = []

    def is_user(self, key: str) -> bool:
        return key in self.user or any(key.startswith(k + ".") for k in self.user)

    def decide(self, key: str, planned: Any, reason: str) -> Any:
        """Use `planned` unless the user set `key`; returns the value in force."""
        if self.is_user(key):
            value = _get(self.raw, key)
            note = "set by user" + ("" if _same(value, planned) else f"; the plan would choose {show_value(planned)}: {reason}")
            self.entries.append(PlanEntry(key, value, "user", note, planned))
            return value
        _set(self.raw, key, copy.deepcopy(planned))
        self.entries.append(PlanEntry(key, planned, "plan", reason, planned))
        return planned

    def revise(self, key: str, planned: Any, reason: str) -> Any:
        """Decide `key` again with what a later step learned; the new entry takes the first one's place."""
        i = next(i for i, e in enumerate(self.entries) if e.key == key)
        del self.entries[i]
        value = self.decide(key, planned, reason)
        self.entries.insert(i, self.entries.pop())
        return value

    def note(self, key: str, set_by: str, reason: str) -> None:
        self.entries.append(PlanEntry(key, _get(self.raw, key), set_by, reason, None))


def _same(a: Any, b: Any) -> bool:
    norm = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731
    return norm(a) == norm(b)


def show_value(v: Any) -> str:
    """A planned value as the plan's table shows it."""
    return v if isinstance(v, str) else json.dumps(list(v) if isinstance(v, tuple) else v)


def make_plan(cfg: Config, fp: dict, measure: Optional[bool] = None, world: int = 1) -> tuple[Plan, Config]:
    """Plan the unset keys of `cfg` from the fingerprint `fp`; returns the plan and the planned config.

    Under DDP only rank 0 plans (the other ranks read its plan from the run folder), so the
    measured step cost can differ between machines without the ranks disagreeing.

    Args:
        cfg: the validated config (model_fields_set tells which keys the user set).
        fp: `compute_fingerprint(loaded, split)` (with 'by_split' the training part is used).
        measure: time steps on this machine; None: cfg.plan.measure.
        world: DDP processes the fit trains with: the batch is split over them, so it is made a
            multiple of `world` (the memory rule is for one device's whole batch, so each
            process's share fits; the epoch estimates stay those of one device, an upper bound).
    """
    p = _Planner(cfg)
    notes: list[str] = []
    device = training_device(cfg)
    measure = cfg.plan.measure if measure is None else measure
    crop = tuple(cfg.sampler.crop_size) if cfg.sampler.crop_size else None

    stride = get_model_spec(cfg.model.name).output_stride(cfg.model.channels)
    patches = None
    if cfg.plan.patches == "auto" and crop is None and not p.is_user("data.input_size"):
        patches, why = plan_patches(fp, device, cfg.plan.min_lesion_px, cfg.plan.max_side, multiple=stride)
    if patches is not None:
        size = p.decide("data.input_size", patches[0], why)
        crop = tuple(p.decide("sampler.crop_size", patches[1], why))
        p.decide("eval.sliding_window.roi_size", list(crop), why)
        target, why = plan_spacing(fp, size)
        if target is not None and p.decide("data.resize_mode", "spacing", why) == "spacing":
            p.decide("data.target_spacing", target, why)
    else:
        size, why = plan_input_size(fp, device, cfg.plan.min_lesion_px, cfg.plan.max_side, crop, multiple=stride)
        size = p.decide("data.input_size", size, why)

    if cfg.sampler.schedule is not None:
        p.note("sampler.positive_share", "user", "not planned: sampler.schedule is set")
        share = float(np.mean(cfg.sampler.schedule))
    else:
        share = p.decide("sampler.positive_share", *plan_positive_share(fp))
    loss, loss_why, _ = plan_loss(fp, share)
    p.decide("loss", loss, loss_why)
    p.decide("augment.preset", *plan_augment(fp))
    checkpoint, why = plan_checkpoint(fp)
    p.decide("train.checkpoint", checkpoint, why)
    p.decide("postprocess.tune", checkpoint == "best", why)

    train = _train_stats(fp)
    n_train = int(train.get("n_images") or fp.get("n_images") or 1)
    n_val = int(((fp.get("by_split") or {}).get("val") or {}).get("n_images") or 0)
    planned_cfg = config_from_dict(p.raw)  # validates the input size and loss before the model runs on them
    train_size = tuple(crop) if crop else tuple(planned_cfg.data.input_size)
    val_size, windows = tuple(planned_cfg.data.input_size), 1
    roi = planned_cfg.eval.sliding_window.roi_size
    if roi is not None:
        # validation slides windows: it costs one window's forward pass per window, not one pass of the image
        windows = window_count(val_size, roi, planned_cfg.eval.sliding_window.overlap)
        val_size = tuple(min(r, s) for r, s in zip(roi, val_size))
    cost = measure_cost(planned_cfg, int(fp.get("in_channels") or 1), train_size, val_size, measure)
    if windows > 1:
        cost = dataclasses.replace(cost, val_s_per_image=cost.val_s_per_image * windows)
    steps = cfg.train.steps_per_epoch
    budget = cfg.train.budget_minutes
    shares = None if cfg.train.progressive is None else shares_for(cfg.train.progressive, train_size, stride)
    batch, why = plan_batch_size(cost, n_train, n_val, steps, budget, shares)
    if world > 1 and batch % world:
        batch, why = -(-batch // world) * world, why + f"; rounded up to a multiple of the {world} DDP processes"
    batch = p.decide("train.batch_size", batch, why)

    per_epoch = epoch_seconds(cost, batch, n_train, n_val, steps)
    cost_text = f"{cost.method} {per_epoch:.1f} s per epoch ({n_train} training, {n_val} validation images, batch {batch})"
    if budget:
        epochs = budget_epochs(cost, batch, n_train, n_val, steps, budget, shares)
        why = f"{budget:g} min budget / {cost_text}"
        if shares is not None:
            why += f"; the first epochs train smaller (train.progressive): {float(np.mean(shares(epochs))):.2f} of the full pixels on average"
        epochs = p.decide("train.epochs", epochs, why + (f", capped at {MAX_EPOCHS}" if epochs == MAX_EPOCHS else ""))
        if not p.is_user("train.epochs"):
            # the epochs are an estimate: when the real ones run faster, the budget's rest is training time, not idle
            p.decide("schedule.fill_budget", True, f"train.epochs is the plan's estimate ({cost.method}): when epochs run "
                     "faster, training goes on to what the budget holds and the decay is stretched to end there")
    elif p.is_user("train.epochs"):
        epochs = cfg.train.epochs
        p.note("train.epochs", "user", f"set by user; ~{epochs * per_epoch / 60:.1f} min at {cost_text}")
    else:
        epochs = cfg.train.epochs
        p.note("train.epochs", "default", f"no train.budget_minutes: the configured {epochs} epochs, ~{epochs * per_epoch / 60:.1f} min at {cost_text}")

    warmup = cfg.schedule.warmup_epochs
    if warmup >= WARMUP_MAX_SHARE * epochs and not p.is_user("schedule.warmup_epochs"):
        planned_warmup = round(min(warmup, WARMUP_PLANNED_SHARE * epochs), 2)
        p.decide("schedule.warmup_epochs", planned_warmup,
                 f"{WARMUP_PLANNED_SHARE:.0%} of the {epochs} planned epochs: the configured {warmup:g} would take "
                 f"{warmup / epochs:.0%} of the run (the warm-up must stay under {WARMUP_MAX_SHARE:.0%})")
    elif warmup >= epochs:
        if p.is_user("schedule.warmup_epochs"):
            # the user's warm-up wins over the budget: training must outlast it
            longer = int(math.floor(warmup)) + 1
            p.revise("train.epochs", longer, f"raised from {epochs} to outlast schedule.warmup_epochs {warmup:g} (set by user); over the budget")
            epochs = longer
        else:
            p.decide("schedule.warmup_epochs", round(min(warmup, WARMUP_PLANNED_SHARE * epochs), 2),
                     f"{WARMUP_PLANNED_SHARE:.0%} of the {epochs} planned epochs (the warm-up must be shorter than training)")

    if not p.is_user("loss"):
        # decided once the epochs are known; the step cost above was timed without it
        optimiser_steps = max(1, micro_batches(n_train, batch, steps) // planned_cfg.train.accumulate)
        lovasz, why = plan_lovasz(fp, epochs, optimiser_steps)
        p.revise("loss", {**loss, "lovasz": lovasz} if lovasz else loss, f"{loss_why}; {why}")

    planned_cfg = config_from_dict(p.raw)
    estimates = {
        "epoch_seconds": per_epoch,
        "train_minutes": planned_cfg.train.epochs * per_epoch / 60.0,
        "n_train_images": n_train,
        "n_val_images": n_val,
    }
    return Plan(p.entries, cost, cfg.plan.enabled, estimates, notes), planned_cfg


# ---------------------------------------------------------------------------------------
# Running it: fit's first step and the `medseg plan` verb


@dataclass
class PlannedRun:
    """What planning hands back to fit: the planned config, the data at its input size, the fingerprint and the plan."""

    config: Config
    loaded: Any
    fingerprint: dict
    plan: Plan


def _geometry(d) -> tuple:
    return tuple(d.input_size), d.resize_mode, tuple(d.target_spacing) if d.target_spacing else None


def plan_run(cfg: Config, loaded, split: dict, measure: Optional[bool] = None, progress: bool = False, world: int = 1) -> PlannedRun:
    """Fingerprint the loaded data, plan, and re-read the data when the plan changed the input size.

    Args:
        cfg: the user's config.
        loaded: `load_data(cfg.data)`.
        split: case ids per part.
        measure: as `make_plan`.
        progress: progress bar while re-reading.
        world: DDP processes (as `make_plan`).
    """
    original = original_statistics(loaded, split)
    fp = compute_fingerprint(loaded, split, original=original)
    plan, planned = make_plan(cfg, fp, measure, world)
    if _geometry(planned.data) != _geometry(cfg.data):
        # the loader resizes while reading, so a new input geometry means reading the files again
        loaded = load_data(planned.data, with_masks=True, progress=progress)
        fp = compute_fingerprint(loaded, split, original=original)
    return PlannedRun(planned, loaded, fp, plan)
