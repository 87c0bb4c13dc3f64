"""The run's model checkpoint run on the validation images, for the overlays and the threshold curve (streamed)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from medseg import runfolder as runfs
from medseg.config import Config
from medseg.inference import run_probs_by_case
from medseg.metrics.sweep import SweepCounter


@dataclass
class ValPredictions:
    """The model checkpoint run on the validation images, streamed: the arrays of the cases asked for, and the sweep of all.

    Attributes:
        sample_ids: the kept cases, in validation order; ``images`` / ``masks`` / ``probs`` hold
            their normalised inputs (C, H, W), binary truths and probabilities in the same order.
        sweep: `threshold_sweep` over every validation case (None when not asked for or not computable).
        sweep_error: why there is no sweep, when it failed.
        n_images: validation images predicted.
    """

    sample_ids: list[str]
    images: list[np.ndarray]
    masks: list[np.ndarray]
    probs: list[np.ndarray]
    sweep: Optional[dict] = None
    sweep_error: str = ""
    n_images: int = 0


def predict_validation(run_dir: Path, cfg: Config, state: dict, val=None, keep: Optional[Iterable[str]] = None,
                       sweep: bool = True) -> ValPredictions:
    """Run the model checkpoint on the validation split, a chunk of whole cases at a time.

    Memory holds one chunk and the kept cases, not the validation set's probabilities.

    Args:
        run_dir: the run folder.
        cfg: its config.
        state: its state.json (in_channels, precision).
        val: the validation `SplitArrays` if already loaded (fit passes them); otherwise the
            data is reloaded and the run's split.json picks the validation cases.
        keep: sample ids whose arrays to keep (the overlays); None keeps none.
        sweep: also sweep the threshold over every case (`metrics.sweep.SweepCounter`).
    """
    state = runfs.load_state(run_dir)  # a damaged state.json is a note in the report, not a traceback
    if val is None:
        val = runfs.load_split_part(run_dir, cfg)
    net, _ = runfs.load_network(run_dir, cfg, state["in_channels"])
    wanted = set(keep or ())
    out = ValPredictions([], [], [], [], n_images=len(val.meta))
    counter = SweepCounter(cfg.eval.contract) if sweep else None
    # same device, precision and chunks as `evaluate`, so the curve agrees with metrics/summary.json
    for idx, images, probs, masks, meta in run_probs_by_case(net, val, cfg, state):
        if counter is not None:
            counter.add_chunk(probs, masks, meta)
        for j, (i, m) in enumerate(zip(idx, meta)):
            if m["sample_id"] in wanted:
                out.sample_ids.append(m["sample_id"])
                # copies: a view of one slice would keep its whole volume's arrays alive
                out.images.append(np.array(images[j]))
                out.masks.append(masks[j].copy())
                out.probs.append(probs[j].copy())
        del probs, images, masks  # before the next chunk's prediction: not two volumes' arrays at once
    if counter is not None:
        try:
            out.sweep = counter.result()
        except ValueError as e:
            out.sweep_error = f"threshold sweep failed ({e})"
    return out


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


def index_of(preds: ValPredictions, sample_id: str) -> Optional[int]:
    try:
        return preds.sample_ids.index(sample_id)
    except ValueError:
        return None
