"""`medseg augment-preview`: a PNG grid of training images and their augmented versions.

One row per training image (those with foreground first): the original, then `variants`
augmented versions drawn exactly as training draws them (the config's preset, overrides and
seed), each with the mask outline drawn on the image so a misaligned mask shows at a glance.
A 2.5D image shows its centre channel. The grey scale of a row is fixed by its original, so
intensity augmentations show as brightness/contrast changes.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from medseg.config import Config
from medseg.data.augment import build_augment
from medseg.data.copy_paste import STREAM_PASTE, build_copy_paste
from medseg.data.sources import Sample, load_data
from medseg.data.split import make_split
from medseg.errors import MedsegError

CELL_PX = 160  # one image cell, square, in output pixels
HEADER_PX = 40  # the line that says what is shown
DPI = 100
CONTOUR_COLOUR = "#00ff00"  # pure green: never a grey level, so it stands out on any image
_TITLE_PT = 6
_TITLE_PX = 22  # room above each image for two lines of title


def training_samples(cfg: Config, samples: list[Sample]) -> list[Sample]:
    """Every sample of the training split (as `fit` makes it), foreground ones first, each group in a seeded order.

    Args:
        cfg: the run config (split section and seed).
        samples: every loaded sample (with masks).
    """
    split = make_split([s.case_id for s in samples], cfg.split, cfg.seed)
    train_cases = set(split["train"])
    train = [s for s in samples if s.case_id in train_cases]
    rng = np.random.default_rng([cfg.seed, 41])
    with_fg = [s for s in train if s.mask is not None and s.mask.any()]
    empty = [s for s in train if s.mask is None or not s.mask.any()]
    return [with_fg[i] for i in rng.permutation(len(with_fg))] + [empty[i] for i in rng.permutation(len(empty))]


def pick_training_samples(cfg: Config, samples: list[Sample], n: int) -> list[Sample]:
    """Up to n samples of the training split (as `fit` makes it), foreground ones first.

    Args:
        cfg: the run config (split section and seed).
        samples: every loaded sample (with masks).
        n: how many to pick.
    """
    return training_samples(cfg, samples)[:n]


def _title(words: list[str], width: int = 34) -> str:
    text = ", ".join(words) if words else "(no transform fired)"
    lines = textwrap.wrap(text, width)
    return "\n".join(lines[:2]) + (" ..." if len(lines) > 2 else "")


def _draw(ax, image: np.ndarray, mask: np.ndarray, vmin: float, vmax: float, title: str) -> None:
    centre = image[..., image.shape[-1] // 2]
    ax.imshow(centre, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
    if mask.any():  # an empty mask has no outline (and contour() would warn)
        ax.contour(mask.astype(np.float32), levels=[0.5], colors=[CONTOUR_COLOUR], linewidths=0.8)
    ax.set_title(title, fontsize=_TITLE_PT, pad=2)
    ax.set_xticks([])
    ax.set_yticks([])


def write_augment_preview(cfg: Config, out: Path, n: int = 8, variants: int = 5) -> Path:
    """Write the preview grid to `out` (a new .png file) and return its path.

    The PNG is (1 + variants) * CELL_PX wide and rows * CELL_PX + HEADER_PX high, where rows
    is n or the number of training images if fewer.

    Args:
        cfg: config whose data, split, seed and augment sections are used.
        out: the PNG to write; must not exist.
        n: training images to show.
        variants: augmented versions per image.

    Raises:
        MedsegError: out exists or is not .png, n/variants < 1, nothing to augment, or a
            data/split problem.
    """
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise MedsegError(f"--out {out}: the preview is a PNG; give a file name ending in .png")
    if out.exists():
        raise MedsegError(f"--out {out}: file exists (nothing is overwritten)")
    if n < 1:
        raise MedsegError(f"--n {n}: show at least 1 image")
    if variants < 1:
        raise MedsegError(f"--variants {variants}: show at least 1 augmented version")
    aug = build_augment(cfg.augment.preset, cfg.augment.overrides)
    if aug is None and cfg.augment.copy_paste == 0:
        raise MedsegError(f"augment.preset: '{cfg.augment.preset}' with these overrides applies no transform; nothing to preview")

    loaded = load_data(cfg.data, with_masks=True, progress=False)
    train = training_samples(cfg, loaded.samples)
    chosen = train[:n]
    if not chosen:
        raise MedsegError("split: the training set has no images")
    # copy-paste draws its donors from the whole training split, as fit does
    train_images = [s.image for s in train]
    train_masks = [np.zeros(s.image.shape[1:], np.uint8) if s.mask is None else s.mask.astype(np.uint8) for s in train]
    paste = build_copy_paste(cfg.augment.copy_paste, np.array([m.any() for m in train_masks], bool))
    # one seed per cell, from the run seed: the same config draws the same preview
    seeds = np.random.default_rng([cfg.seed, 43]).integers(0, 2**31 - 1, size=(len(chosen), variants))

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows, cols = len(chosen), 1 + variants
    width_px, height_px = cols * CELL_PX, rows * CELL_PX + HEADER_PX
    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)
    FigureCanvasAgg(fig)  # Agg: renders without a display
    overrides = ", ".join(f"{k}={v:g}" for k, v in cfg.augment.overrides.items())
    fig.text(
        0.5, 1 - (HEADER_PX / 2) / height_px,
        f"augment preset '{cfg.augment.preset}'" + (f" with {overrides}" if overrides else "")
        + (f", copy-paste {cfg.augment.copy_paste:g}" if cfg.augment.copy_paste else "")
        + f"; mask outline in green; {'centre channel of ' + str(loaded.in_channels) if loaded.in_channels > 1 else 'one channel'}",
        ha="center", va="center", fontsize=8,
    )
    pad = 4
    for r, sample in enumerate(chosen):
        image = np.ascontiguousarray(sample.image.transpose(1, 2, 0), dtype=np.float32)
        mask = sample.mask.astype(np.uint8)
        vmin, vmax = np.percentile(image[..., image.shape[-1] // 2], [1, 99])
        if vmax <= vmin:
            vmax = vmin + 1.0
        for c in range(cols):
            left = (c * CELL_PX + pad) / width_px
            bottom = ((rows - 1 - r) * CELL_PX + pad) / height_px
            ax = fig.add_axes((left, bottom, (CELL_PX - 2 * pad) / width_px, (CELL_PX - pad - _TITLE_PX) / height_px))
            if c == 0:
                _draw(ax, image, mask, vmin, vmax, _title([f"{sample.sample_id}", "original"]))
                continue
            img_c, mask_c, applied = image, mask, []
            if paste is not None:
                pasted_img, mask_c, pasted = paste(
                    sample.image, mask, r, train_images, train_masks, np.random.default_rng([int(seeds[r, c - 1]), STREAM_PASTE])
                )
                img_c = np.ascontiguousarray(pasted_img.transpose(1, 2, 0), dtype=np.float32)
                applied += ["copy_paste"] if pasted else []
            if aug is not None:
                aug.set_random_seed(int(seeds[r, c - 1]))
                res = aug(image=img_c.copy(), mask=mask_c.copy())
                img_c, mask_c, applied = res["image"], res["mask"], applied + res["applied"]
            _draw(ax, img_c, mask_c, vmin, vmax, _title(applied))
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(out, "xb") as fh:  # "x": fail rather than overwrite a file made meanwhile
            fig.savefig(fh, format="png", dpi=DPI)
    except FileExistsError:
        raise MedsegError(f"--out {out}: file exists (nothing is overwritten)") from None
    return out
