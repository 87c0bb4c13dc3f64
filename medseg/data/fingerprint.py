"""Dataset fingerprint: the statistics a plan and the doctor read (fingerprint.json)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _q(values, qs=(0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)) -> dict:
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return {}
    return {f"q{int(q * 100):02d}": float(np.quantile(v, q)) for q in qs} | {"mean": float(v.mean())}


def compute_fingerprint(loaded, split: dict | None = None) -> dict:
    """Statistics of a LoadedData: sizes, spacing, intensities, mask values, foreground, lesions."""
    samples = loaded.samples
    shapes = [tuple(s.meta.get("orig_shape", s.image.shape[1:])) for s in samples]
    fg = [float(s.meta.get("fg_fraction", float(s.mask.mean()) if s.mask is not None else 0.0)) for s in samples]
    positives = [f for f in fg if f > 0]
    lesion_sizes = []
    lesions_per_image = []
    for s in samples:
        if s.mask is None:
            continue
        lab, n = ndimage.label(s.mask > 0, structure=np.ones((3, 3)))
        lesions_per_image.append(n)
        if n:
            lesion_sizes.extend(np.bincount(lab.ravel())[1:].tolist())
    means = [float(s.image.mean()) for s in samples]
    stds = [float(s.image.std()) for s in samples]
    spacings = [s.meta.get("spacing") for s in samples if s.meta.get("spacing")]
    fp = {
        "source": loaded.source,
        "modality": getattr(loaded, "modality", "unknown"),
        "n_cases": len({s.case_id for s in samples}),
        "n_images": len(samples),
        "n_volumes": len(loaded.volumes),
        "in_channels": loaded.in_channels,
        "input_size": list(samples[0].image.shape[1:]) if samples else None,
        "orig_height": _q([h for h, w in shapes]),
        "orig_width": _q([w for h, w in shapes]),
        "spacing_row_col": _q([s[0] for s in spacings]) | {"col": _q([s[1] for s in spacings])} if spacings else None,
        "normalised_intensity_mean": _q(means),
        "normalised_intensity_std": _q(stds),
        "raw_mask_values": [float(v) if not float(v).is_integer() else int(v) for v in loaded.mask_values],
        "mask_values_binary01": set(loaded.mask_values) <= {0, 1},
        "empty_image_fraction": float(np.mean([f == 0 for f in fg])) if fg else None,
        "foreground_fraction_positive": _q(positives),
        "foreground_fraction_all_pixels": float(np.mean(fg)) if fg else None,
        "lesions_per_image": _q(lesions_per_image),
        "lesion_area_px_at_input": _q(lesion_sizes),
        "n_lesions": int(len(lesion_sizes)),
        "n_bad_files": len(loaded.bad),
    }
    if split:
        fp["split_sizes"] = {k: len(v) for k, v in split.items()}
    return fp
