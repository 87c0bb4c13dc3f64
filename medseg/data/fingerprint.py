"""Dataset fingerprint: the statistics a plan, the doctor and the report read (fingerprint.json).

Two kinds of numbers:

* from the loaded samples (every image, at network input size): counts, original sizes,
  spacing, normalised intensities, empty-image fraction, foreground per positive image,
  lesions (8-connected components) at input size, and the same per split part;
* from the files again (`original_statistics`), because the loader keeps only normalised,
  resized arrays: raw intensities before normalisation (a bounded, evenly spread sample of
  files) and lesions at original resolution (positive images, also bounded). A lesion that
  is 3 pixels at the original size is the number that decides the input size, and it cannot
  be recovered from the resized mask, where `resize_mask` keeps it as at least one pixel.

Quantile summaries are dicts q00, q05, q25, q50, q75, q95, q100 and mean (`{}` when empty).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Iterable, Optional

import numpy as np
from scipy import ndimage

from medseg.data.sources import get_source
from medseg.errors import MedsegError

FINGERPRINT_VERSION = 2

# Files re-read for raw intensities: overall, or per split part when a split is given.
RAW_INTENSITY_MAX_FILES = 24
RAW_INTENSITY_MAX_FILES_PER_PART = 12
# Positive images re-read for lesions at original resolution, and at most this many volumes
# (a label volume holds many slices and is slow to read).
ORIGINAL_MASKS_MAX_IMAGES = 500
ORIGINAL_MASKS_MAX_VOLUMES = 20
# Percentiles of a large file are taken on an evenly strided subset of this many values.
_PERCENTILE_VALUES = 1_000_000
# 8-connectivity, as `resize_mask` uses: diagonal neighbours belong to the same lesion.
_EIGHT = np.ones((3, 3), dtype=bool)


def _q(values, qs=(0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)) -> dict:
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return {}
    return {f"q{int(q * 100):02d}": float(np.quantile(v, q)) for q in qs} | {"mean": float(v.mean())}


def lesion_areas(mask: np.ndarray) -> list[int]:
    """Pixel areas of the 8-connected foreground components of an (H, W) mask (> 0 is foreground)."""
    lab, n = ndimage.label(np.asarray(mask) > 0, structure=_EIGHT)
    return np.bincount(lab.ravel())[1:].tolist() if n else []


def _evenly(items: list, k: int) -> list:
    """At most k items spread evenly over the list (first and last included); all if k >= len."""
    if len(items) <= k:
        return list(items)
    idx = np.unique(np.round(np.linspace(0, len(items) - 1, k)).astype(int))
    return [items[i] for i in idx]


def _fg(sample) -> float:
    """Foreground share at original resolution (the loader's meta), else at input size."""
    f = sample.meta.get("fg_fraction")
    if f is not None:
        return float(f)
    return float(sample.mask.mean()) if sample.mask is not None else 0.0


def _per_sample(sample) -> dict:
    """The facts of one loaded sample that the fingerprint aggregates."""
    # read once: a sample from the on-disk cache reads its arrays on each use
    mask = np.asarray(sample.mask) if sample.mask is not None else None
    image = np.asarray(sample.image)
    areas = lesion_areas(mask) if mask is not None else None
    return {
        "case_id": sample.case_id,
        "fg": _fg(sample),
        "areas": areas,
        "fg_input": float((mask > 0).mean()) if areas else None,
        "mean": float(image.mean()),
        "std": float(image.std()),
    }


def _sample_stats(records: list[dict]) -> dict:
    """Aggregate `_per_sample` records (images at input size; fg from the original mask)."""
    fg = [r["fg"] for r in records]
    with_mask = [r for r in records if r["areas"] is not None]
    positive = [r for r in with_mask if r["areas"]]
    return {
        "n_cases": len({r["case_id"] for r in records}),
        "n_images": len(records),
        "n_positive_images": int(sum(f > 0 for f in fg)),
        "empty_image_fraction": float(np.mean([f == 0 for f in fg])) if fg else None,
        "foreground_fraction_positive": _q([f for f in fg if f > 0]),
        "foreground_fraction_all_pixels": float(np.mean(fg)) if fg else None,
        "foreground_fraction_positive_at_input": _q([r["fg_input"] for r in positive]),
        "normalised_intensity_mean": _q([r["mean"] for r in records]),
        "normalised_intensity_std": _q([r["std"] for r in records]),
        "lesions_per_image": _q([len(r["areas"]) for r in with_mask]),
        "lesions_per_positive_image": _q([len(r["areas"]) for r in positive]),
        "lesion_area_px_at_input": _q([a for r in with_mask for a in r["areas"]]),
        "n_lesions": int(sum(len(r["areas"]) for r in with_mask)),
    }


# ---------------------------------------------------------------------------------------
# Re-reading files: raw intensities and original-resolution masks


def raw_value_stats(arr: np.ndarray) -> dict:
    """Mean, std, min, max and the 0.5/50/99.5 percentiles of one file's raw values.

    Args:
        arr: the stored values, any shape (all channels and slices together).
    """
    a = np.asarray(arr, dtype=np.float32).ravel()
    a = a[np.isfinite(a)]
    if a.size == 0:
        return {}
    sub = a[:: max(1, math.ceil(a.size / _PERCENTILE_VALUES))]
    p_lo, p50, p_hi = np.percentile(sub, [0.5, 50.0, 99.5])
    return {
        "mean": float(a.mean(dtype=np.float64)), "std": float(a.std(dtype=np.float64)),
        "min": float(a.min()), "max": float(a.max()), "p00_5": float(p_lo), "p50": float(p50), "p99_5": float(p_hi),
    }


def _summarise_raw(per_file: list[dict]) -> Optional[dict]:
    rows = [r for r in per_file if r]
    if not rows:
        return None
    return {
        "n_files": len(rows),
        "min": min(r["min"] for r in rows),
        "max": max(r["max"] for r in rows),
        **{f"per_file_{k}": _q([r[k] for r in rows]) for k in ("mean", "std", "p00_5", "p50", "p99_5")},
    }


def _original_lesions(loaded, positive_idx: list[int]) -> dict:
    """Lesion areas at original resolution over (a bounded, even sample of) the positive images."""
    samples = loaded.samples
    chosen = _evenly(positive_idx, ORIGINAL_MASKS_MAX_IMAGES)
    spec = get_source(loaded.source)
    reader = spec.mask_reader()
    areas: list[int] = []
    per_positive: list[int] = []
    errors = 0
    if spec.volumetric:
        # one label file per volume: scan whole volumes, a bounded number of them
        by_volume: dict[str, list[int]] = defaultdict(list)
        for i in chosen:
            by_volume[samples[i].meta["mask_path"]].append(i)
        keep = _evenly(sorted(by_volume), ORIGINAL_MASKS_MAX_VOLUMES)
        for label_path in keep:
            try:
                slices = [reader(samples[i]) for i in by_volume[label_path]]
            except MedsegError:
                errors += 1
                continue
            for a in map(lesion_areas, slices):
                areas.extend(a)
                per_positive.append(len(a))
    else:
        for i in chosen:
            try:
                a = lesion_areas(reader(samples[i]))
            except (MedsegError, KeyError, TypeError):
                errors += 1
                continue
            areas.extend(a)
            per_positive.append(len(a))
    return {
        "lesion_area_px_original": _q(areas),
        "n_lesions_original": len(areas),
        "lesions_per_positive_image_original": _q(per_positive),
        "original_scan": {
            "n_positive_images": len(positive_idx),
            "n_scanned": len(per_positive),
            "complete": len(per_positive) == len(positive_idx),
            "n_errors": errors,
        },
    }


def _raw_stats_per_file(loaded, files: Iterable[str]) -> dict[str, dict]:
    out = {}
    spec = get_source(loaded.source)
    for path in files:
        try:
            out[path] = raw_value_stats(spec.read_raw(path))
        except MedsegError:
            continue  # the file changed since it was loaded: leave it out
    return out


def _files_by_part(loaded, split: Optional[dict]) -> dict[str, list[str]]:
    """Distinct image files (sorted) per split part, or under 'all' without a split."""
    part_of = {}
    for part, ids in (split or {}).items():
        for cid in ids:
            part_of.setdefault(cid, part)
    out: dict[str, dict[str, None]] = defaultdict(dict)  # ordered sets: volume slices share one file
    for s in loaded.samples:
        path = s.meta.get("path")
        if path is not None:
            out[part_of.get(s.case_id, "unsplit") if split else "all"][str(path)] = None
    return {k: sorted(v) for k, v in out.items()}


def original_statistics(loaded, split: Optional[dict] = None) -> dict:
    """Raw intensities and original-resolution lesions, read again from the files.

    Args:
        loaded: the `LoadedData` (its samples' meta name the files).
        split: case ids per part; raw intensities are then also given per part.

    Returns:
        dict with 'raw_intensity' (None when no file could be read), optionally
        'raw_intensity_by_split', and the lesion keys of `_original_lesions`.
    """
    files = _files_by_part(loaded, split)
    per_part = RAW_INTENSITY_MAX_FILES_PER_PART if split else RAW_INTENSITY_MAX_FILES
    chosen = {part: _evenly(paths, per_part) for part, paths in files.items()}
    per_file = _raw_stats_per_file(loaded, dict.fromkeys(p for paths in chosen.values() for p in paths))
    out: dict = {"raw_intensity": _summarise_raw(list(per_file.values()))}
    if out["raw_intensity"] is not None:
        out["raw_intensity"]["n_files_total"] = sum(len(paths) for paths in files.values())
    if split:
        out["raw_intensity_by_split"] = {
            part: _summarise_raw([per_file[p] for p in paths if p in per_file]) for part, paths in chosen.items()
        }
    positive_idx = [i for i, s in enumerate(loaded.samples) if s.mask is not None and _fg(s) > 0]
    out.update(_original_lesions(loaded, positive_idx))
    return out


# ---------------------------------------------------------------------------------------
# The fingerprint


def _binarisation(samples) -> dict:
    """How stored masks became binary: 'value > 0', or for noisy 8-bit masks '>= half the maximum', with counts."""
    rules = [s.meta.get("mask_rule") for s in samples if s.meta.get("mask_path")]
    noisy = [r for r in rules if r]
    out = {"rule": "value > 0", "n_masks": len(rules), "n_half_max": len(noisy)}
    if noisy:
        out.update(rule="value > 0; 8-bit masks with values between 0 and their maximum (>= 128): value >= half the maximum",
                   n_pixels_between=int(sum(r["n_pixels_between"] for r in noisy)))
    return out


def _spacing_q(spacings: list, axis: int) -> Optional[dict]:
    return _q([s[axis] for s in spacings]) if spacings else None


def _parts(records: list[dict], split: dict) -> Iterable[tuple[str, list[dict]]]:
    for part, ids in split.items():
        wanted = set(ids)
        yield part, [r for r in records if r["case_id"] in wanted]


def part_cases(fp: dict, part: str) -> int:
    """Cases in a split part of a fingerprint (a volume counts once; older fingerprints count images); 0 when it has none."""
    stats = (fp.get("by_split") or {}).get(part) or {}
    return int(stats.get("n_cases") or stats.get("n_images") or 0)


def compute_fingerprint(loaded, split: Optional[dict] = None, original: Optional[dict] = None, read_files: bool = True) -> dict:
    """Statistics of a LoadedData: sizes, spacing, intensities, mask values, foreground, lesions.

    Args:
        loaded: the `LoadedData`.
        split: case ids per part ({"train": [...], "val": [...], ...}); adds 'by_split'.
        original: a result of `original_statistics` to reuse (the same files loaded at another
            input size); computed here when None and read_files is True.
        read_files: read raw intensities and original masks again from the files.
    """
    samples = loaded.samples
    shapes = [tuple(s.meta.get("orig_shape", s.image.shape[1:])) for s in samples]
    spacings = [s.meta.get("spacing") for s in samples if s.meta.get("spacing")]
    scales = [(s.meta.get("resize") or {}).get("scale") for s in samples]
    scales = [sc for sc in scales if sc]
    records = [_per_sample(s) for s in samples]
    stats = _sample_stats(records)
    fp = {
        "fingerprint_version": FINGERPRINT_VERSION,
        "source": loaded.source,
        "modality": getattr(loaded, "modality", "unknown"),
        "n_cases": stats["n_cases"],
        "n_images": stats["n_images"],
        "n_positive_images": stats["n_positive_images"],
        "n_volumes": len(loaded.volumes),
        "in_channels": loaded.in_channels,
        "input_size": list(samples[0].image.shape[1:]) if samples else None,
        "input_scale_median": [float(np.median([sc[0] for sc in scales])), float(np.median([sc[1] for sc in scales]))] if scales else None,
        "orig_height": _q([h for h, w in shapes]),
        "orig_width": _q([w for h, w in shapes]),
        # kept for readers of version 1: row quantiles with the column quantiles nested
        "spacing_row_col": (_spacing_q(spacings, 0) | {"col": _spacing_q(spacings, 1)}) if spacings else None,
        "n_with_spacing": len(spacings),
        "spacing_row": _spacing_q(spacings, 0),
        "spacing_col": _spacing_q(spacings, 1),
        "normalised_intensity_mean": stats["normalised_intensity_mean"],
        "normalised_intensity_std": stats["normalised_intensity_std"],
        "raw_mask_values": [float(v) if not float(v).is_integer() else int(v) for v in loaded.mask_values],
        "mask_values_binary01": set(loaded.mask_values) <= {0, 1},
        "mask_binarisation": _binarisation(samples),
        "empty_image_fraction": stats["empty_image_fraction"],
        "foreground_fraction_positive": stats["foreground_fraction_positive"],
        "foreground_fraction_all_pixels": stats["foreground_fraction_all_pixels"],
        "foreground_fraction_positive_at_input": stats["foreground_fraction_positive_at_input"],
        "lesions_per_image": stats["lesions_per_image"],
        "lesions_per_positive_image": stats["lesions_per_positive_image"],
        "lesion_area_px_at_input": stats["lesion_area_px_at_input"],
        "n_lesions": stats["n_lesions"],
        "n_bad_files": len(loaded.bad),
    }
    if original is None and read_files:
        original = original_statistics(loaded, split)
    if original is not None:
        fp.update({k: v for k, v in original.items() if k != "raw_intensity_by_split"})
    if split:
        fp["split_sizes"] = {k: len(v) for k, v in split.items()}
        raw_parts = (original or {}).get("raw_intensity_by_split") or {}
        fp["by_split"] = {
            part: _sample_stats(part_records) | {"raw_intensity": raw_parts.get(part)}
            for part, part_records in _parts(records, split)
        }
    return fp
