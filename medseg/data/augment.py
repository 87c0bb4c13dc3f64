"""Augmentation presets, named so config picks them: none | light | medium | heavy.

Geometric transforms come from albumentations and apply to image and mask together (masks
use nearest interpolation, so they stay binary; all 2.5D channels move together because
they are one multi-channel array). Intensity transforms are done here in numpy: images
arrive normalised (float32, about zero-mean unit-variance) and albumentations' pixel
transforms assume [0, 1] floats and clip to it, which would flatten a z-scored image.
"""

from __future__ import annotations

from typing import Callable, Optional

import albumentations as A
import cv2
import numpy as np

from medseg.errors import MedsegError

GEOMETRIC: dict[str, Callable[[float], A.BasicTransform]] = {
    "hflip": lambda p: A.HorizontalFlip(p=p),
    "vflip": lambda p: A.VerticalFlip(p=p),
    "affine": lambda p: A.Affine(
        scale=(0.85, 1.15), translate_percent=(-0.0625, 0.0625), rotate=(-15, 15),
        border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=p,
    ),
    "elastic": lambda p: A.ElasticTransform(alpha=30, sigma=6, border_mode=cv2.BORDER_CONSTANT, p=p),
    "grid_distortion": lambda p: A.GridDistortion(num_steps=5, distort_limit=0.2, border_mode=cv2.BORDER_CONSTANT, p=p),
}


def _brightness_contrast(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # in units of the normalised intensity: +-0.2 shift, x0.8..1.2 contrast about the mean
    m = img.mean()
    return (img - m) * rng.uniform(0.8, 1.2) + m + rng.uniform(-0.2, 0.2)


def _noise(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return img + rng.normal(0.0, rng.uniform(0.03, 0.12), size=img.shape).astype(np.float32)


def _blur(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    s = rng.uniform(0.5, 1.0)
    return cv2.GaussianBlur(img, (0, 0), sigmaX=s, sigmaY=s).reshape(img.shape)


def _gamma(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # gamma needs a [0, 1] range: map there and back so the intensity scale is unchanged
    lo, hi = float(img.min()), float(img.max())
    if hi - lo < 1e-6:
        return img
    u = (img - lo) / (hi - lo)
    return u ** rng.uniform(0.7, 1.5) * (hi - lo) + lo


INTENSITY: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "brightness_contrast": _brightness_contrast,
    "gamma": _gamma,
    "noise": _noise,
    "blur": _blur,
}
TRANSFORMS = [*GEOMETRIC, *INTENSITY]

PRESETS: dict[str, dict[str, float]] = {
    "none": {},
    "light": {"hflip": 0.5, "affine": 0.5},
    "medium": {"hflip": 0.5, "affine": 0.7, "brightness_contrast": 0.3, "gamma": 0.2, "noise": 0.2, "blur": 0.1},
    "heavy": {
        "hflip": 0.5, "vflip": 0.2, "affine": 0.8, "elastic": 0.2, "grid_distortion": 0.2,
        "brightness_contrast": 0.5, "gamma": 0.3, "noise": 0.3, "blur": 0.2,
    },
}


class Augmenter:
    """Geometric (albumentations) then intensity (numpy) transforms, reseedable per sample.

    Args:
        probs: transform name -> probability.
    """

    def __init__(self, probs: dict[str, float]):
        self.probs = {k: v for k, v in probs.items() if v > 0}
        geo = [GEOMETRIC[n](p) for n, p in self.probs.items() if n in GEOMETRIC]
        self.geometric = A.Compose(geo) if geo else None
        self.intensity = [(INTENSITY[n], p) for n, p in self.probs.items() if n in INTENSITY]
        self.rng = np.random.default_rng(0)

    def set_random_seed(self, seed: int) -> None:
        if self.geometric is not None:
            self.geometric.set_random_seed(seed)
        self.rng = np.random.default_rng(seed)

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> dict:
        """image (H, W, C) float32, mask (H, W) uint8 -> same shapes, transformed."""
        if self.geometric is not None:
            out = self.geometric(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        for fn, p in self.intensity:
            if self.rng.random() < p:
                image = fn(image, self.rng).astype(np.float32, copy=False)
        return {"image": image, "mask": mask}


def build_augment(preset: str, overrides: Optional[dict[str, float]] = None) -> Optional[Augmenter]:
    """The preset's transforms; overrides set a transform's probability (0 removes it,
    a name outside the preset adds it)."""
    if preset not in PRESETS:
        raise MedsegError(f"config error: augment.preset: unknown preset '{preset}'")
    probs = dict(PRESETS[preset])
    for name, p in (overrides or {}).items():
        if name not in TRANSFORMS:
            raise MedsegError(f"config error: augment.overrides.{name}: unknown transform; choose from {', '.join(TRANSFORMS)}")
        if not 0.0 <= p <= 1.0:
            raise MedsegError(f"config error: augment.overrides.{name}: probability must be in [0, 1]")
        probs[name] = p
    aug = Augmenter(probs)
    return aug if aug.probs else None
