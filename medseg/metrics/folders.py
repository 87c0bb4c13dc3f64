"""Score a folder of predictions against a folder of truth masks, matched by file stem.

Predictions may be masks or probability maps; values are read as:

* bool, or any integer image with values in {0, 1}: a mask;
* uint8 otherwise: p = v / 255 (so a 0/255 mask is a mask);
* uint16 otherwise: p = v / 65535, except values exactly {0, 255} (an 8-bit mask saved as
  16-bit), which is a mask;
* other integer types (e.g. int16 NIfTI labels): a mask if the values are {0, x}, else an error;
* float: probabilities, which must be finite and within [0, 1].

Truth files must hold at most two values, one of them 0 ({0, x}; x is foreground) or a
single value (all background if 0). Spacing for HD95/ASD in mm comes from the truth's
NIfTI/NRRD header (else the prediction's; else pixels). Each problem is a one-line
MedsegError naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np

from medseg.errors import MedsegError
from medseg.metrics.cases import case_metrics
from medseg.metrics.contract import MetricContract
from medseg.metrics.files import SUFFIXES, read_array, split_name
from medseg.metrics.summary import summarize


def index_folder(folder: Path, role: str) -> dict[str, Path]:
    """{stem: path} of the mask files in `folder` (other files and sub-folders are ignored)."""
    if not folder.is_dir():
        raise MedsegError(f"{folder}: {role} folder does not exist")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        named = split_name(path)
        if named is None or path.name.startswith(".") or not path.is_file():
            continue
        stem = named[0]
        if stem in found:
            raise MedsegError(f"{path}: two {role} files share the stem '{stem}' (also {found[stem].name})")
        found[stem] = path
    if not found:
        raise MedsegError(f"{folder}: no {role} files ({', '.join(SUFFIXES)})")
    return found


def to_probability(arr: np.ndarray, path: Path) -> np.ndarray:
    """Prediction array -> float64 probabilities in [0, 1] (rules in the module docstring)."""
    if arr.dtype == bool:
        return arr.astype(np.float64)
    if np.issubdtype(arr.dtype, np.floating):
        p = arr.astype(np.float64)
        if np.isnan(p).any():
            raise MedsegError(f"{path}: prediction contains NaN")
        if not np.isfinite(p).all() or p.min() < 0 or p.max() > 1:
            raise MedsegError(f"{path}: float prediction must lie in [0, 1] (got {p.min():g}..{p.max():g})")
        return p
    if not np.issubdtype(arr.dtype, np.integer):
        raise MedsegError(f"{path}: unsupported prediction data type {arr.dtype}")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0:
        raise MedsegError(f"{path}: prediction has negative values")
    if hi <= 1:
        return arr.astype(np.float64)
    if arr.dtype == np.uint8:
        return arr / 255.0
    values = np.unique(arr)
    if arr.dtype == np.uint16 and not np.array_equal(values, [0, 255]):
        return arr / 65535.0
    if values.size == 2 and values[0] == 0:
        return (arr != 0).astype(np.float64)
    raise MedsegError(f"{path}: {arr.dtype} prediction with values {_values(values)}: save a 0/1 mask or float probabilities")


def to_truth(arr: np.ndarray, path: Path) -> np.ndarray:
    """Truth array -> bool mask; it must hold {0, x} or a single value."""
    if np.issubdtype(arr.dtype, np.floating) and np.isnan(arr).any():
        raise MedsegError(f"{path}: truth mask contains NaN")
    values = np.unique(arr)
    if values.size > 2 or (values.size == 2 and values[0] != 0):
        raise MedsegError(f"{path}: truth mask is not binary (values {_values(values)}); expected 0 and one foreground value")
    return arr != 0


def _values(values: np.ndarray) -> str:
    shown = ", ".join(f"{v:g}" for v in values[:5].tolist())
    return shown + (", ..." if values.size > 5 else "")


def _match(preds: dict[str, Path], truths: dict[str, Path], pred_dir: Path, truth_dir: Path) -> list[str]:
    missing = sorted(set(truths) - set(preds))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise MedsegError(f"{truths[missing[0]]}: no prediction with stem '{missing[0]}' in {pred_dir}{more}")
    extra = sorted(set(preds) - set(truths))
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise MedsegError(f"{preds[extra[0]]}: prediction has no truth mask with stem '{extra[0]}' in {truth_dir}{more}")
    return sorted(truths)


def score_folders(
    pred_dir: Union[str, Path], truth_dir: Union[str, Path], contract: MetricContract, surface: bool = True
) -> tuple[list[dict], dict]:
    """Per-case rows (each with `case` = file stem) and their `summarize` result.

    Reads only; writes nothing.

    Args:
        pred_dir: folder of predictions (masks or probability maps, see module docstring).
        truth_dir: folder of truth masks with the same stems.
        contract: the metric contract.
        surface: compute HD95/ASD.
    """
    pred_dir, truth_dir = Path(pred_dir), Path(truth_dir)
    truths = index_folder(truth_dir, "truth")
    preds = index_folder(pred_dir, "prediction")
    rows = []
    for stem in _match(preds, truths, pred_dir, truth_dir):
        t_arr, t_spacing = read_array(truths[stem])
        p_arr, p_spacing = read_array(preds[stem])
        if p_arr.shape != t_arr.shape:
            raise MedsegError(f"{preds[stem]}: shape {p_arr.shape} differs from truth {truths[stem].name} {t_arr.shape}")
        truth = to_truth(t_arr, truths[stem])
        prob = to_probability(p_arr, preds[stem])
        spacing = t_spacing if t_spacing is not None else p_spacing
        rows.append({"case": stem, **case_metrics(prob, truth, contract, spacing=spacing, surface=surface)})
    return rows, summarize(rows, contract)
