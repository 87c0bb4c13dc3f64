"""Intensity normalisation and the resize geometry between original images and network input.

Geometry: `resize_image` and `resize_mask` map an original (H, W) image onto the network
input (h, w) and record a JSON-serialisable ``resize_info``; `to_original` uses it to map a
probability map back onto the original pixels. Both modes use OpenCV's pixel-centre
convention (output pixel i covers input ``[i/s, (i+1)/s)``), so forward and inverse agree:

* ``resize``: the whole image is scaled to (h, w) (aspect ratio may change);
* ``letterbox``: scaled by one factor ``min(h/H, w/W)`` to ``content`` = (ch, cw), then
  placed centred at ``offset`` = (top, left) on a zero canvas. Zero is background for masks
  and, after z-score normalisation, the mean intensity for images.
* ``spacing``: resampled so a pixel covers ``data.target_spacing`` (row, col; the file's units,
  mm for medical formats), i.e. ``content`` = (H * s_row / t_row, W * s_col / t_col) for pixel
  spacing (s_row, s_col), centred on the zero canvas like letterbox. A lesion of a given size
  in mm then covers the same pixels in every case, as nnU-Net's resampling to the median
  spacing does. A case too large for the canvas at that spacing is shrunk (one factor, so its
  spacing stays isotropic relative to the target) until it fits: ``fit`` < 1 records it. A
  case without spacing (PNG, TIFF) is letterboxed, ``fit`` None.
"""

from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np
from scipy import ndimage

from medseg.data.schema import NormalizeConfig
from medseg.errors import MedsegError

_EPS = 1e-6


# ---------------------------------------------------------------------------------------
# Intensity


def _zscore(a: np.ndarray) -> np.ndarray:
    mean = float(a.mean(dtype=np.float64))
    std = float(a.std(dtype=np.float64))
    if std < _EPS:
        return np.zeros_like(a)  # constant image: no contrast to scale, return the mean (0)
    return (a - np.float32(mean)) / np.float32(std)


def _unit_range(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi - lo < _EPS:
        return np.zeros_like(a)
    return (np.clip(a, lo, hi) - np.float32(lo)) / np.float32(hi - lo)


def resolve_mode(cfg: NormalizeConfig, modality: str) -> str:
    """The concrete normalisation for a config mode and modality ('auto' -> ct_window for CT, else percentile).

    Args:
        cfg: the normalisation config.
        modality: 'ct', 'mr', 'xray', ...
    """
    if cfg.mode != "auto":
        return cfg.mode
    return "ct_window" if modality == "ct" else "percentile"


def normalize(arr: np.ndarray, cfg: NormalizeConfig, modality: str, where: str = "image") -> np.ndarray:
    """Normalise intensities (all channels/slices of `arr` together).

    Modes: zscore (mean 0, std 1); percentile (clip to cfg.percentiles, then z-score);
    ct_window (clip HU to level +- width/2, scale to [0, 1]); minmax (scale to [0, 1]);
    none (unchanged); auto (ct_window when modality is 'ct', else percentile). A constant
    image becomes all zeros instead of dividing by zero.

    Args:
        arr: raw values, any shape (an image, a (C, H, W) stack or a whole volume).
        cfg: the normalisation config.
        modality: the image's modality (decides 'auto').
        where: the file the values came from, named in the error message.

    Returns:
        float32 array of the same shape.

    Raises:
        MedsegError: the array holds NaN or infinite values.
    """
    a = np.asarray(arr, dtype=np.float32)
    if a.size == 0:
        return a.copy()
    if not np.isfinite(a).all():
        n = int((~np.isfinite(a)).sum())
        raise MedsegError(f"{where}: image holds {n} NaN or infinite value(s)")
    mode = resolve_mode(cfg, modality)
    if mode == "none":
        return a.copy()
    if mode == "zscore":
        return _zscore(a)
    if mode == "minmax":
        return _unit_range(a, float(a.min()), float(a.max()))
    if mode == "ct_window":
        level, width = cfg.window
        return _unit_range(a, level - width / 2.0, level + width / 2.0)
    if mode == "percentile":
        lo, hi = np.percentile(a, cfg.percentiles)
        return _zscore(np.clip(a, np.float32(lo), np.float32(hi)))
    raise ValueError(f"unknown normalisation mode {mode!r}")


# ---------------------------------------------------------------------------------------
# Geometry


def resize_geometry(orig_hw: Sequence[int], size: Sequence[int], mode: str, spacing: Optional[Sequence[float]] = None,
                    target: Optional[Sequence[float]] = None) -> dict:
    """The resize_info mapping an (H, W) image onto `size` (see the module docstring).

    Args:
        orig_hw: original (H, W).
        size: network input (h, w).
        mode: 'resize', 'letterbox' or 'spacing'.
        spacing: spacing mode: the image's pixel size (row, col); None: letterbox.
        target: spacing mode: the pixel size (row, col) to resample to.

    Returns:
        dict with mode, orig_shape [H, W], size [h, w], content [ch, cw] (size of the scaled
        image inside the canvas), offset [top, left] and scale [sy, sx] = content / orig; in
        spacing mode also fit (the shrink applied to fit the canvas, 1 when none; None without
        spacing).
    """
    H, W = int(orig_hw[0]), int(orig_hw[1])
    h, w = int(size[0]), int(size[1])
    extra: dict = {}
    if mode == "resize":
        ch, cw = h, w
    elif mode == "letterbox" or (mode == "spacing" and (spacing is None or target is None)):
        s = min(h / H, w / W)
        ch = min(h, max(1, int(round(H * s))))
        cw = min(w, max(1, int(round(W * s))))
        if mode == "spacing":
            extra = {"fit": None}
    elif mode == "spacing":
        fy, fx = float(spacing[0]) / float(target[0]), float(spacing[1]) / float(target[1])
        fit = min(1.0, h / (H * fy), w / (W * fx))
        ch = min(h, max(1, int(round(H * fy * fit))))
        cw = min(w, max(1, int(round(W * fx * fit))))
        extra = {"fit": fit}
    else:
        raise ValueError(f"unknown resize mode {mode!r}")
    top, left = (h - ch) // 2, (w - cw) // 2
    return {
        "mode": mode,
        "orig_shape": [H, W],
        "size": [h, w],
        "content": [ch, cw],
        "offset": [top, left],
        "scale": [ch / H, cw / W],
        **extra,
    }


def _interp(src_hw: Sequence[int], dst_hw: Sequence[int]) -> int:
    # area averaging when shrinking (no aliasing, tiny structures keep their share of signal)
    shrinking = dst_hw[0] <= src_hw[0] and dst_hw[1] <= src_hw[1]
    return cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR


def _resize_hwc(a: np.ndarray, dst_hw: Sequence[int]) -> np.ndarray:
    """Resize an (H, W) or (H, W, C) float array to dst_hw, any C."""
    if tuple(a.shape[:2]) == tuple(dst_hw):
        return a.copy()
    flag = _interp(a.shape[:2], dst_hw)
    dsize = (int(dst_hw[1]), int(dst_hw[0]))
    r = cv2.resize(np.ascontiguousarray(a), dsize, interpolation=flag)
    # OpenCV drops a trailing channel axis of length 1
    return r[:, :, None] if a.ndim == 3 and r.ndim == 2 else r


def resize_image(img: np.ndarray, size: Sequence[int], mode: str, spacing: Optional[Sequence[float]] = None,
                 target: Optional[Sequence[float]] = None) -> tuple[np.ndarray, dict]:
    """Resize a (C, H, W) image to the network input.

    Bilinear (cv2.INTER_LINEAR) when enlarging, area averaging (cv2.INTER_AREA) when
    shrinking; letterbox and spacing pad with zeros around the centred content.

    Args:
        img: (C, H, W) float array.
        size: (h, w) network input size.
        mode: 'resize', 'letterbox' or 'spacing'.
        spacing: the image's pixel size (row, col), for the spacing mode.
        target: the pixel size to resample to (``data.target_spacing``), for the spacing mode.

    Returns:
        ((C, h, w) float32 image, resize_info for `to_original`).
    """
    if img.ndim != 3:
        raise ValueError(f"resize_image expects (C, H, W), got shape {img.shape}")
    info = resize_geometry(img.shape[1:], size, mode, spacing, target)
    ch, cw = info["content"]
    top, left = info["offset"]
    content = _resize_hwc(np.moveaxis(img.astype(np.float32, copy=False), 0, -1), (ch, cw))
    if content.ndim == 2:
        content = content[:, :, None]
    out = np.zeros((img.shape[0], info["size"][0], info["size"][1]), dtype=np.float32)
    out[:, top : top + ch, left : left + cw] = np.moveaxis(content, -1, 0)
    return out, info


def resize_mask(mask: np.ndarray, size: Sequence[int], mode: str, spacing: Optional[Sequence[float]] = None,
                target: Optional[Sequence[float]] = None) -> np.ndarray:
    """Resize a binary mask to the network input, keeping it binary and keeping tiny lesions.

    The foreground is resampled as a coverage fraction (area averaging when shrinking,
    bilinear when enlarging) and an output pixel is foreground when it is at least half
    covered. Shrinking can make a lesion smaller than half an output pixel vanish, which for
    tiny targets would silently delete positives; so every connected component (8-connected)
    of the original mask that left no output pixel set marks the one output pixel that
    contains most of its pixels. A lesion may therefore grow to one pixel, never disappear.

    Args:
        mask: (H, W) array; any value > 0 is foreground.
        size: (h, w) network input size.
        mode: 'resize', 'letterbox' or 'spacing' (same geometry as `resize_image`).
        spacing: the image's pixel size (row, col), for the spacing mode.
        target: the pixel size to resample to, for the spacing mode.

    Returns:
        (h, w) uint8 mask in {0, 1}.
    """
    fg = np.asarray(mask) > 0
    if fg.ndim != 2:
        raise ValueError(f"resize_mask expects (H, W), got shape {fg.shape}")
    info = resize_geometry(fg.shape, size, mode, spacing, target)
    h, w = info["size"]
    ch, cw = info["content"]
    top, left = info["offset"]
    out = np.zeros((h, w), dtype=np.uint8)
    if not fg.any():
        return out
    cover = _resize_hwc(fg.astype(np.float32), (ch, cw))
    out[top : top + ch, left : left + cw] = cover >= 0.5
    _keep_vanished_components(fg, out, info)
    return out


def _keep_vanished_components(fg: np.ndarray, out: np.ndarray, info: dict) -> None:
    labels, n = ndimage.label(fg, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return
    rr, cc = np.nonzero(fg)
    lab = labels[rr, cc]
    sy, sx = info["scale"]
    ch, cw = info["content"]
    top, left = info["offset"]
    # output pixel containing each input pixel's centre (same convention as cv2.resize)
    orr = np.clip(np.floor((rr + 0.5) * sy).astype(np.int64), 0, ch - 1) + top
    occ = np.clip(np.floor((cc + 0.5) * sx).astype(np.int64), 0, cw - 1) + left
    hit = out[orr, occ] > 0
    survived = np.bincount(lab, weights=hit, minlength=n + 1) > 0
    lost = ~survived[lab]
    if not lost.any():
        return
    w = out.shape[1]
    npix = out.size
    key = lab[lost].astype(np.int64) * npix + orr[lost] * w + occ[lost]
    uniq, counts = np.unique(key, return_counts=True)
    comp, pix = uniq // npix, uniq % npix
    # per component, the output pixel with the largest count (sort by component, then count desc)
    order = np.lexsort((-counts, comp))
    first = np.ones(order.size, dtype=bool)
    first[1:] = comp[order][1:] != comp[order][:-1]
    chosen = pix[order][first]
    out.reshape(-1)[chosen] = 1


def to_original(prob: np.ndarray, resize_info: dict) -> np.ndarray:
    """Map a map at network-input size back onto the original image's pixels.

    Crops the letterbox content (undoing the padding), then resizes it to the original
    (H, W): bilinear when enlarging, area averaging when shrinking (so thin structures are
    averaged rather than point-sampled away).

    Args:
        prob: (h, w) probability (or any float) map at network input size.
        resize_info: the dict `resize_image` returned (or a sample's meta['resize']).

    Returns:
        (H, W) float32 array.
    """
    p = np.asarray(prob, dtype=np.float32)
    h, w = resize_info["size"]
    if p.shape != (h, w):
        raise ValueError(f"to_original: map shape {p.shape} differs from the input size {(h, w)} in resize_info")
    ch, cw = resize_info["content"]
    top, left = resize_info["offset"]
    H, W = resize_info["orig_shape"]
    content = np.ascontiguousarray(p[top : top + ch, left : left + cw])
    return _resize_hwc(content, (H, W)).astype(np.float32, copy=False)


# an 8-bit mask this bright but not purely 0/255 is a 0/255 mask with noise (JPEG, antialiased edges)
HALF_MAX_FROM = 128


def binarize_mask(mask: np.ndarray) -> tuple[np.ndarray, Optional[dict]]:
    """The boolean mask of a stored 2D mask, and the rule used when it was not a plain 0/1 or 0/255 mask.

    Plain masks ({0, 1}, {0, 255}) and label masks (8-bit with a maximum below 128, e.g. classes
    1, 2, 3) are foreground where > 0. An 8-bit mask reaching 128 or more with other values
    (JPEG compression noise, antialiased edges) is foreground where >= half its maximum:
    counting every value > 0 there turns the noise around each lesion into foreground.

    Args:
        mask: the stored mask, (H, W), with its stored values (readers return them as float32).

    Returns:
        (boolean mask, None) for plain and label masks; otherwise (mask, {"rule": "half_max",
        "threshold", "n_pixels_between"}), the last the pixels neither 0 nor the maximum.
    """
    m = np.asarray(mask)
    if m.size and np.issubdtype(m.dtype, np.number):
        top = float(m.max())
        values = np.unique(m)
        eight_bit = values.min() >= 0 and top <= 255 and bool(np.all(values == np.round(values)))
        if eight_bit and top >= HALF_MAX_FROM and not set(values.tolist()) <= {0.0, top}:
            threshold = top / 2.0
            between = int(np.count_nonzero((m > 0) & (m < top)))
            return m >= threshold, {"rule": "half_max", "threshold": threshold, "n_pixels_between": between}
    return m > 0, None


def fg_fraction(mask: Optional[np.ndarray]) -> Optional[float]:
    """Share of foreground (> 0) pixels, or None without a mask.

    Args:
        mask: any array or None.
    """
    if mask is None:
        return None
    m = np.asarray(mask)
    return float((m > 0).mean()) if m.size else 0.0
