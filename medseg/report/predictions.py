"""The best checkpoint run on the validation images, for the overlays and the threshold curve."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from medseg import runfolder as runfs
from medseg.config import Config
from medseg.inference import run_probs
from medseg.metrics import sweep_cases, threshold_sweep


@dataclass
class ValPredictions:
    """Validation images, truths and predicted probabilities, in the same order as `sample_ids`."""

    images: np.ndarray  # (N, C, H, W) normalised network inputs
    masks: np.ndarray  # (N, H, W) binary
    probs: np.ndarray  # (N, H, W) in [0, 1]
    sample_ids: list[str]
    meta: Optional[list[dict]] = None  # per-sample meta (volume, slice) for per-volume sweeps


def predict_validation(run_dir: Path, cfg: Config, state: dict, val=None) -> ValPredictions:
    """Run the best checkpoint on the validation split.

    Args:
        run_dir: the run folder.
        cfg: its config.
        state: its state.json (in_channels, precision).
        val: the validation `SplitArrays` if already in memory (fit passes them); otherwise the
            data is reloaded and the run's split.json picks the validation cases.
    """
    state = runfs.load_state(run_dir)  # a damaged state.json is a note in the report, not a traceback
    if val is None:
        val = runfs.load_split_part(run_dir, cfg)
    net, _ = runfs.load_network(run_dir, cfg, state["in_channels"])
    # same device and precision as `evaluate`, so the curve agrees with metrics/summary.json
    probs = run_probs(net, val.images, cfg, state)
    return ValPredictions(val.images, val.masks, probs, [m["sample_id"] for m in val.meta], list(val.meta))


def pick_cases(case_rows: list[dict], per_side: int = 3) -> tuple[list[dict], list[dict]]:
    """The best and the worst validation cases by Dice (cases with NaN Dice are left out).

    The best are taken among cases whose truth has a lesion when there are any, because an
    empty image correctly left empty says little about how lesions are segmented; the worst
    come from all cases, since a false alarm on an empty image is worth seeing. With few cases
    each side gets at most half, so no case is shown twice.
    """
    scored = [r for r in case_rows if isinstance(r.get("dice"), float) and not math.isnan(r["dice"])]
    if not scored:
        return [], []
    k = max(1, min(per_side, len(scored) // 2))
    worst = sorted(scored, key=lambda r: r["dice"])[:k]
    shown = {r["case"] for r in worst}
    rest = [r for r in scored if r["case"] not in shown]
    with_lesion = [r for r in rest if str(r.get("truth_empty")).lower() not in ("true", "1", "1.0")]
    best = sorted(with_lesion or rest, key=lambda r: -r["dice"])[:k]
    return best, worst


def sweep_from_predictions(preds: ValPredictions, cfg: Config) -> dict:
    """Threshold sweep over the validation predictions, the same call `evaluate --sweep` makes."""
    return threshold_sweep(*sweep_cases(preds.probs, preds.masks, preds.meta, cfg.eval.contract), cfg.eval.contract)


def index_of(preds: ValPredictions, sample_id: str) -> Optional[int]:
    try:
        return preds.sample_ids.index(sample_id)
    except ValueError:
        return None
