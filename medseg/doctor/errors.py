"""Error analysis: where the Dice is lost (false positives on empty images, missed lesions, outlines),
and whether recall or precision is the weak side given the loss weights."""

from __future__ import annotations

import math

import numpy as np

from medseg.doctor.data import network_stride, round_to_stride
from medseg.doctor.evidence import RunEvidence, finite
from medseg.doctor.finding import Finding
from medseg.losses import SPECIAL_KEYS, loss_traits
from medseg.training import SELECT_MIN_VAL_CASES

# A loss component worth reporting costs at least this much mean Dice and this share of the deficit.
MIN_LOST_DICE, MIN_DEFICIT_SHARE = 0.03, 0.25
# Misses making up this share of the wrong pixels (or false positives, 1 - it) make that side "the weak one".
MISS_DOMINANT = 0.7
# Above this Dice the breakdown is informational only.
GOOD_DICE = 0.85


# A Tversky-type term weighing false positives this many times more than misses is set the wrong way round
# for small targets, whatever this run's errors show.
REVERSED_RATIO = 2.0

# below this share of lesions found the misses are a collapse, not a size problem
COLLAPSE_FOUND_SHARE = 0.2
# false positives on empty images this large against the median lesion are regions, not specks
LARGE_FP_SHARE_OF_LESION = 0.25


def check(ev: RunEvidence) -> list[Finding]:
    rows, summary = _rows_and_summary(ev)
    out: list[Finding] = []
    if rows:
        out.extend(dice_loss_findings(ev, rows, summary))
    f = recall_precision(ev, summary)
    if f is not None:
        out.append(f)
    if f is None or f.id != "errors.recall_loss_weights":
        f = loss_weights_reversed(ev, summary)
        if f is not None:
            out.append(f)
    return out


def _rows_and_summary(ev: RunEvidence) -> tuple[list[dict], dict]:
    """Hard per-case rows and their summary (from the re-run, else from the run's files if hard)."""
    if ev.eval is not None:
        return ev.eval.hard_rows, ev.eval.hard_summary
    if ev.contract.get("kind") == "soft":
        return [], {}
    return ev.cases, ev.summary


def _flag(v) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "1.0")
    return bool(v) and not (isinstance(v, float) and math.isnan(v))


def dice_breakdown(rows: list[dict]) -> dict:
    """Split the per-image Dice deficit, sum over cases of (1 - Dice), into where it is lost.

    fp_on_empty: empty-truth images with a prediction (Dice 0 there); missed: the share of each
    non-empty image's deficit equal to its share of truth lesions not found; outline: the rest
    of the non-empty images' deficit (found lesions segmented imperfectly, extra components).
    Each is also given as mean-Dice points (divided by the number of cases with a Dice).
    """
    dice = np.array([float(r["dice"]) if finite(r.get("dice")) else np.nan for r in rows])
    keep = np.isfinite(dice)
    n = int(keep.sum())
    truth_empty = np.array([_flag(r.get("truth_empty")) for r in rows])
    pred_empty = np.array([_flag(r.get("pred_empty")) for r in rows])
    n_truth = np.array([float(r.get("n_lesions_truth") or 0) for r in rows])
    n_found = np.array([float(r.get("n_lesions_found") or 0) for r in rows])
    lost = np.where(keep, 1.0 - np.nan_to_num(dice), 0.0)
    missed_share = np.where(n_truth > 0, (n_truth - n_found) / np.maximum(n_truth, 1), 0.0)
    nonempty = keep & ~truth_empty
    parts = {
        "fp_on_empty": float(lost[keep & truth_empty & ~pred_empty].sum()),
        "missed": float((lost * missed_share)[nonempty].sum()),
        "outline": float((lost * (1 - missed_share))[nonempty].sum()),
    }
    total = float(lost.sum())
    # how big the false positives on empty images are, against the lesions: specks a
    # component-size rule removes, or lesion-sized regions it cannot
    fp_px = np.array([float(r["fp"]) if finite(r.get("fp")) else np.nan for r in rows])
    area = np.array([float(r["tp"]) + float(r["fn"]) if finite(r.get("tp")) and finite(r.get("fn")) else np.nan for r in rows])
    fp_on_empty = fp_px[keep & truth_empty & ~pred_empty]
    lesion_area = area[keep & ~truth_empty]
    return {
        "n_cases": n,
        "deficit": total,
        "dice": float(np.nanmean(dice)) if n else float("nan"),
        **{f"lost_{k}": (v / n if n else float("nan")) for k, v in parts.items()},
        **{f"share_{k}": (v / total if total > 0 else 0.0) for k, v in parts.items()},
        "n_empty_truth": int((keep & truth_empty).sum()),
        "n_fp_on_empty": int((keep & truth_empty & ~pred_empty).sum()),
        "n_lesions_truth": int(n_truth.sum()),
        "n_lesions_found": int(n_found.sum()),
        "fp_px_on_empty_median": float(np.nanmedian(fp_on_empty)) if np.isfinite(fp_on_empty).any() else float("nan"),
        "lesion_px_median": float(np.nanmedian(lesion_area)) if np.isfinite(lesion_area).any() else float("nan"),
    }


def _bins(summary: dict) -> list[tuple[str, int, float]]:
    out = []
    for k, v in summary.items():
        if k.startswith("n_lesions_truth_") and finite(v) and v > 0:
            name = k[len("n_lesions_truth_"):]
            out.append((name, int(v), float(summary.get(f"lesion_recall_{name}", float("nan")))))
    return out


def _input_scale(ev: RunEvidence) -> float:
    fp = ev.fingerprint
    size = fp.get("input_size")
    h, w = (fp.get("orig_height") or {}).get("q50"), (fp.get("orig_width") or {}).get("q50")
    if not size or not finite(h) or not finite(w):
        return 1.0
    return min(size[0] / h, size[1] / w)


def _larger_input(ev: RunEvidence) -> list[int]:
    size = ev.fingerprint.get("input_size") or list(ev.get("data.input_size") or [256, 256])
    stride = network_stride(ev.get("model") or {})
    return [round_to_stride(2 * s, stride) for s in size]


def _pixel_terms(loss: dict) -> list[str]:
    """Terms that classify pixels one by one (BCE, focal), by their registered traits."""
    return [k for k in loss if k not in SPECIAL_KEYS and loss_traits(k).pixelwise]


def _region_terms(loss: dict) -> list[str]:
    """Overlap terms (Dice, Tversky, Lovász), by their registered traits."""
    return [k for k in loss if k not in SPECIAL_KEYS and not loss_traits(k).pixelwise]


def dice_loss_findings(ev: RunEvidence, rows: list[dict], summary: dict) -> list[Finding]:
    b = dice_breakdown(rows)
    if b["n_cases"] == 0 or b["deficit"] <= 0:
        return []
    severity = "info" if finite(b["dice"]) and b["dice"] >= GOOD_DICE else "warning"
    used = float(ev.contract.get("threshold", 0.5))
    loss = ev.get("loss") or {}
    numbers = {k: v for k, v in b.items()}
    out = []
    if b["lost_fp_on_empty"] >= MIN_LOST_DICE and b["share_fp_on_empty"] >= MIN_DEFICIT_SHARE:
        sw = ev.eval.sweep if ev.eval is not None else ev.saved_sweep
        best = sw.get("best_threshold") if sw else None
        fp_med, les_med = b["fp_px_on_empty_median"], b["lesion_px_median"]
        large = finite(fp_med) and finite(les_med) and les_med > 0 and fp_med >= LARGE_FP_SHARE_OF_LESION * les_med
        why = ("each empty image with any predicted pixel scores Dice 0 under this contract: stray specks cost as "
               "much as a missed lesion")
        if large:
            why = (f"the predictions on empty images are lesion-sized (median {fp_med:.0f} px against {les_med:.0f} px per "
                   "lesion image), not specks: no threshold or component-size rule removes them without removing lesions; "
                   "the network has not learned what an image without a lesion looks like")
        if ev.get("postprocess.tune", True) is False and not large and not 0 < ev.val_cases < SELECT_MIN_VAL_CASES:
            # the tuned threshold + small-component removal is medseg's own control for specks (not on a handful of
            # validation cases: there a tuned rule is chance, and the plan turns tuning off)
            fix_key, fix_value = "postprocess.tune", True
        elif large and ev.get("model.name") in ("unet", "basicunet"):
            # a deeper encoder sees more context per pixel (BENCHMARKS.md §5: cross-validation on BUSI)
            fix_key, fix_value = "model.name", "flexunet-resnet34"
        elif finite(best) and best > used:
            fix_key, fix_value = "eval.contract.threshold", round(float(best), 2)
        elif not _pixel_terms(loss):
            fix_key, fix_value = "loss.bce", 1.0
        elif finite(ev.get("sampler.positive_share")) and ev.get("sampler.positive_share") > 0.5:
            fix_key, fix_value = "sampler.positive_share", 0.33
        else:
            fix_key, fix_value = "eval.contract.threshold", round(min(0.9, used + 0.2), 2)
        out.append(Finding(
            id="errors.fp_on_empty", family="errors", severity=severity, confidence=0.85,
            impact=min(0.6, 2 * b["lost_fp_on_empty"]),
            title=f"false positives on {b['n_fp_on_empty']} of {b['n_empty_truth']} empty images cost {b['lost_fp_on_empty']:.3f} Dice",
            evidence=f"{b['share_fp_on_empty']:.0%} of the Dice deficit (1 - {b['dice']:.3f}) comes from predictions on "
            f"images without a lesion (fp_rate_empty {b['n_fp_on_empty'] / max(b['n_empty_truth'], 1):.2f})"
            + (f"; median predicted area there {fp_med:.0f} px, median lesion {les_med:.0f} px" if finite(fp_med) and finite(les_med) else ""),
            why=why,
            fix_key=fix_key, fix_value=fix_value, numbers=numbers,
        ))
    if b["lost_missed"] >= MIN_LOST_DICE and b["share_missed"] >= MIN_DEFICIT_SHARE:
        bins = _bins(summary)
        worst = min(bins, key=lambda t: t[2] if finite(t[2]) else 2.0) if bins else None
        bin_text = ", ".join(f"{name} {rec * n:.0f}/{n}" for name, n, rec in bins if finite(rec))
        found_share = b["n_lesions_found"] / max(b["n_lesions_truth"], 1)
        why = "a missed lesion scores 0 on its image however well the others are outlined; the smallest lesions are missed first"
        if found_share < COLLAPSE_FOUND_SHARE:
            # nearly nothing found in any size bin: the probabilities stay below the threshold
            # (a collapse), which no input size fixes; the loss weights are the usual cause
            why = ("almost every lesion is missed whatever its size: the network's probabilities stay below the "
                   "threshold, a collapse that points at loss weights (focal or BCE outweighing the region term) "
                   "rather than at resolution")
            sw = ev.eval.sweep if ev.eval is not None else ev.saved_sweep
            best = sw.get("best_threshold") if sw else None
            if _pixel_terms(loss):
                fix_key, fix_value = "loss", {"bce": 1.0, "dice": 1.0}
            elif finite(best) and best < used:
                fix_key, fix_value = "eval.contract.threshold", round(float(best), 2)
            else:
                fix_key, fix_value = "loss.dice", 1.0
        elif worst and worst[0] in ("small", "size0") and _input_scale(ev) < 0.999:
            fix_key, fix_value = "data.input_size", _larger_input(ev)
        else:
            fix_key, fix_value = "loss.focal_tversky", {"weight": 1.0, "fp_weight": 0.3, "fn_weight": 0.7}
        out.append(Finding(
            id="errors.missed_lesions", family="errors", severity=severity, confidence=0.8,
            impact=min(0.6, 2 * b["lost_missed"]),
            title=f"missed lesions cost {b['lost_missed']:.3f} Dice ({b['n_lesions_truth'] - b['n_lesions_found']} of {b['n_lesions_truth']} not found)",
            evidence=f"{b['share_missed']:.0%} of the Dice deficit is lesions with no overlapping prediction; found by size: {bin_text or 'n/a'}",
            why=why,
            fix_key=fix_key, fix_value=fix_value, numbers={**numbers, "bins": [list(t) for t in bins], "found_share": found_share},
        ))
    if b["lost_outline"] >= MIN_LOST_DICE and b["share_outline"] >= 0.4:
        lesion = ev.eval.found_lesion_dice if ev.eval is not None else []
        lesion_text = f"; Dice of each found lesion: median {np.median(lesion):.3f} over {len(lesion)} lesions" if lesion else ""
        if _input_scale(ev) < 0.999:
            fix_key, fix_value = "data.input_size", _larger_input(ev)
        elif not _region_terms(loss):
            fix_key, fix_value = "loss.dice", 1.0
        else:
            fix_key, fix_value = ev.train_longer(int(ev.get("train.epochs", 30)) * 2)
        out.append(Finding(
            id="errors.poor_outline", family="errors", severity=severity, confidence=0.75,
            impact=min(0.5, 1.5 * b["lost_outline"]),
            title=f"found lesions are outlined imprecisely: boundary error costs {b['lost_outline']:.3f} Dice",
            evidence=f"{b['share_outline']:.0%} of the Dice deficit is on images whose lesions were found; "
            f"Dice on non-empty images {summary.get('dice_nonempty', float('nan')):.3f}{lesion_text}",
            why="the lesions are detected but their extent is wrong (too large, too small, ragged), which a region "
            "loss or more input resolution addresses",
            fix_key=fix_key, fix_value=fix_value, numbers={**numbers, "found_lesion_dice_median": float(np.median(lesion)) if lesion else float("nan")},
        ))
    return out


def precision_favouring_terms(loss: dict) -> list[tuple[str, dict, str]]:
    """Loss terms configured to penalise false positives more than false negatives: (name, params, text).

    Each loss's registered traits say which of its parameters do that (Tversky: fp_weight >
    fn_weight; BCE: pos_weight < 1; focal: alpha < 0.5).
    """
    out = []
    for name, spec in loss.items():
        if not isinstance(spec, dict):
            continue
        bias = loss_traits(name).precision_bias
        text = bias(name, spec) if bias is not None else None
        if text:
            out.append((name, spec, text))
    return out


def _recall_fix(name: str, spec: dict) -> dict:
    fix = loss_traits(name).recall_fix
    return fix(spec) if fix is not None else dict(spec)


def recall_precision(ev: RunEvidence, summary: dict) -> Finding | None:
    """Misses (or false positives) make up most of the error, and loss weights push that way."""
    tp, fp, fn = (summary.get(k) for k in ("tp", "fp", "fn"))
    if not all(finite(x) for x in (tp, fp, fn)) or tp + fn <= 0 or fp + fn <= 0:
        return None
    recall = tp / (tp + fn)
    precision = tp / (tp + fp) if tp + fp > 0 else float("nan")
    # Dice = 2TP / (2TP + FP + FN): each error pixel costs the same, so the side with most of them is the weak one
    denom = 2 * tp + fp + fn
    lost_fn, lost_fp = fn / denom, fp / denom
    miss_share = fn / (fp + fn)
    loss = ev.get("loss") or {}
    numbers = {"recall": recall, "precision": precision, "tp": tp, "fp": fp, "fn": fn, "miss_share": miss_share,
               "dice_lost_to_fn": lost_fn, "dice_lost_to_fp": lost_fp}
    precision_text = f"{precision:.3f}" if finite(precision) else "n/a (nothing predicted)"
    evidence = (f"pooled validation recall {recall:.3f}, precision {precision_text}: misses are {miss_share:.0%} of the "
                f"{fp + fn:.0f} wrong pixels and cost {lost_fn:.3f} Dice (false positives {lost_fp:.3f})")
    if miss_share >= MISS_DOMINANT and lost_fn >= MIN_LOST_DICE:
        bad = precision_favouring_terms(loss)
        if bad:
            name, spec, _ = bad[0]
            return Finding(
                id="errors.recall_loss_weights", family="errors", severity="serious", confidence=0.9, impact=0.95,
                title=f"recall is the problem ({recall:.2f}, precision {precision_text}) and the loss favours precision",
                evidence=f"{evidence}; {'; '.join(t for _, _, t in bad)}",
                why="the loss is told that a false positive costs more than a missed lesion pixel, so the network "
                "under-segments; for tiny targets the usual choice is the reverse (fn_weight 0.7, fp_weight 0.3)",
                fix_key=f"loss.{name}", fix_value=_recall_fix(name, spec), numbers=numbers,
            )
        if lost_fn < 2 * MIN_LOST_DICE:
            return None
        return Finding(
            id="errors.low_recall", family="errors", severity="warning", confidence=0.6, impact=min(0.5, 2 * lost_fn),
            title=f"recall {recall:.2f} is the weak side (precision {precision_text})",
            evidence=evidence,
            why="the network under-segments: lesion pixels are missed more often than background is mislabelled",
            fix_key="loss.focal_tversky", fix_value={"weight": 1.0, "fp_weight": 0.3, "fn_weight": 0.7}, numbers=numbers,
        )
    if miss_share <= 1 - MISS_DOMINANT and lost_fp >= 2 * MIN_LOST_DICE:
        for name, spec in loss.items():
            weights = loss_traits(name).fp_fn(spec) if isinstance(spec, dict) else None
            if weights is None:
                continue
            f_p, f_n = weights
            if finite(f_p) and finite(f_n) and f_n >= 3 * max(f_p, 1e-9):
                return Finding(
                    id="errors.precision_loss_weights", family="errors", severity="warning", confidence=0.6, impact=min(0.5, 2 * lost_fp),
                    title=f"precision is the weak side ({precision:.2f} vs recall {recall:.2f}) and loss.{name} weighs misses {f_n / max(f_p, 1e-9):.0f}x more",
                    evidence=f"{evidence}; loss.{name} fp_weight {f_p:g}, fn_weight {f_n:g}",
                    why="the loss makes over-segmentation cheap, so the network paints beyond the lesions",
                    fix_key=f"loss.{name}", fix_value={**{k: v for k, v in spec.items() if k not in ("alpha", "beta")}, "fp_weight": 0.5, "fn_weight": 0.5},
                    numbers=numbers,
                )
    return None


def loss_weights_reversed(ev: RunEvidence, summary: dict) -> Finding | None:
    """A Tversky-type loss term configured to weigh false positives well above misses.

    A config check: it fires whether or not recall is measurably the weak side (when it is,
    `errors.recall_loss_weights` says so with the numbers, and this one stays silent).
    """
    loss = ev.get("loss") or {}
    for name, spec in loss.items():
        weights = loss_traits(name).fp_fn(spec) if isinstance(spec, dict) else None
        if weights is None:
            continue
        f_p, f_n = weights
        if not (finite(f_p) and finite(f_n)) or f_p < REVERSED_RATIO * max(f_n, 1e-9):
            continue
        ratio = f_p / max(f_n, 1e-9)
        tp, fp, fn = (summary.get(k) for k in ("tp", "fp", "fn"))
        measured = ""
        if all(finite(x) for x in (tp, fp, fn)) and tp + fn > 0 and tp + fp > 0:
            measured = f"; pooled validation recall {tp / (tp + fn):.3f}, precision {tp / (tp + fp):.3f}"
        aliased = [k for k in ("alpha", "beta") if k in spec]
        return Finding(
            id="errors.loss_weights_reversed", family="errors", severity="warning", confidence=0.8,
            impact=min(0.6, 0.2 + 0.05 * ratio),
            title=f"loss.{name} weighs false positives {ratio:.0f}x more than missed lesion pixels",
            evidence=f"loss.{name} fp_weight {f_p:g}, fn_weight {f_n:g}"
            + (f" (given as {' and '.join(aliased)}, read as in MONAI: alpha = false positives)" if aliased else "") + measured,
            why="for small targets the Tversky family is used the other way round (fp 0.3, fn 0.7; Salehi et al. 2017), "
            "so that a missed lesion, which costs its whole case, is the expensive error; libraries disagree on which "
            "of alpha and beta weighs which, so weights copied from elsewhere are easily reversed",
            fix_key=f"loss.{name}", fix_value=_recall_fix(name, spec),
            numbers={"fp_weight": f_p, "fn_weight": f_n, "ratio": ratio},
        )
    return None
