"""Data checks: mask values, empty share, lesions too small for the input size, leakage, split shift."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from medseg.doctor.evidence import THUMB_SIDE, RunEvidence, finite
from medseg.doctor.finding import Finding
from medseg.errors import MedsegError
from medseg.losses import SPECIAL_KEYS, loss_traits
from medseg.models import get_model_spec

# Lesions smaller than this many pixels at network input are hard to resolve: a 4x4 patch is
# the footprint of one pixel after two 2x downsamplings.
MIN_LESION_PX = 16.0
# Images shrunk to this share of their side or less lose lesion detail a larger input would keep.
SHRUNK_A_LOT = 0.25
# Validation thumbnails compared with every training thumbnail per block.
DUPLICATE_BLOCK = 256
# Thumbnail correlation above which two images count as the same case.
DUPLICATE_CORRELATION = 0.99
# Robust shift (in train spreads) of a per-image intensity statistic between splits worth reporting.
SHIFT_WARN = 3.0


def check(ev: RunEvidence) -> list[Finding]:
    out: list[Finding] = []
    for fn in (mask_values, empty_share, tiny_lesions, split_overlap, duplicates, split_intensity):
        f = fn(ev)
        if f is not None:
            out.append(f)
    return out


def network_stride(model: dict) -> int:
    """Total downsampling factor of the configured network (its registry spec; 32 for a model no longer registered)."""
    try:
        return get_model_spec(str(model.get("name", "unet"))).output_stride(model.get("channels"))
    except MedsegError:
        return 32


def round_to_stride(side: float, stride: int) -> int:
    """The smallest multiple of the stride at or above `side`: a size the config accepts."""
    return int(stride * math.ceil(side / stride))


def mask_values(ev: RunEvidence) -> Finding | None:
    """Masks that are not 0/1: harmless 0/255 storage, merged labels, blurred edges, or 0/255 reaching the loss."""
    fp = ev.fingerprint
    raw = fp.get("raw_mask_values")
    if raw is None:
        return None
    nonzero = [v for v in raw if v != 0]
    batch_px = ev.series("batch_pos_pixel_share_mean")
    batch_px_max = float(np.nanmax(batch_px)) if np.isfinite(batch_px).any() else float("nan")
    loss = ev.series("train_loss")
    loss_min = float(np.nanmin(loss[np.isfinite(loss)])) if np.isfinite(loss).any() else float("nan")
    terms = set((ev.get("loss") or {}).keys()) - set(SPECIAL_KEYS)
    signals = []
    # a 0/1 mask's mean is a share of pixels, never above 1
    if finite(batch_px_max) and batch_px_max > 1.0 + 1e-6:
        signals.append(f"mean mask value in training batches {batch_px_max:.3g} (a 0/1 mask's mean is a pixel share ≤ 1)")
    # every term is >= 0 for 0/1 targets (its registered traits say so): a negative loss means the targets were not
    if finite(loss_min) and loss_min < -1e-6 and terms and all(loss_traits(t).nonnegative for t in terms):
        signals.append(f"lowest epoch train loss {loss_min:.3g} (negative: impossible for {', '.join(sorted(terms))} with 0/1 targets)")
    if ev.eval is not None and max(ev.eval.mask_values, default=0) > 1:
        signals.append(f"the loader produced mask values {ev.eval.mask_values[:6]}")
    numbers = {"raw_mask_values": raw[:20], "batch_pos_pixel_share_max": batch_px_max, "train_loss_min": loss_min}
    shown = ", ".join(str(v) for v in raw[:8]) + (", ..." if len(raw) > 8 else "")
    if signals:
        return Finding(
            id="data.mask_values_in_loss", family="data", severity="serious",
            confidence=min(0.99, 0.85 + 0.07 * len(signals)), impact=1.0,
            title="masks reach the loss with values above 1, not as 0/1",
            evidence=f"raw mask values on disk {shown}; " + "; ".join(signals),
            why="the loss and the sampler expect targets in {0, 1}: a target of 255 makes BCE and Dice meaningless "
            "(the loss can go negative or explode) and the network learns nothing useful",
            fix_key="data.masks_dir", fix_value="masks re-saved as 0/1, or binarise (mask > 0) before the loss",
            numbers=numbers,
        )
    if not nonzero or set(raw) <= {0, 1}:
        return None
    if len(nonzero) == 1:
        return Finding(
            id="data.mask_values_scaled", family="data", severity="info", confidence=0.9, impact=0.05,
            title=f"masks are stored as 0/{nonzero[0]}: read as binary (any value > 0 is foreground)",
            evidence=f"raw mask values {shown}; training batches' mean mask value ≤ 1 ({batch_px_max:.3g}), so the loss saw 0/1",
            why="nothing is wrong if the non-zero value marks the target; a pipeline outside medseg that expects 0/1 would not be",
            fix_key=None, fix_value="nothing to change", numbers=numbers,
        )
    integer = all(float(v).is_integer() for v in nonzero)
    if integer and len(nonzero) <= 4:
        return Finding(
            id="data.mask_labels_merged", family="data", severity="warning", confidence=0.7, impact=0.5,
            title=f"masks hold {len(nonzero)} labels ({shown}); all are merged into one foreground",
            evidence=f"raw mask values {shown}",
            why="if only one label is the target, the others are trained and scored as if they were lesions",
            fix_key="data.masks_dir", fix_value="masks holding only the target label", numbers=numbers,
        )
    return Finding(
        id="data.mask_values_blurred", family="data", severity="serious", confidence=0.8, impact=0.7,
        title=f"masks hold {len(raw)} distinct values: lossy (JPEG) or anti-aliased edges",
        evidence=f"raw mask values {shown}",
        why="every value > 0 becomes foreground, so each lesion grows by its blurred rim and JPEG noise "
        "can add foreground specks: the truth itself is wrong at the boundary",
        fix_key="data.masks_dir", fix_value="lossless (PNG) masks with exactly two values", numbers=numbers,
    )


def empty_share(ev: RunEvidence) -> Finding | None:
    """All images empty (nothing to learn), or almost all (left to the sampling checks)."""
    share = ev.fingerprint.get("empty_image_fraction")
    if not finite(share):
        return None
    n = ev.fingerprint.get("n_images")
    if share >= 1.0:
        return Finding(
            id="data.no_foreground", family="data", severity="serious", confidence=0.99, impact=1.0,
            title="no image has any foreground",
            evidence=f"empty-mask share 100% of {n} images",
            why="with no lesion anywhere the model can only learn to predict nothing",
            fix_key="data.masks_dir", fix_value="the folder that holds the lesion masks", numbers={"empty_image_fraction": share},
        )
    if share >= 0.9:
        target = ev.get("sampler.positive_share")
        rebalanced = (finite(target) and target >= 0.3) or bool(ev.get("sampler.schedule"))
        return Finding(
            id="data.mostly_empty", family="data", severity="info", confidence=0.9, impact=0.1 if rebalanced else 0.3,
            title=f"{share:.0%} of images have an empty mask",
            evidence=f"empty-mask share {share:.1%} of {n} images; sampler.positive_share = {target}",
            why="without rebalancing most batches hold no lesion and 'predict nothing' is a strong local optimum",
            fix_key="sampler.positive_share", fix_value=target if rebalanced else 0.5, numbers={"empty_image_fraction": share},
        )
    return None


def _share_below(quantiles: dict, x: float) -> float:
    """Share of values below x, interpolated from a fingerprint quantile dict (q00..q100)."""
    pts = sorted((int(k[1:]) / 100.0, v) for k, v in quantiles.items() if k.startswith("q") and k[1:].isdigit() and finite(v))
    if not pts:
        return float("nan")
    levels = np.array([p for p, _ in pts])
    values = np.maximum.accumulate(np.array([v for _, v in pts]))
    if x <= values[0]:
        return 0.0
    if x > values[-1]:
        return 1.0
    if np.all(np.diff(values) > 0):
        return float(np.interp(x, values, levels))
    # several levels share one value (ties): the highest level whose value is below x
    return float(levels[values < x].max())


def input_scale(fp: dict, input_size: list) -> float:
    """Input pixels per original pixel (< 1: images are shrunk), from the fingerprint."""
    sc = fp.get("input_scale_median")
    if sc and all(finite(x) for x in sc):
        return float(min(sc))
    orig_h = (fp.get("orig_height") or {}).get("q50")
    orig_w = (fp.get("orig_width") or {}).get("q50")
    return min(input_size[0] / orig_h, input_size[1] / orig_w) if finite(orig_h) and finite(orig_w) else 1.0


def tiny_lesions(ev: RunEvidence) -> Finding | None:
    """Lesions so small at network input that the network can barely resolve them."""
    fp = ev.fingerprint
    q = fp.get("lesion_area_px_at_input") or {}
    if not q or not finite(q.get("q50")):
        return None
    below = _share_below(q, MIN_LESION_PX)
    if not finite(below) or below < 0.05:
        return None
    input_size = fp.get("input_size") or list(ev.get("data.input_size") or [256, 256])
    scale = input_scale(fp, input_size)
    stride = network_stride(ev.get("model") or {})
    median = q["q50"]
    # measured at original resolution when the fingerprint re-read the masks, else scaled back
    at_orig = (fp.get("lesion_area_px_original") or {}).get("q50")
    at_orig = at_orig if finite(at_orig) else median / (scale * scale)
    numbers = {
        "share_below_px": below, "min_lesion_px": MIN_LESION_PX, "median_area_px": median, "q05_area_px": q.get("q05"),
        "input_scale": scale, "network_stride": stride, "median_area_px_original": at_orig,
    }
    evidence = (
        f"{below:.0%} of {fp.get('n_lesions', '?')} lesions cover < {MIN_LESION_PX:g} px at the {input_size[0]}x{input_size[1]} input "
        f"(median {median:.1f} px, 5% quantile {q.get('q05', float('nan')):.1f} px); the network downsamples {stride}x, "
        f"so a lesion under {stride * stride} px is below one pixel at its deepest level"
    )
    if scale < 0.999:
        evidence += f"; images are shrunk {1 / scale:.1f}x to fit the input (median lesion {at_orig:.0f} px at original size)"
        # twice the input side, capped at the original size; multiples of the stride as the config requires
        new = [min(round_to_stride(2 * s, stride), round_to_stride(s / scale, stride)) for s in input_size]
        fix_key, fix_value = "data.input_size", new
    else:
        fix_key = "loss"
        fix_value = {"bce": 1.0, "focal_tversky": {"weight": 1.0, "fp_weight": 0.3, "fn_weight": 0.7}}
    # the median lesion smaller than one cell of the deepest feature map, in images shrunk a lot to fit
    below_cell = scale <= SHRUNK_A_LOT and median < stride * stride
    # serious when most lesions are below the limit and a larger input (the images were shrunk) can fix it
    if median < MIN_LESION_PX and scale < 0.999:
        severity = "serious"
    else:
        severity = "warning" if below >= 0.25 or below_cell else "info"
    title = f"{below:.0%} of lesions are smaller than {MIN_LESION_PX:g} px at network input"
    if below_cell and severity == "warning" and below < 0.25:
        title = (f"images are shrunk {1 / scale:.0f}x: the median lesion ({median:.0f} px at input) is smaller than one "
                 f"{stride}x{stride} cell of the network's deepest level")
    return Finding(
        id="data.tiny_lesions", family="data", severity=severity, confidence=0.85, impact=min(1.0, 0.3 + below),
        title=title,
        evidence=evidence,
        why="a lesion of a few pixels is erased by the encoder's pooling and costs a whole case's Dice when missed; "
        "more input pixels per lesion is the surest remedy when the originals are larger",
        fix_key=fix_key, fix_value=fix_value, numbers=numbers,
    )


def split_overlap(ev: RunEvidence) -> Finding | None:
    """The same case id listed in two parts of split.json."""
    parts = {k: set(v) for k, v in ev.split.items() if k in ("train", "val", "test") and isinstance(v, list)}
    shared = sorted(parts.get("train", set()) & (parts.get("val", set()) | parts.get("test", set())))
    if not shared:
        return None
    return Finding(
        id="data.split_overlap", family="data", severity="serious", confidence=1.0, impact=1.0,
        title=f"{len(shared)} case id(s) are in both training and validation/test",
        evidence=f"split.json lists {', '.join(shared[:5])}{' ...' if len(shared) > 5 else ''} in train and in val/test",
        why="validation scores on cases the model trained on measure memory, not generalisation",
        fix_key="split.mode", fix_value="holdout", numbers={"n_shared": len(shared)},
    )


def duplicate_pairs(thumbs_val: np.ndarray, thumbs_train: np.ndarray, threshold: float = DUPLICATE_CORRELATION) -> list[tuple[int, int, float]]:
    """(val index, train index, correlation) of each validation image whose best training match is above threshold."""
    if len(thumbs_val) == 0 or len(thumbs_train) == 0:
        return []
    ok_v = ~np.isnan(thumbs_val).any(1)
    ok_t = ~np.isnan(thumbs_train).any(1)
    tv = np.where(ok_v[:, None], thumbs_val, 0.0)
    tt = np.where(ok_t[:, None], thumbs_train, 0.0)
    best = np.zeros(len(tv), np.int64)
    r = np.full(len(tv), -1.0)
    # a block of validation rows at a time: the full val x train matrix grows with the product of the two
    for start in range(0, len(tv), DUPLICATE_BLOCK):
        corr = tv[start : start + DUPLICATE_BLOCK] @ tt.T / thumbs_val.shape[1]  # z-scored rows: the mean product is Pearson's r
        corr[:, ~ok_t] = -1.0
        corr[~ok_v[start : start + DUPLICATE_BLOCK], :] = -1.0
        best[start : start + len(corr)] = corr.argmax(1)
        r[start : start + len(corr)] = corr[np.arange(len(corr)), best[start : start + len(corr)]]
    return [(int(i), int(best[i]), float(r[i])) for i in np.flatnonzero(r >= threshold)]


def duplicates(ev: RunEvidence) -> Finding | None:
    """Validation images that are (near-)copies of training images: leakage the case ids do not show."""
    e = ev.eval
    if e is None:
        return None
    pairs = duplicate_pairs(e.thumbs_val, e.thumbs_train)
    if not pairs:
        return None
    n_val = len(e.val_ids)
    share = len(pairs) / n_val
    identical = sum(r >= 0.999 for _, _, r in pairs)
    examples = ", ".join(f"val {e.val_ids[i]} ≈ train {e.train_ids[j]} (r={r:.3f})" for i, j, r in pairs[:3])
    dup_idx = {i for i, _, _ in pairs}
    dice = np.array([r["dice"] for r in e.hard_rows], dtype=float)
    in_dup = np.array([i in dup_idx for i in range(n_val)])
    dice_dup = float(np.nanmean(dice[in_dup])) if np.isfinite(dice[in_dup]).any() else float("nan")
    dice_rest = float(np.nanmean(dice[~in_dup])) if (~in_dup).any() and np.isfinite(dice[~in_dup]).any() else float("nan")
    evidence = (
        f"{len(pairs)} of {n_val} validation images ({share:.0%}) have a near-identical training image "
        f"({identical} identical; {THUMB_SIDE}x{THUMB_SIDE} thumbnail correlation ≥ {DUPLICATE_CORRELATION}): {examples}"
    )
    if finite(dice_dup) and finite(dice_rest):
        evidence += f"; Dice {dice_dup:.3f} on them vs {dice_rest:.3f} on the rest"
    return Finding(
        id="data.duplicates", family="data", severity="serious" if share >= 0.05 else "warning",
        confidence=0.95 if identical else 0.8, impact=min(1.0, 0.6 + share),
        title=f"{len(pairs)} validation image(s) also appear in training",
        evidence=evidence,
        why="the same image (or the same patient saved twice) on both sides of the split inflates the validation "
        "score and hides overfitting",
        fix_key="data.cases_csv", fix_value="a CSV giving duplicate images one patient id, so the split keeps them together",
        numbers={"n_duplicates": len(pairs), "n_val": n_val, "share": share, "n_identical": identical, "dice_duplicates": dice_dup, "dice_rest": dice_rest},
    )


STAT_NAMES = ("mean", "std", "p01", "p99")


def _robust_shift(q_train: dict, median_val: float) -> float:
    """|val median - train median| in robust train spreads (IQR / 1.349, floored at 5% of the level)."""
    q25, q50, q75 = (q_train.get(k) for k in ("q25", "q50", "q75"))
    spread = max((q75 - q25) / 1.349, 0.05 * max(1.0, abs(q50)))
    return abs(median_val - q50) / spread


def split_intensity(ev: RunEvidence) -> Finding | None:
    """Per-image intensity statistics of the network input that differ between training and validation.

    With the checkpoint re-run, every image's statistics are compared (median shift and a KS
    test); without it, the fingerprint's per-split quantiles (median shift only, less sure).
    """
    e = ev.eval
    if e is not None and len(e.intensity_train) >= 3 and len(e.intensity_val) >= 3:
        worst = None
        for k, name in enumerate(STAT_NAMES):
            t, v = e.intensity_train[:, k], e.intensity_val[:, k]
            q = dict(zip(("q25", "q50", "q75"), np.percentile(t, [25, 50, 75])))
            shift = _robust_shift(q, float(np.median(v)))
            p = float(stats.ks_2samp(t, v).pvalue)
            if worst is None or shift > worst[1]:
                worst = (name, shift, p, float(q["q50"]), float(np.median(v)))
        source = f"{len(e.intensity_train)} train / {len(e.intensity_val)} val images"
    else:
        worst = _fingerprint_shift(ev)
        source = "fingerprint per-split quantiles"
    if worst is None:
        return None
    name, shift, p, mt, mv = worst
    tested = finite(p)
    if shift < SHIFT_WARN or (tested and p > 0.01) or (not tested and shift < 1.5 * SHIFT_WARN):
        return None
    mode = ev.get("data.normalize.mode", "auto")
    fix_key, fix_value = ("data.normalize.mode", "percentile") if mode in ("none", "minmax") else ("split.mode", "holdout")
    confidence = min(0.95, 0.6 + 0.1 * shift / SHIFT_WARN) * (1.0 if tested and p < 1e-3 else 0.8)
    return Finding(
        id="data.split_intensity", family="data",
        severity="serious" if tested and shift >= 2 * SHIFT_WARN and p < 1e-3 else "warning",
        confidence=confidence, impact=min(1.0, 0.3 + 0.1 * shift),
        title=f"validation images differ in intensity from training ({name} of the network input)",
        evidence=f"median per-image {name}: train {mt:.3g}, val {mv:.3g} ({shift:.1f} train spreads apart"
        + (f"; KS p={p:.1e}" if tested else "") + f"; {source}); data.normalize.mode = {mode}",
        why="a model trained on one intensity range meets another at validation: scores then measure the shift, "
        "and the same will happen on new scanners",
        fix_key=fix_key, fix_value=fix_value, numbers={"statistic": name, "shift_spreads": shift, "ks_p": p, "train_median": mt, "val_median": mv},
    )


def _fingerprint_shift(ev: RunEvidence):
    """(statistic, shift, NaN, train median, val median) from fingerprint.json's by_split, or None."""
    parts = ev.fingerprint.get("by_split") or {}
    train, val = parts.get("train") or {}, parts.get("val") or {}
    worst = None
    for key, name in (("normalised_intensity_mean", "mean"), ("normalised_intensity_std", "std")):
        qt, qv = train.get(key) or {}, val.get(key) or {}
        if not all(finite(qt.get(k)) for k in ("q25", "q50", "q75")) or not finite(qv.get("q50")):
            continue
        shift = _robust_shift(qt, float(qv["q50"]))
        if worst is None or shift > worst[1]:
            worst = (name, shift, float("nan"), float(qt["q50"]), float(qv["q50"]))
    return worst
