"""The ``siim`` source: a folder of DICOMs (searched recursively) + the SIIM-ACR RLE CSV.

The CSV is column-major relative RLE, ``-1`` for empty, several rows per image OR-ed, decoded
and encoded exactly as the competition defined it. Predictions are PNGs as for ``images`` plus
``submission.csv`` (ImageId, EncodedPixels).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import numpy as np

from medseg.data.cache import SKIP
from medseg.data.preprocess import fg_fraction, normalize, resize_image, resize_mask
from medseg.data.readers import read_dicom
from medseg.data.rle import read_rle_csv, rle_decode, write_rle_csv
from medseg.data.schema import DataConfig
from medseg.data.sources.base import BadFiles, Cases, LoadedData, Sample, SourceSpec
from medseg.data.sources.base import distinct_values, finish, modality_name, progress_items, register_source, require_root
from medseg.data.sources.base import sample_list
from medseg.data.sources.images import PngWriter
from medseg.errors import MedsegError

_DICOM_MODALITY = {"CR": "xray", "DX": "xray", "DR": "xray", "RG": "xray", "CT": "ct", "MR": "mr", "US": "us"}


class _RleRows:
    """The RLE table: its ImageIds at once, its rows on first need (a cached unit needs none).

    When the store is one of several parallel builders (`cache.ShardStore`), the rows of its own
    DICOMs alone are held, by file stem; a DICOM whose ImageId is another (its UID tag) makes it
    read the whole table, so no mask is ever made from rows it did not hold.
    """

    def __init__(self, csv: Path, files: list[str], store):
        self.csv, self.files, self.store, self.rows = csv, files, store, None
        self.ids = read_rle_csv(csv, rows=False)

    def __contains__(self, image_id: str) -> bool:
        return image_id in self.ids

    def __iter__(self):
        return iter(self.ids)

    def __getitem__(self, image_id: str):
        if self.rows is None:
            owned = [f for f in self.files if self.store.owns(f)]
            keep = None if len(owned) == len(self.files) else {Path(f).stem for f in owned}
            self.rows = read_rle_csv(self.csv, keep=keep)
        if self.rows[image_id] is None:  # not among the rows held
            self.rows = read_rle_csv(self.csv)
        return self.rows[image_id]


def _prepare_dicom(cfg: DataConfig, path: Path, rles, with_masks: bool, bad: BadFiles, store,
                   files: list) -> Optional[dict]:
    """Read one DICOM, decode its RLE rows, normalise and resize into the store; None when it is bad (reported).

    An ImageId with no RLE row is prepared without a mask; the loader reports it.
    """
    try:
        raw, dinfo = read_dicom(path)
    except MedsegError as e:
        bad.error(path, e)
        return None
    # the competition names each file <SOPInstanceUID>.dcm; fall back to the tag
    image_id = path.stem
    uid = dinfo.get("SOPInstanceUID")
    if with_masks and image_id not in rles and uid and uid in rles:
        image_id = uid
    H, W = raw.shape
    mask = None
    meta_mask: dict = {"mask_path": None, "raw_mask_values": None, "fg_fraction": None}
    if with_masks and image_id in rles:
        try:
            m = np.zeros((H, W), dtype=np.uint8)
            for r in rles[image_id]:
                m |= rle_decode(r, H, W)  # one row per lesion: OR them
        except ValueError as e:
            bad.report(cfg.rle_csv, f"ImageId {image_id} ({path.name}, {H}x{W}): {e}")
            return None
        meta_mask = {"mask_path": str(cfg.rle_csv), "raw_mask_values": distinct_values(m), "fg_fraction": fg_fraction(m)}
        mask = resize_mask(m, cfg.input_size, cfg.resize_mode, dinfo.get("PixelSpacing"), cfg.target_spacing)
    if cfg.modality != "auto":
        modality = cfg.modality
    else:
        modality = _DICOM_MODALITY.get((dinfo.get("Modality") or "").upper(), "other")
    try:
        norm = normalize(raw[None], cfg.normalize, modality, where=str(path))
    except MedsegError as e:
        bad.error(path, e)
        return None
    img, info = resize_image(norm, cfg.input_size, cfg.resize_mode, dinfo.get("PixelSpacing"), cfg.target_spacing)
    meta = {
        "path": str(path), **meta_mask, "orig_shape": [H, W], "resize": info,
        "spacing": dinfo.get("PixelSpacing"), "image_id": image_id,
        "patient_id": dinfo.get("PatientID"), "sop_instance_uid": uid,
    }
    record = {"image_id": image_id, "patient_id": dinfo.get("PatientID"), "modality": modality, "meta": meta}
    return store.put(str(path), {"image": img, "mask": mask}, record, files)


def _load_siim(cfg: DataConfig, with_masks: bool, progress: bool, store, only=None) -> LoadedData:
    root = require_root(cfg)
    bad = BadFiles(cfg.skip_bad)
    # interned strs, not Paths: held for the whole load (12k for SIIM), and each sample's
    # meta path (interned by the cache) is then the same object
    if root.is_file():
        files = [sys.intern(str(root))]
    else:
        files = sorted(sys.intern(str(p)) for p in root.rglob("*") if p.is_file() and p.suffix.lower() == ".dcm")
        if not files:
            raise MedsegError(f"no .dcm files found in {root} (searched sub-folders too)")
    if with_masks and cfg.rle_csv is None:
        raise MedsegError("config error: data.rle_csv: required for data.source 'siim' (the train-rle.csv)")
    # the CSV's size and mtime are in the entry's key: a cached unit needs none of its rows
    rles = _RleRows(cfg.rle_csv, files, store) if with_masks else {}
    cases = Cases(cfg)
    used: set[str] = set()
    seen_ids: dict[str, str] = {}
    seen_modalities: set[str] = set()
    samples = sample_list(store)
    mask_values: set = set()
    # one unit at a time: every unit restored up front was every record held at once
    for f in progress_items(files, "Loading DICOMs", progress):
        unit = store.restore(f, [f])
        if unit is SKIP:  # another parallel builder prepares it
            continue
        path = Path(f)
        if unit is None:
            unit = _prepare_dicom(cfg, path, rles, with_masks, bad, store, [f])
            if unit is None:
                continue
        image_id, meta = unit["image_id"], unit["meta"]
        if image_id in seen_ids:
            bad.report(path, f"ImageId {image_id} also read from {seen_ids[image_id]}")
            continue
        seen_ids[image_id] = f
        try:
            case_id = cases.lookup([image_id, path.stem], unit["patient_id"] or image_id)
        except MedsegError as e:
            bad.report(path, str(e))
            continue
        if only is not None and case_id not in only:
            continue  # the case id is the DICOM's patient: known only once its unit is read
        if with_masks:
            if image_id not in rles:
                bad.report(path, f"ImageId {image_id} has no row in {cfg.rle_csv}")
                continue
            used.add(image_id)
            mask_values.update(meta["raw_mask_values"])
        seen_modalities.add(unit["modality"])
        samples.append(Sample(sample_id=image_id, case_id=case_id, image=unit["arrays"]["image"],
                              mask=unit["arrays"]["mask"], meta=meta))
    if with_masks:
        # rows of images skipped as bad are not "missing": their DICOM exists
        missing = [i for i in rles if i not in used and i not in seen_ids]
        if missing:  # rarely: only then the file stems (a set of 12k strings for SIIM)
            stems = {Path(f).stem for f in files}
            missing = sorted(i for i in missing if i not in stems)
        if missing:
            if not cfg.skip_bad:
                more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
                raise MedsegError(f"{cfg.rle_csv}: ImageId {missing[0]}{more} has RLE rows but no DICOM file under {root}")
            for image_id in missing:
                bad.report(cfg.rle_csv, f"ImageId {image_id} has RLE rows but no DICOM file under {root}")
    return finish(
        samples, bad, root, "siim", volumes={}, in_channels=1,
        mask_values=sorted(mask_values), modality=modality_name(cfg, seen_modalities),
    )


class _RleMaskReader:
    """Original-resolution masks decoded from the RLE CSV named in each sample's meta (each CSV read once)."""

    def __init__(self):
        self._rle: dict[str, dict[str, list[str]]] = {}

    def __call__(self, sample: Sample) -> np.ndarray:
        meta = sample.meta
        csv_path = meta["mask_path"]
        if csv_path not in self._rle:
            self._rle[csv_path] = read_rle_csv(csv_path)
        H, W = meta["orig_shape"]
        m = np.zeros((H, W), dtype=bool)
        for r in self._rle[csv_path].get(meta.get("image_id") or sample.sample_id, []):
            m |= rle_decode(r, H, W) > 0
        return m


class SubmissionWriter(PngWriter):
    """PNG probabilities and masks, and submission.csv in the competition's RLE."""

    def __init__(self, output: Path, data_cfg: Optional[DataConfig] = None):
        super().__init__(output, data_cfg)
        self.rows: dict[str, np.ndarray] = {}

    def write(self, loaded: LoadedData, unit: str, indices: list[int], prob: np.ndarray, mask: np.ndarray) -> None:
        super().write(loaded, unit, indices, prob, mask)
        s = loaded.samples[indices[0]]
        self.rows[s.meta.get("image_id", s.sample_id)] = mask

    def close(self) -> None:
        write_rle_csv(self.output / "submission.csv", self.rows)


def _match_folder(path: Path, like: DataConfig) -> Optional[dict]:
    return {} if any(p.is_file() and p.suffix.lower() == ".dcm" for p in path.rglob("*")) else None


SOURCE = register_source(SourceSpec(
    name="siim",
    description="a folder of DICOMs (searched recursively) + the SIIM-ACR train-rle.csv",
    load=_load_siim,
    read_raw=lambda path: read_dicom(path)[0],
    mask_reader=_RleMaskReader,
    writer=SubmissionWriter,
    match_file=lambda path: {} if path.suffix.lower() == ".dcm" else None,
    match_folder=_match_folder,
))
