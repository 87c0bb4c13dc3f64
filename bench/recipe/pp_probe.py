"""Honest estimate of the post-processing search: tune on one half of a run's validation cases, score on the other.

`medseg tune` picks its rule on the validation cases, so the post-processed validation Dice is
optimistic. For cross-validation runs (bench/recipe/cv_defaults.py), whose validation set is the
held-out fold, this script splits those cases in two random halves (seed 0), tunes on each half
with `medseg.postprocess.tune_postprocess` and scores the chosen rule on the other half with
numpy Dice (empty=one), for four search spaces: the threshold/area/largest grid alone, plus the
peak-probability gate, each on plain and on flip-TTA probabilities.

    .venv/bin/python -u bench/recipe/pp_probe.py runs/bench-cv/runs/r34-fold0 runs/bench-cv/runs/r34-fold1 \\
        --out runs/bench-cv2/pp_probe.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from medseg import runfolder as runfs  # noqa: E402
from medseg.inference import predict_probs  # noqa: E402
from medseg.postprocess import PostProcess, tune_postprocess  # noqa: E402
from medseg.runfolder import load_network, load_run_config  # noqa: E402
from medseg.runfolder import load_split_part as load_validation


def dice_empty_one(pred: np.ndarray, truth: np.ndarray) -> float:
    if not pred.any() and not truth.any():
        return 1.0
    return float(2 * np.count_nonzero(pred & truth) / (pred.sum() + truth.sum()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--min-scores", type=float, nargs="+", help="gate grid (default: each run's postprocess.min_scores)")
    a = ap.parse_args()
    results = {"command": " ".join(sys.argv), "runs": []}
    for rd in a.runs:
        cfg = load_run_config(rd)
        state = runfs.read_json(rd / runfs.STATE)
        val = load_validation(rd, cfg)
        net, _ = load_network(rd, cfg, state["in_channels"])
        truths = [m.astype(bool) for m in val.masks]
        pp = cfg.postprocess
        perm = np.random.RandomState(0).permutation(len(truths))
        halves = [perm[: len(perm) // 2], perm[len(perm) // 2:]]
        plain = predict_probs(net, val.images, cfg.eval.batch_size, state["precision"], "cpu", cfg.train.channels_last)
        flip = predict_probs(net, val.images, cfg.eval.batch_size, state["precision"], "cpu", cfg.train.channels_last, tta=True)
        normals = [i for i, t in enumerate(truths) if not t.any()]
        row = {"run": str(rd), "n_cases": len(truths),
               "raw_dice": float(np.mean([dice_empty_one(p >= 0.5, t) for p, t in zip(plain, truths)]))}
        grid = a.min_scores or pp.min_scores
        for name, probs, gates in (("grid", plain, [0.0]), ("grid+gate", plain, grid),
                                   ("grid, TTA", flip, [0.0]), ("grid+gate, TTA", flip, grid)):
            scores, fps, rules = [], [], []
            for k in (0, 1):
                tune_idx, score_idx = halves[k], halves[1 - k]
                res = tune_postprocess([probs[i] for i in tune_idx], [truths[i] for i in tune_idx], cfg.eval.contract,
                                       pp.thresholds, pp.min_area_fractions, pp.keep_largest, min_gain=pp.min_gain,
                                       min_scores=gates, tta=probs is flip, raw_probs=[plain[i] for i in tune_idx])
                rule = PostProcess.from_json(res["chosen"])
                preds = {i: rule.apply(probs[i] if rule.tta else plain[i]) for i in score_idx}
                scores.append(float(np.mean([dice_empty_one(preds[i], truths[i]) for i in score_idx])))
                fps.append(float(np.mean([preds[i].any() for i in score_idx if i in set(normals)])))
                rules.append(rule.describe())
            row[name] = {"dice": float(np.mean(scores)), "fp_rate_empty": float(np.mean(fps)), "rules": rules}
            print(f"{rd.name}: {name:15s} honest Dice {np.mean(scores):.4f} (raw {row['raw_dice']:.4f}), "
                  f"FP normals {np.mean(fps):.2f}; rules {rules}", flush=True)
        results["runs"].append(row)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
