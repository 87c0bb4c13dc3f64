"""Is there better "has a lesion" evidence in the default network's features than its peak probability?

A linear probe: on a cross-validation run's held-out fold (bench/recipe/cv_defaults.py; never trained on), the
deepest encoder features (average- and max-pooled, as `model.image_head` reads them) of every image are
standardised and an L2-regularised logistic regression (torch LBFGS) is fitted on one half of the fold's patient
groups and scored (AUROC for "the image has a lesion") on the other half, then the halves swap. The peak probability
(the gate medseg tunes) is scored on the same halves. Three regularisation strengths are all reported; none is
chosen on the scored half.

    .venv/bin/python -u bench/recipe/probe_features.py RUN_DIR [RUN_DIR ...] --cases PREP/cases.csv --out probe.json
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.recipe.gate_probe import auroc  # noqa: E402
from medseg.models.flexunet import pool_deepest  # noqa: E402
from medseg.runfolder import load_network, load_run_config, load_split_part  # noqa: E402

STRENGTHS = (1e-3, 1e-2, 1e-1)


def features_and_peaks(net, images: np.ndarray, batch: int = 16):
    deepest = []
    hook = net.encoder.register_forward_hook(lambda m, i, o: deepest.append(o[-1]))
    feats, peaks = [], []
    try:
        with torch.no_grad():
            for s in range(0, len(images), batch):
                x = torch.from_numpy(np.ascontiguousarray(images[s:s + batch], dtype=np.float32))
                p = torch.sigmoid(net(x))
                feats.append(pool_deepest(deepest[-1]).numpy())
                peaks.append(p.flatten(1).amax(1).numpy())
    finally:
        hook.remove()
    return np.concatenate(feats), np.concatenate(peaks)


def fit_logistic(x: np.ndarray, y: np.ndarray, strength: float) -> torch.Tensor:
    xt, yt = torch.from_numpy(x).double(), torch.from_numpy(y).double()
    w = torch.zeros(x.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        z = xt @ w[:-1] + w[-1]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z, yt) + strength * w[:-1].square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--cases", type=Path, required=True, help="cases.csv with a patient column (halves by whole groups)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    patient = {r["case"]: r.get("patient") or r["case"] for r in csv.DictReader(open(a.cases))}
    results = {"command": " ".join(sys.argv), "runs": []}
    for rd in a.runs:
        cfg = load_run_config(rd)
        val = load_split_part(rd, cfg)
        net, _ = load_network(rd, cfg, val.images.shape[1])
        feats, peaks = features_and_peaks(net.float().eval(), val.images)
        lesion = val.positive
        cases = [m["case_id"] for m in val.meta]
        groups = sorted({patient[c] for c in cases})
        rng = np.random.default_rng(a.seed)
        first = set(rng.permutation(groups)[: len(groups) // 2].tolist())
        half = np.array([patient[c] in first for c in cases])
        row = {"run": str(rd), "n": int(len(lesion)), "normal": int((~lesion).sum()), "halves": []}
        for fit_on in (half, ~half):
            score_on = ~fit_on
            mu, sd = feats[fit_on].mean(0), feats[fit_on].std(0) + 1e-6
            z = (feats - mu) / sd
            h = {"peak": auroc(peaks[score_on & lesion], peaks[score_on & ~lesion])}
            for s in STRENGTHS:
                w = fit_logistic(z[fit_on], lesion[fit_on].astype(np.float64), s).numpy()
                score = z @ w[:-1] + w[-1]
                h[f"probe_l2_{s:g}"] = auroc(score[score_on & lesion], score[score_on & ~lesion])
            row["halves"].append(h)
        print(rd.name, " | ".join(", ".join(f"{k} {v:.3f}" for k, v in h.items()) for h in row["halves"]), flush=True)
        results["runs"].append(row)
    a.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
