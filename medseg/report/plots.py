"""Matplotlib figures for the report, each returned as PNG bytes.

Figures are built with `matplotlib.figure.Figure` directly (no pyplot): no global state, no
GUI backend, safe to call at the end of a training process. Every figure of a metric prints
the metric contract inside the image too, so a PNG copied out of the report keeps it.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

DPI = 100
TRAIN_COLOR = "#1f77b4"
VAL_COLOR = "#d62728"
BEST_COLOR = "#2ca02c"
TRUTH_CMAP = ListedColormap(["#ff8c00"])  # orange
PRED_CMAP = ListedColormap(["#00d5ff"])  # cyan
OUTLINE_COLOR = "#ff2020"


def to_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def _contract_footer(fig: Figure, contract_text: str) -> None:
    if contract_text:
        fig.text(0.01, -0.02, f"metric contract: {contract_text}", fontsize=8, color="#555555", ha="left", va="top")


def series(rows: list[dict], key: str, x_key: str = "epoch") -> Optional[tuple[np.ndarray, np.ndarray]]:
    """(x, y) of a column's finite values, or None if the column is missing or all NaN."""
    pts = [(float(r[x_key]), float(r[key])) for r in rows if _finite(r.get(key)) and _finite(r.get(x_key))]
    if not pts:
        return None
    arr = np.asarray(pts)
    return arr[:, 0], arr[:, 1]


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _epoch_axis(ax) -> None:
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _mark_best(ax, best_epoch: Optional[int]) -> None:
    if best_epoch is not None and best_epoch >= 0:
        ax.axvline(best_epoch, color=BEST_COLOR, ls=":", lw=1.2, label=f"best epoch {best_epoch}")


def loss_curves(rows: list[dict], best_epoch: Optional[int] = None) -> Optional[bytes]:
    """Train and validation loss per epoch, with each training loss term dashed."""
    train, val = series(rows, "train_loss"), series(rows, "val_loss")
    if train is None and val is None:
        return None
    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.add_subplot()
    if train is not None:
        ax.plot(*train, "o-", color=TRAIN_COLOR, label="train_loss", ms=3)
    if val is not None:
        ax.plot(*val, "o-", color=VAL_COLOR, label="val_loss", ms=3)
    terms = sorted({k for r in rows for k in r if k.startswith("train_loss_")})
    for term in terms:
        s = series(rows, term)
        if s is not None:
            ax.plot(*s, "--", lw=1, alpha=0.8, label=term)
    _mark_best(ax, best_epoch)
    _epoch_axis(ax)
    ax.set_ylabel("loss")
    ax.set_title("Loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return to_png(fig)


def metric_curves(rows: list[dict], contract_text: str, best_epoch: Optional[int] = None) -> Optional[bytes]:
    """Validation Dice (hard, under the contract), soft Dice and Dice on non-empty cases per epoch."""
    curves = [
        ("val_dice", "val_dice (hard)", VAL_COLOR, "o-"),
        ("val_soft_dice", "val_soft_dice (soft, no threshold)", "#9467bd", "s--"),
        ("val_dice_nonempty", "val_dice_nonempty", "#ff7f0e", "^:"),
        ("val_iou", "val_iou", "#8c564b", ".-"),
    ]
    drawn = [(series(rows, k), label, c, style) for k, label, c, style in curves]
    if all(s is None for s, *_ in drawn):
        return None
    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.add_subplot()
    for s, label, color, style in drawn:
        if s is not None:
            ax.plot(*s, style, color=color, label=label, ms=3)
    _mark_best(ax, best_epoch)
    ax.set_ylim(-0.02, 1.02)
    _epoch_axis(ax)
    ax.set_ylabel("score")
    ax.set_title("Validation metrics")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _contract_footer(fig, contract_text)
    return to_png(fig)


def lr_curve(rows: list[dict]) -> Optional[bytes]:
    """Learning rate at the end of each epoch, against the optimiser step."""
    x_key = "step" if any(_finite(r.get("step")) for r in rows) else "epoch"
    s = series(rows, "lr", x_key)
    if s is None:
        return None
    fig = Figure(figsize=(6.4, 3.0))
    ax = fig.add_subplot()
    ax.plot(*s, "o-", color="#17becf", ms=3)
    ax.set_xlabel("optimiser step" if x_key == "step" else "epoch")
    ax.set_ylabel("learning rate")
    ax.set_title("Learning rate")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.2g}"))
    ax.grid(alpha=0.3)
    return to_png(fig)


def batch_composition(rows: list[dict], train_pixel_share: Optional[float] = None) -> Optional[bytes]:
    """Realised share of lesion-containing images per batch (mean, min-max band) and of lesion pixels.

    Args:
        rows: metrics/epochs.csv rows.
        train_pixel_share: lesion pixels / all pixels of the training set, drawn for reference.
    """
    mean = series(rows, "batch_pos_image_share_mean")
    pixels = series(rows, "batch_pos_pixel_share_mean")
    if mean is None and pixels is None:
        return None
    fig = Figure(figsize=(9.6, 3.2))
    ax_img, ax_px = fig.subplots(1, 2)
    if mean is not None:
        ax_img.plot(*mean, "o-", color=TRAIN_COLOR, ms=3, label="mean over batches")
        lo, hi = series(rows, "batch_pos_image_share_min"), series(rows, "batch_pos_image_share_max")
        if lo is not None and hi is not None and len(lo[0]) == len(hi[0]):
            ax_img.fill_between(lo[0], lo[1], hi[1], color=TRAIN_COLOR, alpha=0.15, label="min–max over batches")
    target = series(rows, "sampler_target_pos_share")
    if target is not None:
        ax_img.plot(*target, "--", color="#ff7f0e", label="sampler target")
    ax_img.set_ylim(-0.02, 1.02)
    _epoch_axis(ax_img)
    ax_img.set_title("Images with a lesion, share of each batch", fontsize=10)
    ax_img.grid(alpha=0.3)
    ax_img.legend(fontsize=8)
    if pixels is not None:
        ax_px.plot(*pixels, "o-", color="#e377c2", ms=3, label="mean over batches")
    if train_pixel_share is not None and math.isfinite(train_pixel_share):
        ax_px.axhline(train_pixel_share, color="#555555", ls=":", label="training set")
        ax_px.legend(fontsize=8)
    # from zero, so batch-to-batch noise does not look like a trend
    ax_px.set_ylim(bottom=0)
    _epoch_axis(ax_px)
    ax_px.set_title("Lesion pixels, share of each batch (mean)", fontsize=10)
    ax_px.grid(alpha=0.3)
    return to_png(fig)


def threshold_curve(sweep: dict, threshold_in_use: float) -> Optional[bytes]:
    """Dice, IoU, precision and recall against the binarisation threshold."""
    rows = sweep.get("rows") or []
    if not rows:
        return None
    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.add_subplot()
    for key, color in (("dice", VAL_COLOR), ("iou", "#8c564b"), ("precision", TRAIN_COLOR), ("recall", "#ff7f0e")):
        s = series(rows, key, "threshold")
        if s is not None:
            ax.plot(*s, "o-" if key == "dice" else "--", color=color, label=key, ms=3, lw=2 if key == "dice" else 1)
    ax.axvline(threshold_in_use, color="#555555", ls=":", label=f"in use {threshold_in_use:.2f}")
    best = sweep.get("best_threshold")
    if best is not None:
        ax.axvline(best, color=BEST_COLOR, ls="-.", label=f"best {best:.2f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("threshold")
    ax.set_ylabel("score")
    ax.set_title("Threshold sweep (validation)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _contract_footer(fig, sweep.get("contract_text", ""))
    return to_png(fig)


def dice_histogram(case_rows: list[dict], contract_text: str) -> Optional[bytes]:
    """Per-case Dice, stacked by whether the truth mask is empty."""
    def is_empty(r) -> bool:
        return str(r.get("truth_empty")).lower() in ("true", "1", "1.0")

    nonempty = [float(r["dice"]) for r in case_rows if _finite(r.get("dice")) and not is_empty(r)]
    empty = [float(r["dice"]) for r in case_rows if _finite(r.get("dice")) and is_empty(r)]
    if not nonempty and not empty:
        return None
    fig = Figure(figsize=(6.4, 3.4))
    ax = fig.add_subplot()
    ax.hist(
        [nonempty, empty], bins=np.linspace(0, 1, 21), stacked=True, color=[VAL_COLOR, "#7f7f7f"],
        label=[f"truth has a lesion ({len(nonempty)})", f"truth empty ({len(empty)})"],
    )
    ax.set_xlim(0, 1)
    ax.set_xlabel("Dice")
    ax.set_ylabel("validation cases")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Per-case Dice")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    _contract_footer(fig, contract_text)
    return to_png(fig)


def lesion_recall_bars(bins: Sequence[tuple[str, Optional[float], int]], contract_text: str) -> Optional[bytes]:
    """Lesion recall per size bin; `bins` holds (label, recall or None, number of truth lesions)."""
    if not bins:
        return None
    fig = Figure(figsize=(6.4, 3.2))
    ax = fig.add_subplot()
    labels = [b[0] for b in bins]
    values = [b[1] if b[1] is not None and math.isfinite(b[1]) else 0.0 for b in bins]
    bars = ax.bar(labels, values, color="#2ca02c")
    for bar, (_, recall, n) in zip(bars, bins):
        text = f"{recall:.2f}\n(n={n})" if recall is not None and math.isfinite(recall) else f"no lesions\n(n={n})"
        ax.text(bar.get_x() + bar.get_width() / 2, max(bar.get_height(), 0) + 0.02, text, ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, 1.25)
    ax.set_ylabel("lesion recall")
    ax.set_title("Lesion recall by size (truth lesion area)")
    ax.grid(alpha=0.3, axis="y")
    _contract_footer(fig, contract_text)
    return to_png(fig)


@dataclass
class OverlayCase:
    """One validation image with its truth and predicted probability, at network input size."""

    label: str
    image: np.ndarray  # (C, H, W) normalised
    truth: np.ndarray  # (H, W) binary
    prob: np.ndarray  # (H, W) in [0, 1]


def display_image(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3) in [0, 1] from a normalised (C, H, W) image.

    Three channels are shown as colour (callers pass only the centre slice of a 2.5D stack);
    any other channel count shows its centre channel.
    """
    img = image if image.shape[0] == 3 else image[image.shape[0] // 2][None]
    lo, hi = np.percentile(img, [1, 99])
    out = np.clip((img - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    return np.moveaxis(out, 0, -1) if out.shape[0] == 3 else out[0]


def overlays(cases: Sequence[OverlayCase], threshold: float, contract_text: str) -> Optional[bytes]:
    """One row per case: image, truth over the image, probability map, prediction over the image."""
    if not cases:
        return None
    n = len(cases)
    # "compressed" packs fixed-aspect images without the blank bands a plain grid leaves
    fig = Figure(figsize=(9.0, 2.1 * n + 0.5), layout="compressed")
    axes = np.atleast_2d(fig.subplots(n, 4))
    titles = ("image", "truth", "probability", f"prediction (≥ {threshold:.2f})")
    nearest = {"interpolation": "nearest"}
    for row, case in zip(axes, cases):
        shown = display_image(case.image)
        grey = {"cmap": "gray", **nearest} if shown.ndim == 2 else nearest
        row[0].imshow(shown, **grey)
        row[1].imshow(shown, **grey)
        row[1].imshow(np.ma.masked_where(case.truth == 0, case.truth), cmap=TRUTH_CMAP, alpha=0.65, **nearest)
        im = row[2].imshow(case.prob, cmap="magma", vmin=0, vmax=1, **nearest)
        fig.colorbar(im, ax=row[2], fraction=0.046, pad=0.02)
        pred = case.prob >= threshold
        row[3].imshow(shown, **grey)
        row[3].imshow(np.ma.masked_where(~pred, pred.astype(float)), cmap=PRED_CMAP, alpha=0.6, **nearest)
        if case.truth.any():
            row[3].contour(case.truth.astype(float), levels=[0.5], colors=[OUTLINE_COLOR], linewidths=1.2)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(case.label, fontsize=9)
    for ax, title in zip(axes[0], titles):
        ax.set_title(title, fontsize=9)
    # a layout-managed footer: a free fig.text would leave a blank band above it
    fig.supxlabel(f"metric contract: {contract_text}", fontsize=8, color="#555555", x=0.01, ha="left")
    return to_png(fig)
