"""The ``volumes`` source: ``<name><image_suffix>.<ext>`` + ``<name><label_suffix>.<ext>`` NIfTI/NRRD pairs.

Each axial slice is a 2.5D sample: the slice with ``data.context_slices`` (k) neighbours on
each side as channels (edges replicate). Predictions are written per volume as
``STEM_prob.<ext>`` (float32) and ``STEM_mask.<ext>`` (uint8) with the input's header/affine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from medseg.data.preprocess import fg_fraction, normalize, resize_image, resize_mask
from medseg.data.readers import VOLUME_EXTS, read_volume, volume_format, volume_stem
from medseg.data.schema import DataConfig
from medseg.data.sources.base import BadFiles, Cases, LoadedData, Sample, SourceSpec
from medseg.data.sources.base import distinct_values, finish, listed_files, modality_name, progress_items, register_source
from medseg.data.sources.base import require_root
from medseg.data.writers import write_volume_like
from medseg.errors import MedsegError

# CT values are Hounsfield units: air is -1000, nothing else goes that low.
_CT_MIN_THRESHOLD = -500.0


def _list_volumes(root: Path, bad: BadFiles) -> list[Path]:
    if root.is_file():
        if volume_format(root) is None:
            raise MedsegError(f"{root}: not a volume file ({', '.join(VOLUME_EXTS)})")
        return [root]
    files = listed_files(root, bad, lambda p: volume_format(p) is not None)
    if not files:
        raise MedsegError(f"no volumes found in {root} (looked for {', '.join(VOLUME_EXTS)})")
    return files


def _pair_volumes(cfg: DataConfig, files: list[Path], with_masks: bool, bad: BadFiles) -> list[tuple[str, Path, Optional[Path]]]:
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
    root = require_root(cfg)
    bad = BadFiles(cfg.skip_bad)
    pairs = _pair_volumes(cfg, _list_volumes(root, bad), with_masks, bad)
    cases = Cases(cfg)
    k = cfg.context_slices
    samples: list[Sample] = []
    volumes: dict[str, dict] = {}
    mask_values: set = set()
    seen_modalities: set[str] = set()
    for name, ipath, lpath in progress_items(pairs, "Loading volumes", progress):
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
            raw_values = distinct_values(label)
            mask_values.update(raw_values)
        if cfg.modality != "auto":
            modality = cfg.modality
        else:
            finite = vol[np.isfinite(vol)] if vol.size else vol
            # an all-NaN volume is refused by normalize below, by name; nanmin would only warn here
            modality = "ct" if finite.size and float(finite.min()) < _CT_MIN_THRESHOLD else "mr"
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
    return finish(
        samples, bad, root, "volumes", volumes=volumes, in_channels=2 * k + 1,
        mask_values=sorted(mask_values), modality=modality_name(cfg, seen_modalities),
    )


class _LabelReader:
    """Original-resolution slices of label volumes; the last volume read is kept (slices come in volume order)."""

    def __init__(self):
        self._path: Optional[str] = None
        self._label: Optional[np.ndarray] = None

    def __call__(self, sample: Sample) -> np.ndarray:
        path = sample.meta["mask_path"]
        if path != self._path:
            self._label, self._path = read_volume(path, dtype=None)[0] > 0, path
        return self._label[sample.meta["slice"]]


class VolumeWriter:
    """STEM_prob.<ext> and STEM_mask.<ext> beside each other, in the input volume's geometry."""

    def __init__(self, output: Path, data_cfg: DataConfig):
        self.output = Path(output)
        self.output.mkdir(parents=True, exist_ok=True)
        self.image_suffix = data_cfg.image_suffix

    def write(self, loaded: LoadedData, unit: str, indices: list[int], prob: np.ndarray, mask: np.ndarray) -> None:
        ref = Path(loaded.volumes[unit]["path"])
        suffix = ".nii.gz" if ref.name.endswith(".nii.gz") else ref.suffix
        stem = volume_stem(ref)
        # brain1_image.nrrd -> brain1_prob.nrrd / brain1_mask.nrrd (beside brain1_label.nrrd)
        if self.image_suffix and stem.endswith(self.image_suffix) and len(stem) > len(self.image_suffix):
            stem = stem[: -len(self.image_suffix)]
        write_volume_like(self.output / f"{stem}_prob{suffix}", prob.astype(np.float32), ref, dtype=np.float32)
        write_volume_like(self.output / f"{stem}_mask{suffix}", mask.astype(np.uint8), ref, dtype=np.uint8)

    def close(self) -> None:
        pass


def _match_folder(path: Path, like: DataConfig) -> Optional[dict]:
    found = any(p.is_file() and not p.name.startswith(".") and volume_format(p) is not None for p in path.iterdir())
    return {} if found else None


SOURCE = register_source(SourceSpec(
    name="volumes",
    description="NIfTI/NRRD image + label volume pairs, each axial slice a 2.5D sample with context_slices neighbours",
    load=_load_volumes,
    read_raw=lambda path: read_volume(path)[0],
    mask_reader=_LabelReader,
    writer=VolumeWriter,
    match_file=lambda path: {} if volume_format(path) else None,
    match_folder=_match_folder,
    volumetric=True,
))
