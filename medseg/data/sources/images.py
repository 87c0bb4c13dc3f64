"""The ``images`` source: ``root/images_dir`` + ``root/masks_dir`` matched by file stem.

PNG, JPG, TIFF, BMP; grey or RGB (``data.color``); 8 or 16 bit. Predictions are written as
``probs/STEM.png`` (uint16, p = v/65535) and ``masks/STEM.png`` (0/255).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from medseg.data.cache import SKIP, repeat_channels
from medseg.data.preprocess import binarize_mask, fg_fraction, normalize, resize_image, resize_mask
from medseg.data.readers import IMAGE_EXTS, read_image_2d
from medseg.data.schema import DataConfig
from medseg.data.sources.base import BadFiles, Cases, LoadedData, Sample, SampleTally, SourceSpec
from medseg.data.sources.base import distinct_values, finish, listed_files, progress_items, register_source, require_root, sample_list
from medseg.data.writers import write_png_mask, write_png_prob
from medseg.errors import MedsegError

# A colour image whose channels differ by no more than this share of its value range is
# grey stored as RGB (JPEG chroma rounding makes "grey" RGB channels differ by 1-2 levels).
_GREY_TOLERANCE = 0.01
# ITU-R BT.601 luma, used when data.color is 'grey' and an image is really colour
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _list_by_stem(folder: Path, exts: tuple[str, ...], bad: BadFiles) -> tuple[dict[str, Path], set[str]]:
    """stem -> file for the files in `folder` with one of `exts`, and the stems that were duplicated."""
    files = listed_files(folder, bad, lambda p: p.suffix.lower() in exts)
    by_stem: dict[str, list[Path]] = {}
    for p in files:
        by_stem.setdefault(p.stem, []).append(p)
    out, dups = {}, set()
    for stem, paths in by_stem.items():
        if len(paths) > 1:
            names = ", ".join(p.name for p in paths)
            for p in paths:
                bad.report(p, f"duplicate stem '{stem}' with different extensions ({names})")
            dups.add(stem)
            continue
        out[stem] = paths[0]
    return out, dups


def _image_channels(arr: np.ndarray, color: str) -> tuple[np.ndarray, bool]:
    """(H, W[, 3]) raw -> ((C, H, W) with C 1 or 3, is_colour)."""
    if arr.ndim == 2:
        return arr[None], False
    chw = np.moveaxis(arr, -1, 0)
    rng = float(chw.max() - chw.min())
    diff = max(float(np.abs(chw[0] - chw[1]).max()), float(np.abs(chw[1] - chw[2]).max()))
    colour = diff > _GREY_TOLERANCE * rng
    if color == "rgb" or (color == "auto" and colour):
        return np.ascontiguousarray(chw), colour
    if colour:  # color: grey on a real colour image
        return np.tensordot(_LUMA, chw, axes=1)[None].astype(np.float32), colour
    return np.ascontiguousarray(chw[:1]), colour


def _mask_2d(arr: np.ndarray) -> np.ndarray:
    # colour masks: a pixel is foreground if any channel is > 0, so collapse by the channel max
    return arr.max(axis=-1) if arr.ndim == 3 else arr


def _prepare_image(cfg: DataConfig, path: Path, mask_path: Optional[Path], modality: str, bad: BadFiles, store,
                   files: list[Path]) -> Optional[dict]:
    """Read, normalise and resize one image (and its mask) into the store; None when it is bad (reported)."""
    try:
        raw = read_image_2d(path)
    except MedsegError as e:
        bad.error(path, e)
        return None
    H, W = raw.shape[:2]
    mask = None
    meta_mask: dict = {"mask_path": None, "raw_mask_values": None, "fg_fraction": None}
    if mask_path is not None:
        try:
            m = _mask_2d(read_image_2d(mask_path, as_mask=True))
        except MedsegError as e:
            bad.error(mask_path, e)
            return None
        if m.shape != (H, W):
            bad.report(mask_path, f"mask size {m.shape[0]}x{m.shape[1]} differs from image {path.name} size {H}x{W}")
            return None
        if np.isnan(m).any():
            bad.report(mask_path, "mask holds NaN values")
            return None
        fg, rule = binarize_mask(m)
        meta_mask = {"mask_path": str(mask_path), "raw_mask_values": distinct_values(m), "fg_fraction": fg_fraction(fg),
                     "mask_rule": rule}
        mask = resize_mask(fg, cfg.input_size, cfg.resize_mode)
    chw, colour = _image_channels(raw, cfg.color)
    try:
        norm = normalize(chw, cfg.normalize, modality, where=str(path))
    except MedsegError as e:
        bad.error(path, e)
        return None
    img, info = resize_image(norm, cfg.input_size, cfg.resize_mode)
    meta = {"path": str(path), **meta_mask, "orig_shape": [H, W], "resize": info, "spacing": None}
    return store.put(path.stem, {"image": img, "mask": mask}, {"colour": bool(colour), "meta": meta}, files)


def _load_images(cfg: DataConfig, with_masks: bool, progress: bool, store, only=None) -> LoadedData:
    root = require_root(cfg)
    bad = BadFiles(cfg.skip_bad)
    image_dups: set[str] = set()
    if root.is_file():  # a single image (prediction on one file)
        if root.suffix.lower() not in IMAGE_EXTS:
            raise MedsegError(f"{root}: not an image file ({', '.join(IMAGE_EXTS)})")
        img_dir, images = root.parent, {root.stem: root}
    else:
        img_dir = root / cfg.images_dir
        if not img_dir.is_dir():
            raise MedsegError(f"{img_dir}: images folder not found (data.root / data.images_dir)")
        images, image_dups = _list_by_stem(img_dir, IMAGE_EXTS, bad)
        if not images and not image_dups:
            raise MedsegError(f"no images found in {img_dir} (looked for {', '.join(IMAGE_EXTS)})")
    masks: dict[str, Path] = {}
    mask_dir = img_dir.parent / cfg.masks_dir if root.is_file() else root / cfg.masks_dir
    if with_masks:
        if not mask_dir.is_dir():
            raise MedsegError(f"{mask_dir}: masks folder not found (data.root / data.masks_dir)")
        masks, mask_dups = _list_by_stem(mask_dir, IMAGE_EXTS, bad)
        for stem in sorted(set(masks) - set(images) - image_dups):
            bad.report(masks[stem], f"mask has no image with the same stem in {img_dir}")
        images = {k: v for k, v in images.items() if k not in mask_dups}  # already reported
    cases = Cases(cfg)
    modality = cfg.modality if cfg.modality != "auto" else "other"

    samples = sample_list(store)
    # (stem, case_id, image (C,h,w) resized, mask, meta): held until the colour decision, which needs every
    # image; a tally (medseg cache) needs no channels and counts at once instead of holding every record
    prepared: list = []
    any_colour, mask_values = False, set()
    for stem in progress_items(sorted(images), "Loading images", progress):
        path = images[stem]
        mask_path = masks.get(stem)
        if with_masks and mask_path is None:
            bad.report(path, f"no mask with the same stem in {mask_dir}")
            continue
        try:
            case_id = cases.lookup([stem, path.name], stem)
        except MedsegError as e:
            bad.report(path, str(e))
            continue
        if only is not None and case_id not in only:
            continue
        files = [path, mask_path] if with_masks else [path]
        unit = store.restore(stem, files)
        if unit is SKIP:  # another parallel builder prepares it
            continue
        if unit is None:
            unit = _prepare_image(cfg, path, mask_path if with_masks else None, modality, bad, store, files)
            if unit is None:
                continue
        any_colour = any_colour or bool(unit["colour"])
        if unit["meta"]["raw_mask_values"] is not None:
            mask_values.update(unit["meta"]["raw_mask_values"])
        if isinstance(samples, SampleTally):
            samples.append(Sample(sample_id=stem, case_id=case_id, image=unit["arrays"]["image"], mask=unit["arrays"]["mask"],
                                  meta=unit["meta"]))
        else:
            prepared.append((stem, case_id, unit["arrays"]["image"], unit["arrays"]["mask"], unit["meta"]))

    # colour decision needs every image: 3 channels if asked, or (auto) if any image is colour
    in_channels = 3 if cfg.color == "rgb" or (cfg.color == "auto" and any_colour) else 1
    for stem, case_id, img, mask, meta in prepared:
        if img.shape[0] != in_channels:
            img = repeat_channels(img, in_channels)  # grey image in an RGB dataset
        samples.append(Sample(sample_id=stem, case_id=case_id, image=img, mask=mask, meta=meta))
    return finish(
        samples, bad, img_dir, "images", volumes={}, in_channels=in_channels,
        mask_values=sorted(mask_values), modality=modality,
    )


def _read_mask_original(sample: Sample) -> np.ndarray:
    return binarize_mask(_mask_2d(read_image_2d(sample.meta["mask_path"], as_mask=True)))[0]


class PngWriter:
    """probs/STEM.png (uint16 probabilities) and masks/STEM.png (0/255) per image."""

    def __init__(self, output: Path, data_cfg: Optional[DataConfig] = None):
        self.output = Path(output)
        (self.output / "probs").mkdir(parents=True)
        (self.output / "masks").mkdir()

    def write(self, loaded: LoadedData, unit: str, indices: list[int], prob: np.ndarray, mask: np.ndarray) -> None:
        write_png_prob(self.output / "probs" / f"{unit}.png", prob)
        write_png_mask(self.output / "masks" / f"{unit}.png", mask)

    def close(self) -> None:
        pass


def _has_images(folder: Path) -> bool:
    return any(p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTS for p in folder.iterdir())


def _match_file(path: Path) -> Optional[dict]:
    return {"images_dir": "."} if path.suffix.lower() in IMAGE_EXTS else None


def _match_folder(path: Path, like: DataConfig) -> Optional[dict]:
    # a folder holding the training images_dir (or images/), else a folder of images
    for sub in dict.fromkeys([like.images_dir, "images"]):
        folder = path / sub
        if sub not in ("", ".") and folder.is_dir() and _has_images(folder):
            return {"images_dir": sub}
    return {"images_dir": "."} if _has_images(path) else None


SOURCE = register_source(SourceSpec(
    name="images",
    description="images/ + masks/ folders matched by file stem (PNG, JPG, TIFF, BMP; grey or RGB)",
    load=_load_images,
    read_raw=read_image_2d,
    mask_reader=lambda: _read_mask_original,
    writer=PngWriter,
    match_file=_match_file,
    match_folder=_match_folder,
))


def prepare_image(raw: np.ndarray, cfg: DataConfig, in_channels: int, where: str = "image") -> tuple[np.ndarray, dict]:
    """One raw image array as a network input, exactly as the source prepares a file: channels, normalisation, resize.

    Args:
        raw: (H, W) or (H, W, 3) stored values (what `read_image_2d` returns).
        cfg: the run's data config (normalisation, input size, resize mode).
        in_channels: the network's input channels (1 grey, 3 RGB).
        where: how errors name the image.

    Returns:
        (C, h, w) float32 at the input size, and the resize info for `preprocess.to_original`.
    """
    raw = np.asarray(raw, dtype=np.float32)
    if raw.ndim == 3 and raw.shape[-1] == 4:
        raw = raw[..., :3]
    if not (raw.ndim == 2 or (raw.ndim == 3 and raw.shape[-1] == 3)) or min(raw.shape[:2]) == 0:
        raise MedsegError(f"{where}: expected a 2D grey (H, W) or RGB (H, W, 3) image, got shape {tuple(raw.shape)}")
    chw, _ = _image_channels(raw, "rgb" if in_channels == 3 else "grey")
    if chw.shape[0] != in_channels:
        chw = np.repeat(chw, in_channels, axis=0)
    norm = normalize(chw, cfg.normalize, cfg.modality if cfg.modality != "auto" else "other", where=where)
    return resize_image(norm, cfg.input_size, cfg.resize_mode)
