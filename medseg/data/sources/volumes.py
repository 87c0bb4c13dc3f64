"""The ``volumes`` source: ``<name><image_suffix>.<ext>`` + ``<name><label_suffix>.<ext>`` pairs (NIfTI, NRRD, MHA/MHD).

Each volume is first reoriented (``data.orientation``, `medseg.data.orientation`), then each
axial slice is a 2.5D sample: the slice with ``data.context_slices`` (k) neighbours on each
side as channels (edges replicate). Predictions are written per volume as ``STEM_prob.<ext>``
(float32) and ``STEM_mask.<ext>`` (uint8), turned back to the input's own orientation, with
its header/affine.

The machinery here (`VolumeCase`, `load_cases`, `VolumeWriter`, `LabelReader`) is shared by
the other volumetric sources (``nnunet``, ``datalist``, ``dicom_series``): a case is one or
more image files (one per channel, or a 4D channel-last file, or a DICOM series, or 2D image
files read as a volume of one slice) and an optional label. Several channels are stacked
channel-major: channel c's slices z-k..z+k, then channel c+1's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from medseg.data.cache import SKIP, context_image, mask_slice
from medseg.data.dicom_series import read_series
from medseg.data.orientation import VolumeGeometry
from medseg.data.preprocess import fg_fraction, normalize, resize_image, resize_mask
from medseg.data.readers import IMAGE_EXTS, VOLUME_EXTS, read_image_2d, read_volume, read_volume_channels, volume_format
from medseg.data.readers import volume_stem
from medseg.data.schema import DataConfig
from medseg.data.sources.base import BadFiles, Cases, LoadedData, Sample, SourceSpec
from medseg.data.sources.base import distinct_values, finish, listed_files, modality_name, progress_items, register_source
from medseg.data.sources.base import require_root, sample_list
from medseg.data.writers import write_png_mask, write_png_prob, write_volume_geometry, write_volume_like
from medseg.errors import MedsegError

# CT values are Hounsfield units: air is -1000, nothing else goes that low.
_CT_MIN_THRESHOLD = -500.0
_DICOM_MODALITY = {"CT": "ct", "MR": "mr", "PT": "other", "US": "us"}


@dataclass
class VolumeCase:
    """One volume to load.

    Attributes:
        name: the volume id (sample ids are ``{name}_z{idx:04d}``; predictions are named by it).
        images: the image file(s): one per channel (nnU-Net), one file (possibly 4D channel-last),
            2D image files (a volume of one slice), or -- with `series` -- the series' folder.
        label: the label file (a volume, or a 2D image for 2D cases), or None.
        keys: keys looked up in data.cases_csv (the first found gives the case id).
        case_id: the case id without cases_csv (default: name).
        series: the files of a DICOM series (then `images` is its folder).
        modalities: per channel 'ct', 'mr', ... or None to decide from the values (modality: auto).
    """

    name: str
    images: list[Path]
    label: Optional[Path] = None
    keys: list[str] = field(default_factory=list)
    case_id: Optional[str] = None
    series: Optional[list[Path]] = None
    modalities: Optional[list[Optional[str]]] = None


def is_image_2d(path: Path) -> bool:
    """A 2D image file (PNG, JPG, TIFF, BMP), read as a volume of one slice."""
    return Path(path).suffix.lower() in IMAGE_EXTS and volume_format(path) is None


def _image_2d_channels(path: Path) -> np.ndarray:
    """(C, 1, H, W) from a 2D image: grey C = 1, colour C = 3."""
    raw = read_image_2d(path)
    chw = raw[None] if raw.ndim == 2 else np.moveaxis(raw, -1, 0)
    return np.ascontiguousarray(chw[:, None])


def read_case_image(case: VolumeCase, orientation: str) -> tuple[np.ndarray, Optional[tuple], dict, str, list[Path]]:
    """The case's image as (C, Z, H, W) float32, reoriented.

    Args:
        case: the case.
        orientation: data.orientation.

    Returns:
        (channels, spacing (z, row, col) or None, the first file's header info, the frame every
        other file of the case is read in, the file each channel came from).

    Raises:
        MedsegError: a file unreadable, or the channels differ in shape; names the file.
    """
    if case.series is not None:
        vol, spacing, info = read_series(case.series, orientation=orientation, where=case.images[0])
        return vol[None], spacing, info, info["orientation"]["frame"], [case.images[0]]
    chans, sources = [], []
    spacing, info, frame = None, {}, orientation
    first: Optional[Path] = None
    for path in case.images:
        if is_image_2d(path):
            c = _image_2d_channels(path)
            if first is None:
                info, frame = {"format": "image", "shape": [c.shape[3], c.shape[2]]}, "as_stored"
        else:
            c, sp, inf = read_volume_channels(path, orientation=frame)
            if first is None:
                spacing, info, frame = sp, inf, inf["orientation"]["frame"]
        if first is not None and c.shape[1:] != chans[0].shape[1:]:
            raise MedsegError(f"{path}: channel shape (Z,H,W) {list(c.shape[1:])} differs from "
                              f"{first.name} {list(chans[0].shape[1:])}")
        first = first or path
        chans.append(c)
        sources.extend([path] * c.shape[0])
    return np.concatenate(chans, axis=0), spacing, info, frame, sources


def read_label(path: Path, frame: str) -> np.ndarray:
    """A label as (Z, H, W) with its stored values: a volume read in `frame`, or a 2D image as one slice.

    Args:
        path: the label file.
        frame: the frame the case's image was read in (read_case_image).
    """
    if is_image_2d(path):
        m = read_image_2d(path, as_mask=True)
        return (m.max(axis=-1) if m.ndim == 3 else m)[None]  # colour labels: any channel > 0
    return read_volume(path, dtype=None, orientation=frame)[0]


def _named(err: MedsegError, case: VolumeCase) -> Path:
    """The file (or series folder) a read error names, so bad_files.json lists the file at fault."""
    msg = str(err)
    for p in sorted([*case.images, *(case.series or [])], key=lambda q: -len(str(q))):
        if msg.startswith(f"{p}: "):
            return p
    return case.images[0]


def _auto_modality(vol: np.ndarray) -> str:
    finite = vol[np.isfinite(vol)] if vol.size else vol
    # an all-NaN volume is refused by normalize, by name; nanmin would only warn here
    return "ct" if finite.size and float(finite.min()) < _CT_MIN_THRESHOLD else "mr"


def _prepare_case(cfg: DataConfig, case: VolumeCase, bad: BadFiles, store, files: list, refused) -> Optional[dict]:
    """Read, reorient, normalise and resize one volume case into the store, slice by slice; None when it is bad (reported).

    The volume is kept once, as (Z, C, h, w) prepared slices (and a (Z, h, w) mask); each 2.5D
    sample is assembled from it (`cache.context_image`) rather than stored as its own stack.
    """
    ipath = case.images[0]
    try:
        chans, spacing, info, frame, chan_files = read_case_image(case, cfg.orientation)
    except MedsegError as e:
        bad.error(_named(e, case), e)
        return None
    flat = info.get("format") == "image"
    why = refused(case, chans.shape[0], flat, None)
    if why is not None:
        bad.report(*why)
        return None
    label = None
    raw_values = None
    if case.label is not None:
        try:
            label = read_label(case.label, frame)
        except MedsegError as e:
            bad.error(case.label, e)
            return None
        if label.shape != chans.shape[1:]:
            bad.report(case.label, f"label shape (Z,H,W) {list(label.shape)} differs from image "
                                   f"{ipath.name} {list(chans.shape[1:])}")
            return None
        if np.issubdtype(label.dtype, np.floating) and np.isnan(label).any():
            bad.report(case.label, "label holds NaN values")
            return None
        raw_values = distinct_values(label)
        why = refused(case, chans.shape[0], flat, raw_values)
        if why is not None:
            bad.report(*why)
            return None
    norm = []
    modalities = []
    try:
        for c in range(chans.shape[0]):
            if cfg.modality != "auto":
                modality = cfg.modality
            elif case.modalities and c < len(case.modalities) and case.modalities[c]:
                modality = case.modalities[c]
            elif case.series is not None:
                modality = _DICOM_MODALITY.get((info.get("Modality") or "").upper()) or _auto_modality(chans[c])
            else:
                modality = "other" if flat else _auto_modality(chans[c])
            # each channel (modality) on its own scale: a T1 and a FLAIR share no intensity range
            norm.append(normalize(chans[c], cfg.normalize, modality, where=str(chan_files[c])))
            modalities.append(modality)
    except MedsegError as e:
        bad.error(chan_files[len(norm)], e)
        return None
    del chans
    Z, H, W = norm[0].shape
    slice_spacing = [spacing[1], spacing[2]] if spacing is not None else None
    prepared, masks, slices = [], [], []
    for z in range(Z):
        # each slice resized once; its 2.5D neighbours come from the prepared volume
        img, rinfo = resize_image(np.stack([v[z] for v in norm]), cfg.input_size, cfg.resize_mode, slice_spacing, cfg.target_spacing)
        prepared.append(img)
        meta = {
            "path": str(ipath), "mask_path": str(case.label) if case.label else None, "orig_shape": [H, W],
            "resize": rinfo, "spacing": slice_spacing, "volume": case.name, "slice": z, "n_slices": Z,
            "raw_mask_values": raw_values, "fg_fraction": None, "orientation": frame,
        }
        if label is not None:
            sl = label[z] > 0
            masks.append(resize_mask(sl, cfg.input_size, cfg.resize_mode, slice_spacing, cfg.target_spacing))
            meta["fg_fraction"] = fg_fraction(sl)
        slices.append(meta)
    del norm
    volume = {
        "path": str(ipath), "label_path": str(case.label) if case.label else None, "shape": info["shape"],
        "spacing": list(spacing) if spacing is not None else None, "format": info["format"],
        "slice_ids": [f"{case.name}_z{z:04d}" for z in range(Z)], "orientation": frame,
    }
    if len(case.images) > 1:
        volume["channel_paths"] = [str(p) for p in case.images]
    if case.series is not None:
        volume.update(geometry=info["geometry"], series_uid=info["series_uid"])
    record = {"n_image_channels": len(modalities), "flat": flat, "raw_values": raw_values, "modalities": modalities,
              "slices": slices, "volume": volume}
    arrays = {"image": np.stack(prepared), "mask": np.stack(masks) if label is not None else None}
    return store.put(case.name, arrays, record, files)


def load_cases(cfg: DataConfig, cases_in: list[VolumeCase], bad: BadFiles, source: str, where: Path, progress: bool,
               store, label_check=None, n_channels: Optional[int] = None, channels_from: str = "", only=None) -> LoadedData:
    """Read, reorient, normalise and slice volume cases into 2.5D samples (every volumetric source ends here).

    Args:
        cfg: the data config (orientation, normalize, context_slices, input_size, resize_mode, cases_csv).
        cases_in: the cases, in the order samples should come.
        bad: where per-file problems go.
        source: the registered source name put in LoadedData.
        where: what an empty result names.
        progress: show a progress bar.
        store: where each prepared case goes (`medseg.data.cache`: memory or the on-disk cache).
        label_check: optional callable (label path, distinct raw values) -> reason or None
            (e.g. nnU-Net's declared label values).
        n_channels: the image channels every case must have (nnU-Net's channel_names), or None.
        channels_from: where `n_channels` comes from, for the message.
        only: case ids to load (the others are passed over before anything is read); None: all.

    Returns:
        LoadedData; 3D cases give ``C * (2k + 1)`` channels, 2D cases ``C``.
    """
    cases = Cases(cfg)
    k = cfg.context_slices
    samples = sample_list(store)
    volumes: dict[str, dict] = {}
    mask_values: set = set()
    seen_modalities: set[str] = set()
    state = {"in_channels": None, "first_case": None}

    def refused(case: VolumeCase, n_image_channels: int, flat: bool, raw_values) -> Optional[tuple[Path, str]]:
        """(file, reason) when the case does not fit the others or the source's declarations, else None."""
        ipath = case.images[0]
        if n_channels is not None and n_image_channels != n_channels:
            return ipath, f"gives {n_image_channels} image channels, {channels_from} lists {n_channels}"
        n_ch = n_image_channels * (2 * (0 if flat else k) + 1)
        if state["in_channels"] is not None and n_ch != state["in_channels"]:
            return ipath, (f"gives {n_ch} input channels ({n_image_channels} image channels), "
                           f"case {state['first_case']} gave {state['in_channels']}")
        if raw_values is not None and label_check is not None:
            reason = label_check(case.label, raw_values)
            if reason:
                return case.label, reason
        return None

    for case in progress_items(cases_in, "Loading volumes", progress):
        ipath = case.images[0]
        try:
            case_id = cases.lookup(case.keys or [case.name], case.case_id or case.name)
        except MedsegError as e:
            bad.report(ipath, str(e))
            continue
        if only is not None and case_id not in only:
            continue
        files = [*case.images, *(case.series or []), *([case.label] if case.label is not None else [])]
        unit = store.restore(case.name, files)
        if unit is SKIP:  # another parallel builder prepares it
            continue
        if unit is None:
            unit = _prepare_case(cfg, case, bad, store, files, refused)
            if unit is None:
                continue
        else:
            why = refused(case, unit["n_image_channels"], unit["flat"], unit["raw_values"])
            if why is not None:
                bad.report(*why)
                continue
        kk = 0 if unit["flat"] else k
        if unit["raw_values"] is not None:
            mask_values.update(unit["raw_values"])
        seen_modalities.update(unit["modalities"])
        state["in_channels"] = unit["n_image_channels"] * (2 * kk + 1)
        state["first_case"] = state["first_case"] or case.name
        vol, labels = unit["arrays"]["image"], unit["arrays"]["mask"]
        for z, meta in enumerate(unit["slices"]):
            mask = mask_slice(labels, z) if labels is not None else None
            samples.append(Sample(sample_id=f"{case.name}_z{z:04d}", case_id=case_id, image=context_image(vol, z, kk),
                                  mask=mask, meta=meta))
        volumes[case.name] = unit["volume"]
    return finish(
        samples, bad, where, source, volumes=volumes, in_channels=state["in_channels"] or 1,
        mask_values=sorted(mask_values), modality=modality_name(cfg, seen_modalities),
    )


# ---------------------------------------------------------------------------------------
# The volumes source: pairs by file name


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


def _load_volumes(cfg: DataConfig, with_masks: bool, progress: bool, store, only=None) -> LoadedData:
    root = require_root(cfg)
    bad = BadFiles(cfg.skip_bad)
    pairs = _pair_volumes(cfg, _list_volumes(root, bad), with_masks, bad)
    cases = [VolumeCase(name=name, images=[ip], label=lp, keys=[name, volume_stem(ip)]) for name, ip, lp in pairs]
    return load_cases(cfg, cases, bad, "volumes", root, progress, store, only=only)


class LabelReader:
    """Original-resolution label slices (boolean), in the orientation the samples were read in.

    The last label read is kept: slices come in volume order.
    """

    def __init__(self):
        self._key: Optional[tuple] = None
        self._label: Optional[np.ndarray] = None

    def __call__(self, sample: Sample) -> np.ndarray:
        path = sample.meta["mask_path"]
        key = (path, sample.meta.get("orientation", "as_stored"))
        if key != self._key:
            self._label, self._key = read_label(Path(path), key[1]) > 0, key
        return self._label[sample.meta["slice"]]


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for ext in VOLUME_EXTS:
        if name.endswith(ext):
            return path.name[-len(ext):]
    return path.suffix


class VolumeWriter:
    """Per volume: STEM_prob.<ext> and STEM_mask.<ext> in the input's own orientation and geometry.

    A volume read from a file is written in the file's format with its header; a DICOM series
    is written as NIfTI with the affine built from its headers (it is not rewritten as DICOM);
    a 2D case (an image file read as a volume of one slice) as probs/STEM.png and
    masks/STEM.png, as the ``images`` source writes.
    """

    def __init__(self, output: Path, data_cfg: DataConfig):
        self.output = Path(output)
        self.output.mkdir(parents=True, exist_ok=True)
        self.image_suffix = data_cfg.image_suffix

    def write(self, loaded: LoadedData, unit: str, indices: list[int], prob: np.ndarray, mask: np.ndarray) -> None:
        entry = loaded.volumes[unit]
        ref = Path(entry["path"])
        frame = entry.get("orientation", "as_stored")
        if entry.get("format") == "image":
            write_png_prob(self.output / "probs" / f"{unit}.png", prob[0])
            write_png_mask(self.output / "masks" / f"{unit}.png", mask[0])
            return
        if entry.get("format") == "dicom":
            geometry = VolumeGeometry.from_json(entry["geometry"])
            write_volume_geometry(self.output / f"{unit}_prob.nii.gz", prob.astype(np.float32), geometry, np.float32, frame)
            write_volume_geometry(self.output / f"{unit}_mask.nii.gz", mask.astype(np.uint8), geometry, np.uint8, frame)
            return
        suffix = _suffix(ref)
        stem = unit or volume_stem(ref)
        write_volume_like(self.output / f"{stem}_prob{suffix}", prob.astype(np.float32), ref, np.float32, frame)
        write_volume_like(self.output / f"{stem}_mask{suffix}", mask.astype(np.uint8), ref, np.uint8, frame)

    def close(self) -> None:
        pass


def _match_folder(path: Path, like: DataConfig) -> Optional[dict]:
    found = any(p.is_file() and not p.name.startswith(".") and volume_format(p) is not None for p in path.iterdir())
    return {} if found else None


SOURCE = register_source(SourceSpec(
    name="volumes",
    description="NIfTI/NRRD/MHA image + label volume pairs, reoriented, each axial slice a 2.5D sample with "
                "context_slices neighbours",
    load=_load_volumes,
    read_raw=lambda path: read_volume_channels(path)[0],
    mask_reader=LabelReader,
    writer=VolumeWriter,
    match_file=lambda path: {} if volume_format(path) else None,
    match_folder=_match_folder,
    volumetric=True,
))
