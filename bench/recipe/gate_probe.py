"""Which image score should gate "this image has no lesion"? The peak probability against softer scores.

`medseg tune`'s empty-image gate predicts an image empty unless its highest pixel probability
reaches ``min_score``. One pixel is a noisy statistic: across §5.0's seeds the tuned gate was 0.8,
0.0 and 0.9 and false alarms on normal images stayed at 27-73%. This probe scores, on a
cross-validation run's held-out fold (bench/recipe/cv_defaults.py: never trained on), how well each
image score separates lesion images from normal ones (AUROC, Mann-Whitney U / n1 n2), and what it
gives as a gate, honestly: the cases are cut into two random halves (seed 0); on one half the
threshold/area/largest rule is tuned without a gate (`medseg.postprocess.tune_postprocess`), then
the gate's cut-off is the one among the score's values on that half that maximises the half's
per-image Dice (empty=one); both are scored on the other half, and the halves swap.

Scores (p: the plain probabilities, no TTA):
  max        the peak probability (the gate medseg tunes today)
  top0.1%    the mean of the highest 0.1% of pixels (65 at 256²)
  mass       the sum of p over pixels with p >= 0.5 (an expected lesion area, px)
  blob       the peak of p smoothed by a 5x5 box filter (a single hot pixel cannot pass)

    .venv/bin/python -u bench/recipe/gate_probe.py RUN_DIR [RUN_DIR ...] --out gate_probe.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.stats import mannwhitneyu

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from medseg import runfolder as runfs  # noqa: E402
from medseg.inference import predict_probs  # noqa: E402
from medseg.postprocess import PostProcess, tune_postprocess  # noqa: E402
from medseg.runfolder import load_network, load_run_config  # noqa: E402
from medseg.runfolder import load_split_part as load_validation  # noqa: E402


def dice_empty_one(pred: np.ndarray, truth: np.ndarray) -> float:
    if not pred.any() and not truth.any():
        return 1.0
    return float(2 * np.count_nonzero(pred & truth) / (pred.sum() + truth.sum()))


def image_scores(p: np.ndarray) -> dict[str, float]:
    flat = np.sort(p.ravel())
    k = max(1, int(round(flat.size * 0.001)))
    return {
        "max": float(flat[-1]),
        "top0.1%": float(flat[-k:].mean()),
        "mass": float(p[p >= 0.5].sum()),
        "blob": float(ndimage.uniform_filter(p.astype(np.float64), size=5).max()),
    }


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a lesion image > score of a normal one), ties half (Mann-Whitney U / n1 n2)."""
    return float(mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg)))


def best_cutoff(scores: np.ndarray, dice_kept: np.ndarray, dice_gated: np.ndarray) -> float:
    """The cut-off (0 = no gate, or one of the scores) with the highest mean Dice: kept at score >= cut-off."""
    best, best_dice = 0.0, float(dice_kept.mean())
    for c in np.unique(scores):
        d = float(np.where(scores >= c, dice_kept, dice_gated).mean())
        if d > best_dice + 1e-12:
            best, best_dice = float(c), d
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    results = {"command": " ".join(sys.argv), "runs": []}
    for rd in a.runs:
        cfg = load_run_config(rd)
        state = runfs.read_json(rd / runfs.STATE)
        val = load_validation(rd, cfg)
        net, _ = load_network(rd, cfg, state["in_channels"])
        truths = [m.astype(bool) for m in val.masks]
        probs = predict_probs(net, val.images, cfg.eval.batch_size, state["precision"], "cpu", cfg.train.channels_last)
        lesion = np.array([t.any() for t in truths])
        scores = [image_scores(p) for p in probs]
        names = list(scores[0])
        row = {"run": str(rd), "n_cases": len(truths), "n_normal": int((~lesion).sum()), "auroc": {}, "gate": {}}
        for n in names:
            s = np.array([x[n] for x in scores])
            row["auroc"][n] = auroc(s[lesion], s[~lesion])
        pp = cfg.postprocess
        perm = np.random.RandomState(0).permutation(len(truths))
        halves = [perm[: len(perm) // 2], perm[len(perm) // 2:]]
        gated = {n: [] for n in ["none", *names]}
        fps = {n: [] for n in ["none", *names]}
        lesion_lost = {n: [] for n in ["none", *names]}
        for k in (0, 1):
            tune_idx, score_idx = halves[k], halves[1 - k]
            res = tune_postprocess([probs[i] for i in tune_idx], [truths[i] for i in tune_idx], cfg.eval.contract,
                                   pp.thresholds, pp.min_area_fractions, pp.keep_largest, min_gain=pp.min_gain, min_scores=[0.0])
            rule = PostProcess.from_json(res["chosen"])
            preds = [rule.apply(p) for p in probs]
            kept = np.array([dice_empty_one(q, t) for q, t in zip(preds, truths)])
            empty = np.array([float(not t.any()) for t in truths])  # the Dice of predicting the image empty
            for n in ["none", *names]:
                s = np.array([x[n] for x in scores]) if n != "none" else np.ones(len(truths))
                cut = 0.0 if n == "none" else best_cutoff(s[tune_idx], kept[tune_idx], empty[tune_idx])
                keep = s[score_idx] >= cut
                gated[n].append(float(np.where(keep, kept[score_idx], empty[score_idx]).mean()))
                normal = ~lesion[score_idx]
                fps[n].append(float(np.mean([preds[i].any() for i in score_idx[keep & normal]] + [False] * int((~keep & normal).sum()))))
                lesion_lost[n].append(int((~keep & lesion[score_idx]).sum()))
        for n in ["none", *names]:
            row["gate"][n] = {"dice": float(np.mean(gated[n])), "per_half": gated[n], "fp_rate_empty": float(np.mean(fps[n])),
                              "lesion_images_emptied": int(sum(lesion_lost[n]))}
        print(f"{rd.name}: AUROC " + ", ".join(f"{n} {row['auroc'][n]:.3f}" for n in names), flush=True)
        for n in ["none", *names]:
            g = row["gate"][n]
            print(f"  gate {n:8s} honest Dice {g['dice']:.4f}  FP normals {g['fp_rate_empty']:.2f}  "
                  f"lesion images emptied {g['lesion_images_emptied']}", flush=True)
        results["runs"].append(row)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
