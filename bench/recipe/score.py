"""One scorer for every method: binary PNG predictions against the prepared truths (same size).

The metric contract is medseg's default: hard masks, per-image mean, an image with empty truth
and empty prediction scores 1 (`empty: one`). Reported per method: per-image Dice, Dice over
lesion images only, lesion recall (truth components touched by the prediction), false-positive
rate on normal images (share with any predicted pixel), HD95 in pixels (mean over images where
both masks are non-empty; an empty/empty image would add a 0 under `empty: one`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from medseg.metrics import case_metrics, summarize
from medseg.metrics.contract import MetricContract

KEYS = ("dice", "dice_nonempty", "lesion_recall", "fp_rate_empty", "hd95")


def read_mask(path: Path, shape: tuple[int, ...] | None = None) -> np.ndarray:
    a = np.asarray(Image.open(path).convert("L"))
    if shape is not None and a.shape != shape:
        raise ValueError(f"{path}: shape {a.shape}, expected {shape} (the truth's)")
    return a > 127


def score_predictions(pred_dir: Path, prep: Path, cases: list[str]) -> dict:
    """Summary (and per-case rows) of the predictions in pred_dir/{case}.png for `cases`."""
    contract = MetricContract()
    rows = []
    missing = [c for c in cases if not (pred_dir / f"{c}.png").is_file()]
    if missing:
        raise FileNotFoundError(f"{pred_dir}: {len(missing)} test predictions missing, e.g. {missing[0]}.png")
    for c in cases:
        truth = read_mask(prep / "masks" / f"{c}.png")
        pred = read_mask(pred_dir / f"{c}.png", truth.shape).astype(np.float32)
        rows.append({"case": c, **case_metrics(pred, truth, contract, surface=True)})
    s = summarize(rows, contract)
    both = [r["hd95"] for r in rows if not r["truth_empty"] and not r["pred_empty"]]
    s["hd95"] = float(np.nanmean(both)) if both else float("nan")
    out = {k: s[k] for k in KEYS} | {"n_cases": s["n_cases"], "n_empty_truth": s["n_empty_truth"], "contract": s["contract_text"]}
    out["hd95_n"] = len(both)
    return {"summary": out, "rows": rows}


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description="score a folder of PNG predictions on the benchmark's test split")
    ap.add_argument("pred_dir", type=Path)
    ap.add_argument("prep", type=Path)
    a = ap.parse_args()
    cases = json.loads((a.prep / "split.json").read_text())["test"]
    print(json.dumps(score_predictions(a.pred_dir, a.prep, cases)["summary"], indent=1))


if __name__ == "__main__":
    main()
