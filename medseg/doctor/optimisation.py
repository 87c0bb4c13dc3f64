"""Optimisation checks: non-finite losses (AMP overflow), LR too low or too high, warm-up too long, a schedule the budget cut."""

from __future__ import annotations

import math

import numpy as np

from medseg.doctor.evidence import RunEvidence, finite
from medseg.doctor.finding import Finding
from medseg.training import WARMUP_MAX_SHARE

# Peak learning rates below these barely move the weights within a typical budget.
LOW_LR = {"adamw": 1e-5, "sgd": 1e-4}
# A train loss that fell by less than this share of its first value over the run is "flat".
FLAT_DROP = 0.03
# Warm-up longer than these shares of the run is reported as serious / as a warning.
WARMUP_SERIOUS, WARMUP_WARN = 0.5, WARMUP_MAX_SHARE  # the plan keeps its own warm-ups below the warning
# A run the budget stopped with its last LR this far above the schedule's floor (share of the peak) never
# finished its decay: reported as info, and as a warning from CUT_WARN of the peak.
CUT_ABOVE_FLOOR, CUT_WARN = 0.05, 0.25


def check(ev: RunEvidence) -> list[Finding]:
    out = []
    for fn in (nonfinite, nan_checkpoint, lr_too_low, warmup_too_long, schedule_cut, diverging, oscillating):
        f = fn(ev)
        if f is not None:
            out.append(f)
    return out


def loss_drop(ev: RunEvidence) -> tuple[float, int]:
    """(relative fall of the finite train loss from the first epoch to the best of the last third, epochs)."""
    tl = ev.loss_trend("train_loss")
    tl = tl[np.isfinite(tl)]
    if len(tl) < 2 or tl[0] == 0:
        return float("nan"), len(tl)
    tail = tl[-max(1, len(tl) // 3):]
    return float((tl[0] - tail.min()) / abs(tl[0])), len(tl)


def _terms_in(row: dict, ev: RunEvidence) -> list[str]:
    named = row.get("nonfinite_terms")
    if isinstance(named, str) and named.strip():
        return [t for t in named.split(";") if t]
    # older runs: the epoch means of the terms show which ones were non-finite
    return [k[len("train_loss_"):] for k, v in row.items() if k.startswith("train_loss_") and isinstance(v, float) and math.isinf(v)]


def nonfinite(ev: RunEvidence) -> Finding | None:
    """Steps whose loss was NaN/inf: where it started, which term, and (fp16) whether it is AMP overflow."""
    if not ev.epochs:
        return None
    counts = np.nan_to_num(ev.series("nonfinite_steps"), nan=0.0)
    tl = ev.series("train_loss")
    bad_rows = [i for i, r in enumerate(ev.epochs) if counts[i] > 0 or (r.get("train_loss") is not None and not np.isfinite(tl[i]))]
    if not bad_rows:
        return None
    first = ev.epochs[bad_rows[0]]
    first_step = first.get("first_nonfinite_step")
    step_text = f"step {int(first_step)}" if finite(first_step) else "an unrecorded step"
    terms = _terms_in(first, ev)
    total = float(counts.sum())
    steps = ev.series("step")
    run_steps = float(np.nanmax(steps)) if np.isfinite(steps).any() else float("nan")
    share = total / run_steps if finite(run_steps) and run_steps > 0 else float("nan")
    last_finite = bool(np.isfinite(tl[-1]))
    precision = str(ev.state.get("precision", ""))
    lr = float(ev.get("optim.lr", 1e-3))
    term_text = ", ".join(terms) if terms else "unknown"
    if precision.startswith("16"):
        title = f"fp16 overflow: loss term {term_text} became non-finite at epoch {int(first['epoch'])}, {step_text}"
        why = ("float16 tops out at 65504 and loses values below 6e-5: a log or a power of a saturated probability in "
               "that term overflows, the scaler skips the step, and training silently stalls or the weights turn NaN")
        fix_key, fix_value = "train.precision", "bf16"
    else:
        title = f"loss term {term_text} became non-finite at epoch {int(first['epoch'])}, {step_text}"
        why = "a NaN/inf loss produces NaN gradients: the step is wasted at best, the weights are destroyed at worst"
        if float(ev.get("train.grad_clip", 1.0) or 0) == 0:
            fix_key, fix_value = "train.grad_clip", 1.0
        else:
            fix_key, fix_value = "optim.lr", float(f"{lr / 10:.2g}")
    return Finding(
        id="optimisation.nonfinite", family="optimisation", severity="serious", confidence=0.95 if terms else 0.85,
        impact=1.0 if not last_finite or (finite(share) and share > 0.1) else 0.8,
        title=title,
        evidence=f"{int(total)} non-finite steps" + (f" ({share:.0%} of {int(run_steps)})" if finite(share) else "")
        + f" in {len(bad_rows)} epoch(s), first in epoch {int(first['epoch'])} at {step_text}; terms: {term_text}; "
        f"precision {precision or 'unknown'}; last epoch loss {'finite' if last_finite else 'non-finite'}",
        why=why, fix_key=fix_key, fix_value=fix_value,
        numbers={"n_nonfinite_steps": total, "first_epoch": int(first["epoch"]), "first_step": first_step, "terms": terms, "precision": precision, "share": share},
    )


def nan_checkpoint(ev: RunEvidence) -> Finding | None:
    """The run's model checkpoint itself predicts NaN."""
    if ev.eval is None or ev.eval.probs_finite:
        return None
    return Finding(
        id="optimisation.nan_weights", family="optimisation", severity="serious", confidence=0.99, impact=1.0,
        title="the run's model checkpoint predicts NaN",
        evidence=f"non-finite probabilities on the validation images from {ev.eval.checkpoint} (epoch {ev.eval.best_epoch})",
        why="the weights were destroyed by a non-finite step; every metric of this run is meaningless",
        fix_key="optim.lr", fix_value=float(f"{float(ev.get('optim.lr', 1e-3)) / 10:.2g}"), numbers={},
    )


def lr_too_low(ev: RunEvidence) -> Finding | None:
    """A peak learning rate too small to move the weights (the loss stays flat)."""
    name = str(ev.get("optim.name", "adamw"))
    lr = float(ev.get("optim.lr", 1e-3))
    limit = LOW_LR.get(name, 1e-5)
    drop, n = loss_drop(ev)
    flat = finite(drop) and n >= 2 and drop < FLAT_DROP
    if lr >= limit:
        return None
    good = 1e-3 if name == "adamw" else 1e-2
    lrs = ev.series("lr")
    return Finding(
        id="optimisation.lr_too_low", family="optimisation", severity="serious" if flat or lr < limit / 10 else "warning",
        confidence=0.95 if flat else 0.7, impact=0.95 if flat else 0.6,
        title=f"learning rate {lr:.1e} is too low for {name}: the loss " + ("did not fall" if flat else "falls slowly"),
        evidence=f"optim.lr = {lr:.1e} (below {limit:.0e}); train loss fell {drop:.1%} over {n} epochs"
        + (f"; largest scheduled LR {np.nanmax(lrs):.1e}" if np.isfinite(lrs).any() else ""),
        why="with steps this small the weights stay near their initialisation: the run measures the initial network, not training",
        fix_key="optim.lr", fix_value=good, numbers={"lr": lr, "loss_drop": drop, "epochs": n},
    )


def warmup_too_long(ev: RunEvidence) -> Finding | None:
    """A warm-up that takes a large share of the run (the LR is at its peak only briefly, decay never happens)."""
    warm = float(ev.get("schedule.warmup_epochs", 0.0) or 0.0)
    epochs = int(ev.get("train.epochs", 1))
    share = warm / max(epochs, 1)
    if share < WARMUP_WARN:
        return None
    drop, n = loss_drop(ev)
    lrs = ev.series("lr")
    peak = float(ev.get("optim.lr", 1e-3))
    mean_lr = float(np.nanmean(lrs)) / peak if np.isfinite(lrs).any() and peak > 0 else float("nan")
    fix = round(min(1.0, 0.1 * epochs), 2)
    return Finding(
        id="optimisation.warmup_too_long", family="optimisation", severity="serious" if share >= WARMUP_SERIOUS else "warning",
        confidence=0.9, impact=min(1.0, 0.5 + share / 2),
        title=f"warm-up takes {share:.0%} of the run ({warm:g} of {epochs} epochs)",
        evidence=f"schedule.warmup_epochs = {warm:g}, train.epochs = {epochs}"
        + (f"; epoch-end LR averaged {mean_lr:.0%} of the peak {peak:.1e}" if finite(mean_lr) else "")
        + (f"; train loss fell {drop:.1%}" if finite(drop) else ""),
        why="during warm-up the LR is below its peak, so most of the budget trains slowly and the decay phase, "
        "where the model settles, is cut short or never happens",
        fix_key="schedule.warmup_epochs", fix_value=fix, numbers={"warmup_share": share, "mean_lr_over_peak": mean_lr},
    )


def schedule_cut(ev: RunEvidence) -> Finding | None:
    """The time budget stopped training before the LR decay reached its floor.

    Not when early stopping explains the end (the best epoch is `patience` or more before the
    last), nor for schedules without a decay (constant, plateau). A run that `schedule.fill_budget`
    stretched past `train.epochs` can be cut after more than the planned epochs: there the last
    LR alone tells.
    """
    budget = ev.get("train.budget_minutes")
    if not budget or str(ev.get("schedule.name", "cosine")) not in ("cosine", "poly") or not ev.epochs:
        return None
    planned = int(ev.get("train.epochs", 1))
    ep = ev.epoch_numbers
    last = int(ep[-1])
    stretched = last + 1 >= planned
    if stretched and not ev.get("schedule.fill_budget", False):
        return None
    patience = int(ev.get("train.early_stopping.patience", 0) or 0)
    best = ev.summary.get("best_epoch")
    if patience > 0 and finite(best) and last - int(best) >= patience:
        return None
    peak = float(ev.get("optim.lr", 1e-3))
    floor = float(ev.get("schedule.min_lr_ratio", 0.01))
    lrs = ev.series("lr")
    if peak <= 0 or not np.isfinite(lrs[-1]):
        return None
    share = float(lrs[-1]) / peak
    if share < floor + CUT_ABOVE_FLOOR:
        return None
    follow = bool(ev.get("schedule.follow_budget", False))
    return Finding(
        id="optimisation.schedule_cut", family="optimisation", severity="warning" if share >= CUT_WARN else "info",
        confidence=0.85, impact=min(0.8, 0.2 + share / 2),
        title=f"the {float(budget):g} min budget stopped training at epoch {last} "
        + (f"of a schedule stretched past the planned {planned}" if stretched else f"of {planned}")
        + f" with the LR at {share:.0%} of its peak",
        evidence=f"train.budget_minutes = {float(budget):g}, train.epochs = {planned}"
        + (" (schedule.fill_budget stretched it)" if stretched else "") + f", {last + 1} epochs trained; last LR "
        f"{float(lrs[-1]):.2e} against the peak {peak:.1e} and the floor {floor:.0%} of it (schedule.min_lr_ratio)",
        why="the low-LR end of the schedule, where the weights settle, never happened: the kept checkpoint comes from a "
        "model still taking large steps",
        fix_key="schedule.follow_budget" if not follow else "train.epochs",
        fix_value=True if not follow else last + 1,
        numbers={"epochs_trained": last + 1, "epochs_planned": planned, "last_lr_over_peak": share, "stretched": float(stretched)},
    )


def diverging(ev: RunEvidence) -> Finding | None:
    """The finite train loss climbs well above its minimum late in the run."""
    tl = ev.loss_trend("train_loss")
    ok = np.isfinite(tl)
    if ok.sum() < 4:
        return None
    t = tl[ok]
    lo = int(np.argmin(t))
    if lo >= len(t) - 2 or t[lo] <= 0:
        return None
    rise = (t[-1] - t[lo]) / abs(t[lo])
    if rise < 0.5:
        return None
    lr = float(ev.get("optim.lr", 1e-3))
    return Finding(
        id="optimisation.diverging", family="optimisation", severity="serious", confidence=min(0.95, 0.6 + rise / 4), impact=0.9,
        title=f"train loss diverged: up {rise:.0%} from its minimum",
        evidence=f"train loss {t[lo]:.4f} at epoch {int(ev.epoch_numbers[ok][lo])}, {t[-1]:.4f} at the end; optim.lr = {lr:.1e}",
        why="a training loss that rises is an optimiser overshooting, not overfitting; later epochs undo the learning",
        fix_key="optim.lr", fix_value=float(f"{lr / 10:.2g}"), numbers={"rise": rise, "lr": lr},
    )


def oscillating(ev: RunEvidence) -> Finding | None:
    """The epoch train loss goes up and down instead of falling: the LR is too high."""
    tl = ev.loss_trend("train_loss")
    t = tl[np.isfinite(tl)]
    if len(t) < 6:
        return None
    d = np.diff(t)
    scale = np.median(np.abs(t)) or 1.0
    rises = d > 0.02 * scale
    share = float(rises.mean())
    if share < 0.4:
        return None
    swing = float(np.abs(d).mean() / scale)
    lr = float(ev.get("optim.lr", 1e-3))
    return Finding(
        id="optimisation.oscillating", family="optimisation", severity="warning", confidence=min(0.85, 0.4 + share / 2), impact=0.6,
        title=f"train loss oscillates: it rose in {share:.0%} of epochs",
        evidence=f"{int(rises.sum())} of {len(d)} epoch-to-epoch changes were rises (> 2% of the loss); mean swing "
        f"{swing:.1%} of the loss; optim.lr = {lr:.1e}",
        why="a loss that keeps bouncing means the steps overshoot: the model hovers instead of converging",
        fix_key="optim.lr", fix_value=float(f"{lr / 3:.2g}"), numbers={"rise_share": share, "swing": swing, "lr": lr},
    )
