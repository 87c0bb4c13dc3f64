"""Metric checks: a soft contract, a threshold-blind metric, a better threshold, soft vs hard Dice."""

from __future__ import annotations

from medseg.doctor.evidence import RunEvidence, finite
from medseg.doctor.finding import Finding

# A threshold this far from the one in use, gaining at least MIN_GAIN Dice, is worth changing.
THRESHOLD_DISTANCE, MIN_GAIN = 0.2, 0.02
# a gain this large matters even when the better threshold is near the one in use
# (seen on BUSI: bce 3 + dice 1 + focal 4 predicted nothing at 0.50, Dice +0.11 at 0.35)
LARGE_GAIN, NEAR_DISTANCE = 0.05, 0.1
# Soft and hard Dice further apart than this say the probabilities are not confident.
SOFT_HARD_GAP = 0.25


def check(ev: RunEvidence) -> list[Finding]:
    return [f for f in (soft_contract(ev), flat_sweep(ev), threshold_far(ev), soft_vs_hard(ev)) if f is not None]


def _sweep(ev: RunEvidence) -> dict | None:
    if ev.eval is not None and ev.eval.sweep is not None:
        return ev.eval.sweep
    return ev.saved_sweep


def _hard_dice(ev: RunEvidence) -> float:
    if ev.eval is not None:
        return float(ev.eval.hard_summary.get("dice", float("nan")))
    c = ev.summary.get("contract") or {}
    return float(ev.summary["dice"]) if c.get("kind", "hard") == "hard" and finite(ev.summary.get("dice")) else float("nan")


def _soft_dice(ev: RunEvidence) -> float:
    if ev.eval is not None:
        return ev.eval.soft_dice
    s = ev.summary.get("soft_dice")
    return float(s) if finite(s) else float("nan")


def soft_contract(ev: RunEvidence) -> Finding | None:
    """Every reported number is a soft Dice although soft metrics are for monitoring only."""
    if ev.contract.get("kind") != "soft":
        return None
    hard, soft = _hard_dice(ev), _soft_dice(ev)
    threshold = float(ev.contract.get("threshold", 0.5))
    claims_hard = "hard@" in ev.report_text or "hard dice" in ev.report_text.lower()
    evidence = f"eval.contract.kind = soft (summary.json: '{ev.summary.get('contract_text', 'soft')}'); the best checkpoint was picked by soft val_{ev.get('train.monitor', 'dice')}"
    if finite(hard) and finite(soft):
        evidence += f"; on the same predictions soft Dice {soft:.3f}, hard Dice at {threshold:.2f} {hard:.3f}"
    if claims_hard:
        evidence += "; report.md presents the numbers as hard"
    return Finding(
        id="metrics.soft_contract", family="metrics", severity="serious", confidence=0.99 if claims_hard else 0.95, impact=0.9,
        title="the metric contract is soft: reported Dice is not the Dice of a binary mask",
        evidence=evidence,
        why="soft Dice scores probabilities, not the thresholded masks a user or a benchmark evaluates; it is not "
        "comparable with published (hard) numbers and rewards hedged, unconfident outputs",
        fix_key="eval.contract.kind", fix_value="hard",
        numbers={"soft_dice": soft, "hard_dice": hard, "threshold": threshold, "report_claims_hard": claims_hard},
    )


def _predicts_something(ev: RunEvidence, sw: dict) -> bool:
    """The flat curve is not just 'nothing predicted at any threshold' (that is a model problem)."""
    if ev.eval is not None:
        return ev.eval.prob_max >= min(r["threshold"] for r in sw["rows"])
    return any(finite(r.get("recall")) and r["recall"] > 0 for r in sw.get("rows", []))


def flat_sweep(ev: RunEvidence) -> Finding | None:
    """The validation metric does not change with the threshold: the metric-thresholding bug symptom."""
    sw = _sweep(ev)
    if not sw or not sw.get("flat") or not sw.get("rows") or not _predicts_something(ev, sw):
        return None
    value = sw.get("best_value")
    mid = 0.0
    if ev.eval is not None:
        mid = ev.eval.mid_probability_share
    return Finding(
        id="metrics.threshold_blind", family="metrics", severity="serious", confidence=0.85, impact=0.85,
        title=f"validation Dice is {value:.4f} at every threshold from {sw['rows'][0]['threshold']:.2f} to {sw['rows'][-1]['threshold']:.2f}",
        evidence=f"threshold sweep of {len(sw['rows'])} thresholds is flat (spread < 1e-6); share of pixels with "
        f"probability strictly between 0.01 and 0.99: {mid:.2%}",
        why="a real probability map gives a different mask at each threshold: a flat curve means the predictions were "
        "binarised before scoring or the metric thresholds internally, so the number does not measure what it claims",
        fix_key="eval.contract.kind", fix_value="hard", numbers={"value": value, "mid_probability_share": mid},
    )


def _value_at(sw: dict, threshold: float) -> float:
    rows = sw.get("rows") or []
    if not rows:
        return float("nan")
    r = min(rows, key=lambda r: abs(r["threshold"] - threshold))
    return float(r.get(sw.get("metric", "dice"), float("nan")))


def threshold_far(ev: RunEvidence) -> Finding | None:
    """The Dice-maximising validation threshold is far from the contract's and clearly better."""
    sw = _sweep(ev)
    if not sw or sw.get("flat") or not finite(sw.get("best_threshold")):
        return None
    used = float(ev.contract.get("threshold", 0.5))
    best = float(sw["best_threshold"])
    gain = float(sw["best_value"]) - _value_at(sw, used)
    if not finite(gain) or gain < MIN_GAIN:
        return None
    far = abs(best - used) >= THRESHOLD_DISTANCE - 1e-9
    near_but_large = abs(best - used) >= NEAR_DISTANCE - 1e-9 and gain >= LARGE_GAIN
    if not (far or near_but_large):
        return None
    n = len(ev.eval.val_ids) if ev.eval is not None else int(ev.summary.get("n_cases", 0) or 0)
    return Finding(
        id="metrics.threshold_far", family="metrics", severity="warning",
        confidence=0.5 + 0.4 * min(1.0, n / 50), impact=min(0.9, 3 * gain),
        title=f"threshold {best:.2f} gives {gain:+.3f} Dice over the {used:.2f} in use",
        evidence=f"validation sweep: Dice {_value_at(sw, used):.3f} at {used:.2f}, {sw['best_value']:.3f} at {best:.2f} ({n} cases)",
        why="the network's probabilities are shifted (class imbalance, loss weights): the default 0.5 cuts lesions "
        "short or adds false positives; a threshold tuned on validation is optimistic, confirm it on test data",
        fix_key="eval.contract.threshold", fix_value=round(best, 2), numbers={"best_threshold": best, "used": used, "gain": gain, "n_cases": n},
    )


def soft_vs_hard(ev: RunEvidence) -> Finding | None:
    """Soft and hard Dice of the same predictions far apart: unconfident (or overconfident) probabilities."""
    if ev.contract.get("kind") == "soft":
        return None  # soft_contract says it
    hard, soft = _hard_dice(ev), _soft_dice(ev)
    if not (finite(hard) and finite(soft)) or abs(hard - soft) < SOFT_HARD_GAP:
        return None
    loss = ev.get("loss") or {}
    has_region_term = any(k in loss for k in ("dice", "tversky", "focal_tversky", "lovasz"))
    fix_key, fix_value = ("loss.dice", 1.0) if not has_region_term else ev.train_longer(int(ev.get("train.epochs", 30)) * 2)
    return Finding(
        id="metrics.soft_hard_gap", family="metrics", severity="info", confidence=0.8, impact=min(0.5, abs(hard - soft)),
        title=f"soft Dice {soft:.3f} and hard Dice {hard:.3f} disagree",
        evidence=f"same validation predictions: hard Dice (threshold {ev.contract.get('threshold', 0.5):.2f}) {hard:.3f}, soft Dice {soft:.3f}",
        why="the probabilities are far from 0/1 around the lesions: hard metrics are fine to report, but the probability "
        "maps are not calibrated and soft numbers (or losses) tell a different story",
        fix_key=fix_key, fix_value=fix_value, numbers={"hard_dice": hard, "soft_dice": soft},
    )
