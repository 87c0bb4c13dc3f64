"""Lesion-wise detection: connected components of truth and prediction, matched by overlap."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from scipy import ndimage


def size_bin_names(edges: Sequence[float]) -> list[str]:
    """Names of the lesion-size bins cut at `edges` (len(edges) + 1 names).

    One edge: small/large; two edges: small/medium/large; otherwise size0, size1, ...
    """
    n = len(edges) + 1
    if n == 2:
        return ["small", "large"]
    if n == 3:
        return ["small", "medium", "large"]
    return [f"size{i}" for i in range(n)]


def size_bin(area: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Bin index of each lesion area: bin i holds edges[i-1] <= area < edges[i].

    With edges [64, 1024]: small < 64 <= medium < 1024 <= large (the contract's wording).
    """
    return np.searchsorted(np.asarray(edges, dtype=float), np.asarray(area, dtype=float), side="right")


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components with full connectivity: 8-neighbours in 2D, 26 in 3D.

    Full connectivity keeps a thin diagonal lesion (a vessel, a crack) as one lesion instead
    of splitting it into many one-pixel "lesions".
    """
    structure = ndimage.generate_binary_structure(mask.ndim, mask.ndim)
    labels, n = ndimage.label(mask, structure=structure)
    return labels, int(n)


def bounding_box(mask: np.ndarray, margin: int = 0) -> Optional[tuple[slice, ...]]:
    """The box of a mask's foreground (grown by `margin`, clipped to the array), or None when it is empty.

    Built from one projection per axis, not from a coordinate list of every foreground pixel
    (which for a volume is a volume's worth of int64s).
    """
    box = []
    for axis, n in enumerate(mask.shape):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hit.size == 0:
            return None
        box.append(slice(max(int(hit[0]) - margin, 0), min(int(hit[-1]) + 1 + margin, n)))
    return tuple(box)


_AREA_CHUNK = 1 << 22  # labels counted per bincount call: its int64 copy of them stays at 32 MB


def _areas(labels: np.ndarray, n: int) -> np.ndarray:
    """Voxels of each component 1..n, counted in chunks (bincount copies its input to int64)."""
    flat = labels.reshape(-1)
    counts = np.zeros(n + 1, dtype=np.int64)
    for i in range(0, flat.size, _AREA_CHUNK):
        counts += np.bincount(flat[i : i + _AREA_CHUNK], minlength=n + 1)
    return counts[1:]


def lesion_detection(pred: np.ndarray, truth: np.ndarray, size_edges: Sequence[float], min_iou: float = 0.0) -> dict:
    """Count truth lesions found and predicted components matched, overall and by size bin.

    A truth lesion is found when some predicted component overlaps it by at least one pixel
    and their IoU (component to component) is >= min_iou; a predicted component is matched
    by the same rule, so lesion precision = n_pred_matched / n_lesions_pred.

    Args:
        pred: binary prediction mask (2D or 3D).
        truth: binary truth mask of the same shape.
        size_edges: lesion-area bin edges in pixels/voxels (contract.lesion_size_bins).
        min_iou: IoU a matching pair needs besides overlapping (0: any overlap).

    Returns:
        n_lesions_truth, n_lesions_found, n_lesions_pred, n_pred_matched, and for each size
        bin b (by truth lesion area): n_lesions_truth_<b>, n_lesions_found_<b>.
    """
    pred = np.asarray(pred, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in shape")
    # truth lesions are labelled inside their own box: every overlap lies there, and in a
    # volume the box is usually a small part of it (a label array is 4 bytes per voxel)
    box = bounding_box(truth)
    t_lab, n_t = label_components(truth[box]) if box is not None else (None, 0)
    p_lab, n_p = label_components(pred)
    t_area = _areas(t_lab, n_t) if box is not None else np.zeros(0, dtype=np.int64)
    p_area = _areas(p_lab, n_p)

    found = np.zeros(n_t, dtype=bool)
    matched = np.zeros(n_p, dtype=bool)
    both = truth[box] & pred[box] if box is not None else None
    if both is not None and both.any():
        # overlap of every (truth, pred) component pair that touches, via unique label pairs
        pairs, inter = np.unique(np.stack([t_lab[both], p_lab[box][both]]), axis=1, return_counts=True)
        ti, pi = pairs[0] - 1, pairs[1] - 1
        iou = inter / (t_area[ti] + p_area[pi] - inter)
        ok = iou >= min_iou
        found[ti[ok]] = True
        matched[pi[ok]] = True

    out = {
        "n_lesions_truth": n_t,
        "n_lesions_found": int(found.sum()),
        "n_lesions_pred": n_p,
        "n_pred_matched": int(matched.sum()),
    }
    bins = size_bin(t_area, size_edges)
    for i, name in enumerate(size_bin_names(size_edges)):
        in_bin = bins == i
        out[f"n_lesions_truth_{name}"] = int(in_bin.sum())
        out[f"n_lesions_found_{name}"] = int((found & in_bin).sum())
    return out
