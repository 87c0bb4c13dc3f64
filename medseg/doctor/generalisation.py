"""Generalisation checks: a growing train-validation gap, a budget that ended while still improving, and an epoch
or a rule picked on too few validation cases."""

from __future__ import annotations

import math

import numpy as np

from medseg.doctor.evidence import RunEvidence, finite
from medseg.doctor.finding import Finding
from medseg.training import SELECT_MIN_VAL_CASES

# Validation loss this far (relative) above its minimum, with train loss still falling, is overfitting.
GAP_RISE = 0.10
# Gain of the monitor over the last third of the run that counts as "still improving" / "far from done".
STILL_IMPROVING, FAR_FROM_DONE = 0.01, 0.10
# A training loss still above this share of its first-epoch value, falling at least EARLY_LOSS_FALL
# (relative) in the last epoch, has barely started to converge.
EARLY_LOSS_LEFT, EARLY_LOSS_FALL = 0.5, 0.05
STRONGER_AUGMENT = {"none": "light", "light": "medium", "medium": "heavy"}


def check(ev: RunEvidence) -> list[Finding]:
    return [f for f in (growing_gap(ev), budget_too_short(ev), picked_on_few(ev)) if f is not None]


def picked_on_few(ev: RunEvidence) -> Finding | None:
    """The model's epoch (train.checkpoint: best), the epoch training stopped at (early stopping) or a
    post-processing rule was picked on fewer than `SELECT_MIN_VAL_CASES` validation cases: a lottery that
    can deploy an early, unfinished model. Under ``last`` with early stopping the model is the epoch the
    stop chose, `patience` epochs past a best-scoring epoch, in the middle of the LR schedule."""
    n = ev.val_cases
    best = str(ev.get("train.checkpoint", "best")) == "best"
    patience = int(ev.get("train.early_stopping.patience", 0) or 0)
    tuned = bool(ev.get("postprocess.tune", True))
    stops = patience > 0
    if n == 0 or n >= SELECT_MIN_VAL_CASES or not (best or stops or tuned):
        return None
    picked = " and ".join(w for w, on in (("the epoch", best), ("the end of training", stops), ("the post-processing rule", tuned)) if on)
    evidence = (f"{n} validation cases pick {picked} (train.checkpoint = {'best' if best else 'last'}, "
                + (f"train.early_stopping.patience = {patience}, " if stops else "") + f"postprocess.tune = {str(tuned).lower()})")
    ep = ev.epoch_numbers
    best_epoch = ev.summary.get("best_epoch")
    early = 0.0
    if best and finite(best_epoch) and len(ep):
        last = int(ep[-1])
        evidence += f"; the model is epoch {int(best_epoch)} of {last + 1}"
        early = 1.0 - (int(best_epoch) + 1) / (last + 1)  # the share of training the picked epoch left out
    elif stops and len(ep):
        planned = int(ev.get("train.epochs", 0) or 0)
        last = int(ep[-1])
        if planned > last + 1:
            evidence += f"; training stopped after epoch {last} of {planned} planned"
            early = 1.0 - (last + 1) / planned
    # one fix at a time, the one that changes the deployed weights first
    fix_key, fix_value = (("train.checkpoint", "last") if best else ("train.early_stopping.patience", 0) if stops
                          else ("postprocess.tune", False))
    return Finding(
        id="generalisation.picked_on_few", family="generalisation", severity="warning",
        confidence=0.6 + 0.3 * early, impact=min(0.8, 0.3 + 0.5 * early),
        title=f"{picked} picked on {n} validation cases",
        evidence=evidence,
        why=f"on fewer than {SELECT_MIN_VAL_CASES} cases the best-scoring epoch or rule is mostly chance: on BUSI with 1-7 "
        "validation images the final epoch was never detectably worse than the picked one and up to 0.25 Dice better on "
        "held-out images, and the tuned rule lost 0.008 on average (BENCHMARKS.md §5j); the plan keeps the last epoch "
        "of the full schedule untuned there"
        + ("; early stopping ends training where that chance says, before the LR decay has settled the weights" if stops else ""),
        fix_key=fix_key, fix_value=fix_value,
        numbers={"val_cases": n, "picked_share_left_out": early},
    )


def _smooth(x: np.ndarray, k: int = 3) -> np.ndarray:
    if len(x) < k:
        return x
    pad = np.concatenate([[x[0]] * (k // 2), x, [x[-1]] * (k // 2)])
    return np.convolve(pad, np.ones(k) / k, mode="valid")


def growing_gap(ev: RunEvidence) -> Finding | None:
    """Validation loss rising (from a given epoch on) while the training loss keeps falling."""
    tl, vl, ep = ev.loss_trend("train_loss"), ev.loss_trend("val_loss"), ev.epoch_numbers
    ok = np.isfinite(tl) & np.isfinite(vl)
    if ok.sum() < 5:
        return None
    tl, vl, ep = tl[ok], vl[ok], ep[ok]
    vs = _smooth(vl)
    m = int(np.argmin(vs))
    if m > len(vl) - 3 or vs[m] <= 0:
        return None
    rise = float((vs[-1] - vs[m]) / abs(vs[m]))
    train_fall = float((tl[m] - tl[-1]) / abs(tl[m])) if tl[m] else 0.0
    if rise < GAP_RISE or train_fall <= 0:
        return None
    preset = str(ev.get("augment.preset", "light"))
    if preset in STRONGER_AUGMENT:
        fix_key, fix_value = "augment.preset", STRONGER_AUGMENT[preset]
    else:
        fix_key, fix_value = "model.dropout", max(0.2, float(ev.get("model.dropout", 0.0)) + 0.1)
    dice = ev.series("val_dice")
    dice_text = ""
    if np.isfinite(dice).any():
        d = dice[ok]
        dice_text = f"; val Dice {np.nanmax(d):.3f} at best, {d[-1]:.3f} at the end"
    return Finding(
        id="generalisation.growing_gap", family="generalisation", severity="warning",
        confidence=min(0.9, 0.55 + rise), impact=min(0.8, 0.3 + rise),
        title=f"overfitting from epoch {int(ep[m])}: validation loss rose {rise:.0%} while training loss fell {train_fall:.0%}",
        evidence=f"val loss {vl[m]:.4f} at epoch {int(ep[m])} → {vl[-1]:.4f} at epoch {int(ep[-1])}; train loss "
        f"{tl[m]:.4f} → {tl[-1]:.4f}{dice_text}",
        why=("the model memorises the training images after that epoch; the best checkpoint is kept, but the extra "
             "epochs are wasted and stronger regularisation usually lifts the best score too")
        if str(ev.get("train.checkpoint", "best")) == "best" else
        ("the model memorises the training images after that epoch, and the last epoch is the model (train.checkpoint: "
         "last): stronger regularisation keeps it from deploying the memorised weights"),
        fix_key=fix_key, fix_value=fix_value, numbers={"gap_start_epoch": int(ep[m]), "val_loss_rise": rise, "train_loss_fall": train_fall},
    )


def _early_training(ev: RunEvidence) -> tuple[bool, float, float]:
    """(still early, last/first train loss, last epoch's relative fall): the loss has barely started to fall and still falls fast."""
    tl = ev.loss_trend("train_loss")
    tl = tl[np.isfinite(tl)]
    if len(tl) < 2 or tl[0] <= 0 or tl[-2] <= 0:
        return False, float("nan"), float("nan")
    left = float(tl[-1] / tl[0])
    fall = float((tl[-2] - tl[-1]) / tl[-2])
    return left >= EARLY_LOSS_LEFT and fall >= EARLY_LOSS_FALL, left, fall


def budget_too_short(ev: RunEvidence) -> Finding | None:
    """The best epoch is the last one and the model was still improving: more epochs would help.

    "Still improving": the monitor gained over the last third of the run, or the training loss is
    still above half its first-epoch value and fell by 5% or more in the last epoch.
    """
    monitor = str(ev.get("train.monitor", "dice"))
    mon = ev.series(f"val_{monitor}")
    ep = ev.epoch_numbers
    ok = np.isfinite(mon)
    if ok.sum() < 2:
        return None
    mon, ep = mon[ok], ep[ok]
    best_epoch = ev.summary.get("best_epoch")
    if not finite(best_epoch) or best_epoch < 0:
        best_epoch = int(ep[int(np.argmin(mon) if monitor == "loss" else np.argmax(mon))])
    last = int(ep[-1])
    if int(best_epoch) != last:
        return None
    cut = max(1, int(math.floor(2 * len(mon) / 3)))
    if monitor == "loss":
        before = float(mon[:cut].min())
        gain = (before - float(mon[-1])) / max(abs(before), 1e-8)  # relative for a loss
    else:
        before = float(mon[:cut].max())
        gain = float(mon[-1]) - before
    early, loss_left, loss_fall = _early_training(ev)
    if gain < STILL_IMPROVING and not early:
        return None
    gain = max(gain, 0.0)
    planned = int(ev.get("train.epochs", last + 1))
    epochs = max(planned, last + 1)  # schedule.fill_budget may train past train.epochs
    fix_key, fix_value = ev.train_longer(max(2 * epochs, epochs + 10))
    warm_share = float(ev.get("schedule.warmup_epochs", 0.0) or 0.0) / max(epochs, 1)
    confidence = min(0.95, 0.55 + 2 * gain + (0.25 if early else 0.0))
    if warm_share >= 0.5:
        confidence *= 0.6  # the long warm-up explains the late improvement at least as well
    evidence = (f"val {monitor} {before:.4f} by epoch {int(ep[cut - 1])}, {mon[-1]:.4f} at the last epoch {last} "
                f"(gain {gain:.3f}{' relative' if monitor == 'loss' else ''}); train.epochs = {planned}"
                + (f", {epochs} trained (schedule.fill_budget)" if epochs > planned else ""))
    if finite(loss_left):
        evidence += f"; train loss at {loss_left:.0%} of its first-epoch value, down {loss_fall:.0%} in the last epoch"
    return Finding(
        id="generalisation.budget_too_short", family="generalisation",
        severity="serious" if gain >= FAR_FROM_DONE or early else "warning", confidence=confidence,
        impact=min(1.0, 0.5 + 2 * gain + (0.3 if early else 0.0)),
        title=f"best epoch is the last ({last}) and the model was still improving",
        evidence=evidence,
        why="training stopped while the model was still getting better: the reported score understates what this "
        "configuration can do",
        fix_key=fix_key, fix_value=fix_value,
        numbers={"best_epoch": last, "gain_last_third": gain, "epochs": epochs, "train_loss_left": loss_left, "train_loss_last_fall": loss_fall},
    )
