"""Augmentation presets, named so config picks them: none | light | medium | heavy.

Geometric transforms come from albumentations and apply to image and mask together: the
mask uses nearest-neighbour interpolation, so it stays binary, and all 2.5D channels move
together because they are one multi-channel array. Pixels moved in from outside the image
are filled with 0, the mean of a normalised image (mask: background). Intensity transforms
are done here in numpy/OpenCV: images arrive normalised (float32, about zero-mean
unit-variance) and albumentations' pixel transforms assume [0, 1] floats (or uint8) and
clip to that range, which would flatten a z-scored image.

Transforms (name: what it does, parameters); geometric first, in this order:

* ``hflip``: left-right mirror.
* ``vflip``: up-down mirror.
* ``affine``: scale x0.85..1.15, shift +-6.25 % of the size, rotate +-15 degrees, bilinear.
* ``rotate``: rotation only, +-30 degrees, bilinear (no 90-degree turns or transposes,
  which would put anatomy where it never is).
* ``elastic``: elastic deformation, alpha 60, sigma 6 pixels (about 1 px mean, 2-3 px
  largest displacement: small lesions keep their shape).
* ``grid_distortion``: 5 x 5 grid, each cell stretched by up to +-20 %.
* ``optical_distortion``: camera-lens (barrel/pincushion) distortion, k in +-0.2.

then intensity, in this order, in units of the normalised intensity:

* ``clahe``: contrast-limited adaptive histogram equalisation per channel, clip limit
  1..3, 8 x 8 tiles; the intensity range of each channel is kept (see `clahe`).
* ``brightness_contrast``: contrast x0.8..1.2 about the image mean, then shift +-0.2.
* ``gamma``: gamma 0.7..1.5 on the image mapped to [0, 1] and back (range kept).
* ``blur``: Gaussian blur, sigma 0.5..1.0 pixels.
* ``noise``: additive Gaussian noise, standard deviation 0.03..0.12.

Intensity transforms act on all channels at once (2.5D neighbours get the same change),
except CLAHE, which equalises each channel on its own histogram.

Presets (probability that each transform fires) are in `PRESETS`; ``augment.overrides``
sets any transform's probability (0 removes it, a name outside the preset adds it).

Reproducibility: `Augmenter.set_random_seed` reseeds every transform from (seed, the
transform's name), so one seed always gives the same augmentation -- a resumed run replays
what the uninterrupted run drew -- and transforms fire independently of each other.
"""

from __future__ import annotations

from typing import Callable, Optional

import albumentations as A
import cv2
import numpy as np

from medseg.errors import MedsegError

_FILL = {"border_mode": cv2.BORDER_CONSTANT, "fill": 0, "fill_mask": 0}
_NEAREST_MASK = {"mask_interpolation": cv2.INTER_NEAREST}

GEOMETRIC: dict[str, Callable[[float], A.BasicTransform]] = {
    "hflip": lambda p: A.HorizontalFlip(p=p),
    "vflip": lambda p: A.VerticalFlip(p=p),
    "affine": lambda p: A.Affine(
        scale=(0.85, 1.15), translate_percent=(-0.0625, 0.0625), rotate=(-15, 15), **_FILL, **_NEAREST_MASK, p=p
    ),
    "rotate": lambda p: A.Rotate(limit=(-30, 30), **_FILL, **_NEAREST_MASK, p=p),
    "elastic": lambda p: A.ElasticTransform(alpha=60, sigma=6, **_FILL, **_NEAREST_MASK, p=p),
    "grid_distortion": lambda p: A.GridDistortion(num_steps=5, distort_limit=0.2, **_FILL, **_NEAREST_MASK, p=p),
    "optical_distortion": lambda p: A.OpticalDistortion(distort_limit=0.2, mode="camera", **_FILL, **_NEAREST_MASK, p=p),
}


def clahe(img: np.ndarray, clip_limit: float, tile_grid: tuple[int, int] = (8, 8)) -> np.ndarray:
    """CLAHE of a normalised float image (H, W, C), channel by channel, range kept.

    OpenCV's CLAHE works on uint8/uint16 histograms, and a z-scored image has no fixed
    range, so each channel is mapped by its own min/max to 0..255 uint8, equalised, and
    mapped back to the same min/max (256 levels are plenty for an augmentation).

    Args:
        img: float32 (H, W, C).
        clip_limit: OpenCV clipLimit (contrast amplification limit per tile).
        tile_grid: tiles along (x, y).
    """
    op = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=tuple(tile_grid))
    out = np.empty_like(img, dtype=np.float32)
    for c in range(img.shape[2]):
        ch = img[..., c]
        lo, hi = float(ch.min()), float(ch.max())
        if hi - lo < 1e-6:  # a flat channel has no histogram to equalise
            out[..., c] = ch
            continue
        u8 = np.round((ch - lo) * (255.0 / (hi - lo))).astype(np.uint8)
        out[..., c] = op.apply(u8).astype(np.float32) * ((hi - lo) / 255.0) + lo
    return out


def _clahe(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return clahe(img, clip_limit=rng.uniform(1.0, 3.0))


def _brightness_contrast(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    m = img.mean()
    return (img - m) * rng.uniform(0.8, 1.2) + m + rng.uniform(-0.2, 0.2)


def _gamma(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # gamma needs a [0, 1] range: map there and back so the intensity scale is unchanged
    lo, hi = float(img.min()), float(img.max())
    if hi - lo < 1e-6:
        return img
    u = (img - lo) / (hi - lo)
    return u ** rng.uniform(0.7, 1.5) * (hi - lo) + lo


def _blur(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    s = rng.uniform(0.5, 1.0)
    return cv2.GaussianBlur(img, (0, 0), sigmaX=s, sigmaY=s).reshape(img.shape)


def _noise(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return img + rng.normal(0.0, rng.uniform(0.03, 0.12), size=img.shape).astype(np.float32)


INTENSITY: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "clahe": _clahe,  # first: equalising after noise would amplify the noise
    "brightness_contrast": _brightness_contrast,
    "gamma": _gamma,
    "blur": _blur,
    "noise": _noise,  # last: acquisition noise is not blurred
}
TRANSFORMS = [*GEOMETRIC, *INTENSITY]

PRESETS: dict[str, dict[str, float]] = {
    "none": {},
    "light": {"hflip": 0.5, "affine": 0.5},
    "medium": {
        "hflip": 0.5, "affine": 0.7,
        "brightness_contrast": 0.3, "gamma": 0.2, "blur": 0.1, "noise": 0.2,
    },
    "heavy": {
        "hflip": 0.5, "vflip": 0.2, "affine": 0.8,
        "elastic": 0.2, "grid_distortion": 0.2, "optical_distortion": 0.2,
        "clahe": 0.2, "brightness_contrast": 0.5, "gamma": 0.3, "blur": 0.2, "noise": 0.3,
    },
}


def _sub_seed(seed: int, name: str) -> int:
    # Keyed by the transform's registry position, not its place in this Augmenter, so adding
    # or removing one transform does not change what the others draw.
    return int(np.random.SeedSequence([int(seed), TRANSFORMS.index(name)]).generate_state(1)[0])


class Augmenter:
    """Geometric (albumentations) then intensity (numpy) transforms, reseedable per sample.

    Args:
        probs: transform name (from `TRANSFORMS`) -> probability; 0 leaves it out.
    """

    def __init__(self, probs: dict[str, float]):
        self.probs = {n: float(probs[n]) for n in TRANSFORMS if probs.get(n, 0) > 0}
        self.geometric_names = [n for n in self.probs if n in GEOMETRIC]
        self.geometric = (
            A.Compose([GEOMETRIC[n](self.probs[n]) for n in self.geometric_names], save_applied_params=True)
            if self.geometric_names else None
        )
        self.intensity_names = [n for n in self.probs if n in INTENSITY]
        self.set_random_seed(0)

    def set_random_seed(self, seed: int) -> None:
        """Make the next call a function of `seed` only (call before every sample)."""
        if self.geometric is not None:
            self.geometric.set_random_seed(seed)
            # Compose hands every child the same seed, which makes their "does it fire"
            # draws identical (hflip fires exactly when affine does): give each its own.
            for name, t in zip(self.geometric_names, self.geometric.transforms):
                t.set_random_seed(_sub_seed(seed, name))
        self.rngs = {n: np.random.default_rng(_sub_seed(seed, n)) for n in self.intensity_names}

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> dict:
        """image (H, W, C) float32, mask (H, W) uint8 -> same shapes and dtypes, transformed.

        Returns:
            {"image", "mask", "applied": names of the transforms that fired, in order}.
        """
        applied: list[str] = []
        if self.geometric is not None:
            out = self.geometric(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
            by_class = {type(t).__name__: n for n, t in zip(self.geometric_names, self.geometric.transforms)}
            applied += [by_class[cls] for cls, _ in out["applied_transforms"]]
        for name in self.intensity_names:
            rng = self.rngs[name]
            if rng.random() < self.probs[name]:
                image = INTENSITY[name](image, rng).astype(np.float32, copy=False)
                applied.append(name)
        return {"image": image, "mask": mask, "applied": applied}


def resolve_probs(preset: str, overrides: Optional[dict[str, float]] = None) -> dict[str, float]:
    """The preset's probabilities with the overrides applied (0 kept, meaning 'off').

    Raises:
        MedsegError: unknown preset, unknown transform name, probability outside [0, 1].
    """
    if preset not in PRESETS:
        raise MedsegError(f"config error: augment.preset: unknown preset '{preset}'; choose from {', '.join(PRESETS)}")
    probs = dict(PRESETS[preset])
    for name, p in (overrides or {}).items():
        if name not in TRANSFORMS:
            raise MedsegError(f"config error: augment.overrides.{name}: unknown transform; choose from {', '.join(TRANSFORMS)}")
        if not 0.0 <= p <= 1.0:
            raise MedsegError(f"config error: augment.overrides.{name}: probability {p} must be in [0, 1]")
        probs[name] = float(p)
    return probs


def build_augment(preset: str, overrides: Optional[dict[str, float]] = None) -> Optional[Augmenter]:
    """The preset's transforms with overrides (0 removes one, a name outside the preset adds
    it); None when nothing is left to apply."""
    aug = Augmenter(resolve_probs(preset, overrides))
    return aug if aug.probs else None
