"""Lesion copy-paste: a training image gets one more lesion, cut from another training image.

Tiny targets give the network few foreground examples per epoch; pasting a lesion from a donor
image (TumorCP, Yang et al. MICCAI 2021; Ghiasi et al. CVPR 2021 for natural images) shows it
more lesions in more surroundings for the cost of a crop and a blend. What is pasted:

* one connected component of a random donor's mask (another training image with foreground),
  with the donor's pixels under it (all 2.5D channels together);
* mirrored left-right with probability 0.5 and scaled by 0.75..1.25 (image bilinear, mask
  nearest);
* at a random place where it does not touch the target's own foreground (up to 20 tries,
  otherwise nothing is pasted, so lesions never merge into a shape no image has);
* blended through the mask blurred by sigma 1.5 px, so there is no hard edge the network could
  learn as "a lesion is where the texture jumps"; the label is the pasted mask, unblurred.

Only images that already have foreground receive a lesion: an empty image stays empty, so the
share of empty images the network sees (what it learns "no lesion" from, and what the
empty-image gate is tuned on) is the sampler's, not lowered by the augmentation.

It runs before the geometric and intensity transforms, so the pasted lesion moves and changes
with the rest of the image. Every draw comes from the sample's augmentation seed, so a
resumed run replays it.

Off by default (`augment.copy_paste: 0`): by patient-grouped CV on BUSI it gained on one fold
and lost on the other (BENCHMARKS §5i).
"""

from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np

# random stream of the copy-paste draws, apart from the crop's and the sampler's (see sampling.py)
STREAM_PASTE = 73

SCALE = (0.75, 1.25)
FEATHER_SIGMA = 1.5
PLACEMENT_TRIES = 20


def _component(mask: np.ndarray, rng: np.random.Generator) -> Optional[np.ndarray]:
    """A random connected component (8-connectivity) of a binary mask, as a bool mask; None if empty."""
    n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return None
    return labels == int(rng.integers(1, n))


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


class LesionCopyPaste:
    """Pastes one donor lesion into a training image that has foreground.

    Args:
        p: probability that an image with foreground gets a pasted lesion.
        donors: indices of the training images with foreground (`SplitArrays.positive`).
    """

    def __init__(self, p: float, donors: Sequence[int]):
        self.p = float(p)
        self.donors = np.asarray(donors, np.int64)

    def __call__(self, image: np.ndarray, mask: np.ndarray, idx: int, images, masks, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, bool]:
        """image (C, H, W) float32 and mask (H, W) of sample `idx` -> (image, mask, pasted).

        Args:
            images / masks: the training set (ndarrays or `SampleStack`s), read for the donor only.
            rng: this sample's generator.
        """
        if self.p <= 0 or not mask.any() or rng.random() >= self.p:
            return image, mask, False
        pool = self.donors[self.donors != idx]
        if len(pool) == 0:
            return image, mask, False
        donor = int(rng.choice(pool))
        comp = _component(np.asarray(masks[donor]) > 0, rng)
        if comp is None:
            return image, mask, False
        src = np.asarray(images[donor], np.float32)
        y0, y1, x0, x1 = _box(comp)
        m = int(np.ceil(3 * FEATHER_SIGMA))  # room for the feathered edge
        y0, y1, x0, x1 = max(0, y0 - m), min(comp.shape[0], y1 + m), max(0, x0 - m), min(comp.shape[1], x1 + m)
        H, W = mask.shape
        patch = src[:, y0:y1, x0:x1].transpose(1, 2, 0)  # (h, w, C) for OpenCV
        pmask = comp[y0:y1, x0:x1].astype(np.uint8)
        if rng.random() < 0.5:
            patch, pmask = patch[:, ::-1], pmask[:, ::-1]
        s = rng.uniform(*SCALE)
        h, w = pmask.shape
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
        if nh > H or nw > W:  # a lesion too large for this image is shrunk to fit
            f = min(H / h, W / w)
            nh, nw = max(1, min(H, int(h * f))), max(1, min(W, int(w * f)))
        patch = cv2.resize(np.ascontiguousarray(patch), (nw, nh), interpolation=cv2.INTER_LINEAR).reshape(nh, nw, -1)
        pmask = cv2.resize(np.ascontiguousarray(pmask), (nw, nh), interpolation=cv2.INTER_NEAREST)
        if not pmask.any():
            return image, mask, False
        # keep clear of the target's own lesions by the feather's width
        guard = cv2.dilate((mask > 0).astype(np.uint8), np.ones((2 * m + 1, 2 * m + 1), np.uint8))
        for _ in range(PLACEMENT_TRIES):
            ty, tx = int(rng.integers(0, H - nh + 1)), int(rng.integers(0, W - nw + 1))
            if not (guard[ty : ty + nh, tx : tx + nw] & pmask).any():
                break
        else:
            return image, mask, False
        alpha = cv2.GaussianBlur(pmask.astype(np.float32), (0, 0), sigmaX=FEATHER_SIGMA, sigmaY=FEATHER_SIGMA)
        alpha = np.clip(alpha, 0.0, 1.0)[None]
        out = np.array(image, np.float32, copy=True)
        win = out[:, ty : ty + nh, tx : tx + nw]
        out[:, ty : ty + nh, tx : tx + nw] = win * (1.0 - alpha) + patch.transpose(2, 0, 1) * alpha
        new_mask = np.array(mask, copy=True)
        new_mask[ty : ty + nh, tx : tx + nw] = np.maximum(new_mask[ty : ty + nh, tx : tx + nw], pmask.astype(new_mask.dtype))
        return out, new_mask, True


def build_copy_paste(p: float, positive: np.ndarray) -> Optional[LesionCopyPaste]:
    """The copy-paste step of a training set, or None when p is 0 or no image has foreground.

    Args:
        p: `augment.copy_paste`.
        positive: (N,) bool, the training image has foreground.
    """
    donors = np.flatnonzero(np.asarray(positive, bool))
    return LesionCopyPaste(p, donors) if p > 0 and len(donors) > 0 else None
