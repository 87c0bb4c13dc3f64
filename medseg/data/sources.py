"""Data sources: turn a `DataConfig` into normalised, resized `Sample`s.

Three sources (``data.source``):

* ``images``: ``root/images_dir`` + ``root/masks_dir`` matched by file stem;
* ``volumes``: ``<name><image_suffix>.<ext>`` + ``<name><label_suffix>.<ext>`` NIfTI/NRRD
  pairs in ``root``, each axial slice a 2.5D sample with ``context_slices`` neighbours;
* ``siim``: a folder of DICOMs (searched recursively) + the SIIM-ACR RLE CSV.

Conventions every caller relies on:

* masks are binary: any raw value > 0 is foreground; the raw values are recorded in
  ``meta['raw_mask_values']`` and ``LoadedData.mask_values`` (the data fingerprint);
* every per-file problem raises a one-line `MedsegError` starting with the file path, or,
  with ``data.skip_bad``, is listed in ``LoadedData.bad`` and the file skipped;
* ``meta['resize']`` is the resize_info for `preprocess.to_original`; volume samples
  carry ``volume``/``slice``/``n_slices`` so predictions can be stacked back and written
  with `writers.write_volume_like(path, vol, LoadedData.volumes[vid]['path'])`;
* ``cases_csv`` (optional, any source) maps a sample's natural case key -- image stem,
  volume name or SIIM ImageId -- in its ``case`` column to a patient id in ``group_column``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

import numpy as np

from medseg.config import DataConfig
from medseg.data.preprocess import fg_fraction, normalize, resize_image, resize_mask
from medseg.data.readers import (
    IMAGE_EXTS,
    VOLUME_EXTS,
    one_line,
    read_dicom,
    read_image_2d,
    read_volume,
    volume_format,
    volume_stem,
)
from medseg.data.rle import read_rle_csv, rle_decode
from medseg.errors import MedsegError

# A colour image whose channels differ by no more than this share of its value range is
# grey stored as RGB (JPEG chroma rounding makes "grey" RGB channels differ by 1-2 levels).
_GREY_TOLERANCE = 0.01
# CT values are Hounsfield units: air is -1000, nothing else goes that low.
_CT_MIN_THRESHOLD = -500.0
# ITU-R BT.601 luma, used when data.color is 'grey' and an image is really colour
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass
class Sample:
    """One 2D training/inference example.

    Attributes:
        sample_id: unique and filename-safe: image stem; ``{volume}_z{idx:04d}`` for volume
            slices; the ImageId for SIIM.
        case_id: the split unit (patient): from cases_csv, the DICOM PatientID (SIIM), else
            the volume name / image stem.
        image: float32 (C, H, W), normalised and resized to data.input_size.
        mask: uint8 (H, W) in {0, 1} at data.input_size, or None when loaded without masks.
        meta: JSON-serialisable facts (path, mask_path, orig_shape, resize, spacing, ...).
    """

    sample_id: str
    case_id: str
    image: np.ndarray
    mask: Optional[np.ndarray]
    meta: dict = field(default_factory=dict)


@dataclass
class LoadedData:
    """Everything `load_data` produced.

    Attributes:
        samples: the samples, in sorted file order (volume slices in slice order).
        bad: {"path", "reason"} for each file skipped under data.skip_bad.
        volumes: volume id -> {"path", "label_path", "shape" (file array shape), "spacing"
            (z, row, col) or None, "format", "slice_ids"}; empty for 2D sources.
        source: 'images', 'volumes' or 'siim'.
        in_channels: channels of every sample image.
        mask_values: sorted union of the raw mask values seen.
        modality: the modality used ('ct', 'mr', 'xray', 'other', ..., or 'mixed').
    """

    samples: list[Sample]
    bad: list[dict]
    volumes: dict[str, dict]
    source: str
    in_channels: int
    mask_values: list
    modality: str


class _Bad:
    """Collects per-file problems: raise at once, or record and skip (data.skip_bad)."""

    def __init__(self, skip: bool):
        self.skip = skip
        self.items: list[dict] = []

    def report(self, path: Any, reason: str) -> None:
        reason = one_line(reason, limit=300)
        if not self.skip:
            raise MedsegError(f"{path}: {reason}")
        self.items.append({"path": str(path), "reason": reason})

    def error(self, path: Any, err: MedsegError) -> None:
        msg = str(err)
        prefix = f"{path}: "
        self.report(path, msg[len(prefix):] if msg.startswith(prefix) else msg)


def _progress(items: list, desc: str, enabled: bool) -> Iterator:
    if not enabled:
        yield from items
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True
    ) as bar:
        task = bar.add_task(desc, total=len(items))
        for item in items:
            yield item
            bar.advance(task)


def _jsonable_values(values: Iterable) -> list:
    out = []
    for v in values:
        f = float(v)
        out.append(int(f) if f.is_integer() else f)
    return out


def _raw_values(mask: np.ndarray) -> list:
    return _jsonable_values(np.unique(mask))


def _require_root(cfg: DataConfig) -> Path:
    if cfg.root is None:
        raise MedsegError("config error: data.root: required (the dataset folder)")
    root = Path(cfg.root)
    if not root.exists():
        raise MedsegError(f"{root}: no such file or folder (data.root)")
    return root


def _read_cases_csv(path: Path, group_column: str) -> dict[str, str]:
    if not Path(path).is_file():
        raise MedsegError(f"{path}: no such file (data.cases_csv)")
    out: dict[str, str] = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in (next(reader, None) or [])]
            for col in ("case", group_column):
                if col not in header:
                    raise MedsegError(f"{path}: no column '{col}' (columns: {', '.join(header) or 'none'})")
            ic, ig = header.index("case"), header.index(group_column)
            for row in reader:
                if not row or all(not c.strip() for c in row):
                    continue
                line = reader.line_num
                if len(row) <= max(ic, ig):
                    raise MedsegError(f"{path} line {line}: expected {len(header)} columns, got {len(row)}")
                case, group = row[ic].strip(), row[ig].strip()
                if not case or not group:
                    raise MedsegError(f"{path} line {line}: empty 'case' or '{group_column}' value")
                if case in out and out[case] != group:
                    raise MedsegError(f"{path} line {line}: case '{case}' listed twice with different {group_column}")
                out[case] = group
    except (UnicodeDecodeError, csv.Error) as e:
        raise MedsegError(f"{path}: not a readable CSV file ({type(e).__name__})") from None
    return out


class _Cases:
    """case key -> case id, from data.cases_csv when given, else the fallback."""

    def __init__(self, cfg: DataConfig):
        self.path = cfg.cases_csv
        self.group_column = cfg.group_column
        self.map = _read_cases_csv(cfg.cases_csv, cfg.group_column) if cfg.cases_csv is not None else None

    def lookup(self, keys: list[str], fallback: str) -> str:
        """Case id for the first key found in the csv; raises MedsegError (caller reports it) if none is."""
        if self.map is None:
            return fallback
        for k in keys:
            if k in self.map:
                return self.map[k]
        raise MedsegError(f"not listed in column 'case' of {self.path}")


def _modality_name(cfg: DataConfig, seen: set[str]) -> str:
    if cfg.modality != "auto":
        return cfg.modality
    if not seen:
        return "other"
    return next(iter(seen)) if len(seen) == 1 else "mixed"


def _finish(samples: list[Sample], bad: _Bad, where: Path, source: str, **kw: Any) -> LoadedData:
    if not samples:
        if bad.items:
            first = bad.items[0]
            raise MedsegError(
                f"{where}: no usable data: all {len(bad.items)} file(s) were skipped as bad "
                f"(first: {first['path']}: {first['reason']})"
            )
        raise MedsegError(f"{where}: no usable data found")
    ids = [s.sample_id for s in samples]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise MedsegError(f"{where}: two files give the same sample id '{dup}'")
    return LoadedData(samples=samples, bad=bad.items, source=source, **kw)


# ---------------------------------------------------------------------------------------
# images


def _list_by_stem(folder: Path, exts: tuple[str, ...], bad: _Bad) -> tuple[dict[str, Path], set[str]]:
    """stem -> file for the files in `folder` with one of `exts`, and the stems that were duplicated."""
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in exts
    )
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


def _load_images(cfg: DataConfig, with_masks: bool, progress: bool) -> LoadedData:
    root = _require_root(cfg)
    bad = _Bad(cfg.skip_bad)
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
    cases = _Cases(cfg)
    modality = cfg.modality if cfg.modality != "auto" else "other"

    prepared = []  # (stem, image (C,H,W) resized, any_colour, mask, meta)
    for stem in _progress(sorted(images), "Loading images", progress):
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
        try:
            raw = read_image_2d(path)
        except MedsegError as e:
            bad.error(path, e)
            continue
        H, W = raw.shape[:2]
        mask = None
        meta_mask: dict = {"mask_path": None, "raw_mask_values": None, "fg_fraction": None}
        if with_masks:
            try:
                m = _mask_2d(read_image_2d(mask_path, as_mask=True))
            except MedsegError as e:
                bad.error(mask_path, e)
                continue
            if m.shape != (H, W):
                bad.report(mask_path, f"mask size {m.shape[0]}x{m.shape[1]} differs from image {path.name} size {H}x{W}")
                continue
            if np.isnan(m).any():
                bad.report(mask_path, "mask holds NaN values")
                continue
            meta_mask = {"mask_path": str(mask_path), "raw_mask_values": _raw_values(m), "fg_fraction": fg_fraction(m)}
            mask = resize_mask(m, cfg.input_size, cfg.resize_mode)
        chw, colour = _image_channels(raw, cfg.color)
        try:
            norm = normalize(chw, cfg.normalize, modality, where=str(path))
        except MedsegError as e:
            bad.error(path, e)
            continue
        img, info = resize_image(norm, cfg.input_size, cfg.resize_mode)
        meta = {"path": str(path), **meta_mask, "orig_shape": [H, W], "resize": info, "spacing": None}
        prepared.append((stem, case_id, img, colour, mask, meta))

    # colour decision needs every image: 3 channels if asked, or (auto) if any image is colour
    rgb = cfg.color == "rgb" or (cfg.color == "auto" and any(p[3] for p in prepared))
    in_channels = 3 if rgb else 1
    samples = []
    mask_values: set = set()
    for stem, case_id, img, _, mask, meta in prepared:
        if img.shape[0] != in_channels:
            img = np.repeat(img, in_channels, axis=0)  # grey image in an RGB dataset
        if meta["raw_mask_values"] is not None:
            mask_values.update(meta["raw_mask_values"])
        samples.append(Sample(sample_id=stem, case_id=case_id, image=img, mask=mask, meta=meta))
    return _finish(
        samples, bad, img_dir, "images", volumes={}, in_channels=in_channels,
        mask_values=sorted(mask_values), modality=modality,
    )


# ---------------------------------------------------------------------------------------
# volumes


def _list_volumes(root: Path) -> list[Path]:
    if root.is_file():
        if volume_format(root) is None:
            raise MedsegError(f"{root}: not a volume file ({', '.join(VOLUME_EXTS)})")
        return [root]
    files = sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith(".") and volume_format(p))
    if not files:
        raise MedsegError(f"no volumes found in {root} (looked for {', '.join(VOLUME_EXTS)})")
    return files


def _pair_volumes(cfg: DataConfig, files: list[Path], with_masks: bool, bad: _Bad) -> list[tuple[str, Path, Optional[Path]]]:
    isuf, lsuf = cfg.image_suffix, cfg.label_suffix
    imgs: dict[str, list[Path]] = {}
    labels: dict[str, list[Path]] = {}
    other: list[Path] = []
    for p in files:
        stem = volume_stem(p)
        if isuf and stem.endswith(isuf):
            imgs.setdefault(stem[: -len(isuf)], []).append(p)
        elif lsuf and stem.endswith(lsuf):
            labels.setdefault(stem[: -len(lsuf)], []).append(p)
        else:
            other.append(p)
    if not with_masks:
        # inference: files named with image_suffix if there are any, else every volume (a
        # folder or file of plain scans); label files are ignored
        if not imgs:
            for p in other:
                imgs.setdefault(volume_stem(p), []).append(p)
            other = []
        labels = {}
    for p in other:
        bad.report(p, f"file name ends with neither image_suffix '{isuf}' nor label_suffix '{lsuf}'")
    pairs = []
    for name in sorted(set(imgs) | set(labels)):
        ip, lp = imgs.get(name, []), labels.get(name, [])
        if len(ip) > 1 or len(lp) > 1:
            for p in ip + lp:
                bad.report(p, f"volume '{name}' has several files of one kind ({', '.join(q.name for q in ip + lp)})")
            continue
        if not ip:
            bad.report(lp[0], f"label has no image volume '{name}{isuf}.*' in {lp[0].parent}")
            continue
        if with_masks and not lp:
            bad.report(ip[0], f"image has no label volume '{name}{lsuf}.*' in {ip[0].parent}")
            continue
        pairs.append((name, ip[0], lp[0] if with_masks else None))
    return pairs


def _context_stack(vol: np.ndarray, z: int, k: int) -> np.ndarray:
    """(2k+1, H, W) slices z-k..z+k, edge slices repeated beyond the ends."""
    idx = np.clip(np.arange(z - k, z + k + 1), 0, vol.shape[0] - 1)
    return vol[idx]


def _load_volumes(cfg: DataConfig, with_masks: bool, progress: bool) -> LoadedData:
    root = _require_root(cfg)
    bad = _Bad(cfg.skip_bad)
    pairs = _pair_volumes(cfg, _list_volumes(root), with_masks, bad)
    cases = _Cases(cfg)
    k = cfg.context_slices
    samples: list[Sample] = []
    volumes: dict[str, dict] = {}
    mask_values: set = set()
    seen_modalities: set[str] = set()
    for name, ipath, lpath in _progress(pairs, "Loading volumes", progress):
        try:
            case_id = cases.lookup([name, volume_stem(ipath)], name)
        except MedsegError as e:
            bad.report(ipath, str(e))
            continue
        try:
            vol, spacing, info = read_volume(ipath)
        except MedsegError as e:
            bad.error(ipath, e)
            continue
        label = None
        raw_values = None
        if lpath is not None:
            try:
                label, _, _ = read_volume(lpath, dtype=None)
            except MedsegError as e:
                bad.error(lpath, e)
                continue
            if label.shape != vol.shape:
                bad.report(lpath, f"label shape (Z,H,W) {list(label.shape)} differs from image {ipath.name} {list(vol.shape)}")
                continue
            if np.issubdtype(label.dtype, np.floating) and np.isnan(label).any():
                bad.report(lpath, "label holds NaN values")
                continue
            raw_values = _raw_values(label)
            mask_values.update(raw_values)
        if cfg.modality != "auto":
            modality = cfg.modality
        else:
            modality = "ct" if vol.size and float(np.nanmin(vol)) < _CT_MIN_THRESHOLD else "mr"
        try:
            norm = normalize(vol, cfg.normalize, modality, where=str(ipath))
        except MedsegError as e:
            bad.error(ipath, e)
            continue
        seen_modalities.add(modality)
        Z, H, W = norm.shape
        slice_spacing = [spacing[1], spacing[2]] if spacing is not None else None
        slice_ids = []
        for z in range(Z):
            img, rinfo = resize_image(_context_stack(norm, z, k), cfg.input_size, cfg.resize_mode)
            mask = None
            meta = {
                "path": str(ipath), "mask_path": str(lpath) if lpath else None, "orig_shape": [H, W],
                "resize": rinfo, "spacing": slice_spacing, "volume": name, "slice": z, "n_slices": Z,
                "raw_mask_values": raw_values, "fg_fraction": None,
            }
            if label is not None:
                sl = label[z] > 0
                mask = resize_mask(sl, cfg.input_size, cfg.resize_mode)
                meta["fg_fraction"] = fg_fraction(sl)
            sid = f"{name}_z{z:04d}"
            slice_ids.append(sid)
            samples.append(Sample(sample_id=sid, case_id=case_id, image=img, mask=mask, meta=meta))
        volumes[name] = {
            "path": str(ipath), "label_path": str(lpath) if lpath else None, "shape": info["shape"],
            "spacing": list(spacing) if spacing is not None else None, "format": info["format"],
            "slice_ids": slice_ids,
        }
    return _finish(
        samples, bad, root, "volumes", volumes=volumes, in_channels=2 * k + 1,
        mask_values=sorted(mask_values), modality=_modality_name(cfg, seen_modalities),
    )


# ---------------------------------------------------------------------------------------
# siim


_DICOM_MODALITY = {"CR": "xray", "DX": "xray", "DR": "xray", "RG": "xray", "CT": "ct", "MR": "mr", "US": "us"}


def _load_siim(cfg: DataConfig, with_masks: bool, progress: bool) -> LoadedData:
    root = _require_root(cfg)
    bad = _Bad(cfg.skip_bad)
    if root.is_file():
        files = [root]
    else:
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() == ".dcm")
        if not files:
            raise MedsegError(f"no .dcm files found in {root} (searched sub-folders too)")
    rles: dict[str, list[str]] = {}
    if with_masks:
        if cfg.rle_csv is None:
            raise MedsegError("config error: data.rle_csv: required for data.source 'siim' (the train-rle.csv)")
        rles = read_rle_csv(cfg.rle_csv)
    cases = _Cases(cfg)
    used: set[str] = set()
    seen_ids: dict[str, Path] = {}
    seen_modalities: set[str] = set()
    samples: list[Sample] = []
    mask_values: set = set()
    for path in _progress(files, "Loading DICOMs", progress):
        try:
            raw, dinfo = read_dicom(path)
        except MedsegError as e:
            bad.error(path, e)
            continue
        # the competition names each file <SOPInstanceUID>.dcm; fall back to the tag
        image_id = path.stem
        uid = dinfo.get("SOPInstanceUID")
        if with_masks and image_id not in rles and uid and uid in rles:
            image_id = uid
        if image_id in seen_ids:
            bad.report(path, f"ImageId {image_id} also read from {seen_ids[image_id]}")
            continue
        seen_ids[image_id] = path
        try:
            case_id = cases.lookup([image_id, path.stem], dinfo.get("PatientID") or image_id)
        except MedsegError as e:
            bad.report(path, str(e))
            continue
        H, W = raw.shape
        mask = None
        meta_mask: dict = {"mask_path": None, "raw_mask_values": None, "fg_fraction": None}
        if with_masks:
            if image_id not in rles:
                bad.report(path, f"ImageId {image_id} has no row in {cfg.rle_csv}")
                continue
            used.add(image_id)
            try:
                m = np.zeros((H, W), dtype=np.uint8)
                for r in rles[image_id]:
                    m |= rle_decode(r, H, W)  # one row per lesion: OR them
            except ValueError as e:
                bad.report(cfg.rle_csv, f"ImageId {image_id} ({path.name}, {H}x{W}): {e}")
                continue
            meta_mask = {"mask_path": str(cfg.rle_csv), "raw_mask_values": _raw_values(m), "fg_fraction": fg_fraction(m)}
            mask_values.update(meta_mask["raw_mask_values"])
            mask = resize_mask(m, cfg.input_size, cfg.resize_mode)
        if cfg.modality != "auto":
            modality = cfg.modality
        else:
            modality = _DICOM_MODALITY.get((dinfo.get("Modality") or "").upper(), "other")
        try:
            norm = normalize(raw[None], cfg.normalize, modality, where=str(path))
        except MedsegError as e:
            bad.error(path, e)
            continue
        seen_modalities.add(modality)
        img, info = resize_image(norm, cfg.input_size, cfg.resize_mode)
        meta = {
            "path": str(path), **meta_mask, "orig_shape": [H, W], "resize": info,
            "spacing": dinfo.get("PixelSpacing"), "image_id": image_id,
            "patient_id": dinfo.get("PatientID"), "sop_instance_uid": uid,
        }
        samples.append(Sample(sample_id=image_id, case_id=case_id, image=img, mask=mask, meta=meta))
    if with_masks:
        # rows of images skipped as bad are not "missing": their DICOM exists
        present = set(seen_ids) | {p.stem for p in files}
        missing = sorted(set(rles) - used - present)
        if missing:
            if not cfg.skip_bad:
                more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
                raise MedsegError(f"{cfg.rle_csv}: ImageId {missing[0]}{more} has RLE rows but no DICOM file under {root}")
            for image_id in missing:
                bad.report(cfg.rle_csv, f"ImageId {image_id} has RLE rows but no DICOM file under {root}")
    return _finish(
        samples, bad, root, "siim", volumes={}, in_channels=1,
        mask_values=sorted(mask_values), modality=_modality_name(cfg, seen_modalities),
    )


# ---------------------------------------------------------------------------------------
# Public API

_LOADERS: dict[str, Callable[[DataConfig, bool, bool], LoadedData]] = {
    "images": _load_images,
    "volumes": _load_volumes,
    "siim": _load_siim,
}


def load_data(cfg: DataConfig, with_masks: bool = True, progress: bool = False) -> LoadedData:
    """Read, normalise and resize a dataset described by a `DataConfig`.

    Args:
        cfg: the data section of the run config (paths already resolved).
        with_masks: read masks/labels/RLE (training, evaluation); False for prediction,
            where no mask is needed and sample.mask is None.
        progress: show a rich progress bar while reading.

    Returns:
        LoadedData with the samples and facts about them.

    Raises:
        MedsegError: one line naming the file (or config key) at fault; with
            data.skip_bad, per-file problems are listed in LoadedData.bad instead, but an
            empty result is still an error.
    """
    return _LOADERS[cfg.source](cfg, with_masks, progress)


def _has_files(folder: Path, pred: Callable[[Path], bool]) -> bool:
    return any(p.is_file() and not p.name.startswith(".") and pred(p) for p in folder.iterdir())


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTS


def _is_dicom(p: Path) -> bool:
    return p.suffix.lower() == ".dcm"


def infer_input(path: Path, like: DataConfig) -> DataConfig:
    """A copy of a training `DataConfig` that reads `path` for prediction (load with with_masks=False).

    Keeps normalisation, input_size, resize_mode, context_slices, color, modality and
    image_suffix; drops masks, RLE and cases CSVs. Recognised inputs:

    * a folder of images, or a folder holding ``like.images_dir`` (or ``images/``) with
      images, or one image file -> 'images';
    * a .nii/.nii.gz/.nrrd file or a folder of them -> 'volumes';
    * a .dcm file or a folder (searched recursively) of them -> 'siim'.

    Args:
        path: what the user passed to `medseg predict`.
        like: the training run's data config.

    Raises:
        MedsegError: path missing, or nothing recognisable in it.
    """
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise MedsegError(f"{path}: no such file or folder")
    common = {"root": path, "rle_csv": None, "cases_csv": None}
    if path.is_file():
        if volume_format(path):
            return like.model_copy(update={**common, "source": "volumes"})
        if _is_dicom(path):
            return like.model_copy(update={**common, "source": "siim"})
        if _is_image(path):
            return like.model_copy(update={**common, "source": "images", "images_dir": "."})
        raise MedsegError(f"{path}: not an image ({', '.join(IMAGE_EXTS)}), volume ({', '.join(VOLUME_EXTS)}) or .dcm file")
    for sub in dict.fromkeys([like.images_dir, "images"]):
        folder = path / sub
        if sub not in ("", ".") and folder.is_dir() and _has_files(folder, _is_image):
            return like.model_copy(update={**common, "source": "images", "images_dir": sub})
    if _has_files(path, _is_image):
        return like.model_copy(update={**common, "source": "images", "images_dir": "."})
    if _has_files(path, lambda p: volume_format(p) is not None):
        return like.model_copy(update={**common, "source": "volumes"})
    if any(p.is_file() and _is_dicom(p) for p in path.rglob("*")):
        return like.model_copy(update={**common, "source": "siim"})
    raise MedsegError(f"{path}: no images ({', '.join(IMAGE_EXTS)}), volumes ({', '.join(VOLUME_EXTS)}) or .dcm files found")
