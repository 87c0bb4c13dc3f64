"""Paired per-image comparison of cv_defaults.py runs against a reference run, fold by fold.

Every run of one fold is scored on the same held-out images in the same order (the fold's
split file), so per-image differences pair by case name: raw from `metrics/cases.csv`, the tuned
pipeline from `metrics/cases_postprocessed.csv` (runs before 2026-12-06 named its cases by their
index only; those pair by index).
Statistics are medseg compare's: bootstrap 95% CI of the mean difference (10,000 resamples,
seed 0), two-sided Wilcoxon p, and the verdict (CI excludes 0 and p < 0.05).

    .venv/bin/python bench/recipe/cv_paired.py /work/bench-runs/s13/cv-chase/runs ema10 siim
    .venv/bin/python bench/recipe/cv_paired.py /work/bench-runs/s13/cv-busi-loss/runs siim --ref-dir /work/bench-runs/s13/cv-busi-ema/runs

Nested runs (cv_defaults.py --inner-val) are scored on their test part beside the run: pair them
with ``--metrics evaluations/test``; the last checkpoint against the best one of the same run with
``--ref-metrics evaluations/test --metrics evaluations/test-last`` and the reference as candidate;
each run's tuned pipeline against its own raw prediction with ``--tuned-vs-raw``.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from medseg.metrics.paired import A_BETTER, B_BETTER, bootstrap_mean_ci, verdict, wilcoxon_p  # noqa: E402

FILES = {"raw": "cases.csv", "post-processed": "cases_postprocessed.csv"}


def per_case(run: Path, which: str, metrics: str = "metrics") -> dict[str, float]:
    with open(run / metrics / FILES[which]) as f:
        rows = list(csv.DictReader(f))
    key = "case" if rows and rows[0].get("case") else "case_index"
    return {r[key]: float(r["dice"]) for r in rows}


def pair(ref: Path, other: Path, which: str, ref_metrics: str = "metrics", metrics: str = "metrics", ref_which: str | None = None) -> dict:
    """other - ref per image: means, mean difference, CI, Wilcoxon p, images better/worse, verdict."""
    a, b = per_case(ref, ref_which or which, ref_metrics), per_case(other, which, metrics)
    if a.keys() != b.keys():
        raise SystemExit(f"{ref} and {other}: not the same held-out images")
    keys = sorted(a)
    d = np.array([b[k] - a[k] for k in keys])
    low, high = bootstrap_mean_ci(d)
    p = wilcoxon_p(d)
    return {"n": len(d), "ref": float(np.mean([a[k] for k in keys])), "other": float(np.mean([b[k] for k in keys])),
            "diff": float(d.mean()), "ci": (low, high), "p": p, "better": int((d > 0).sum()), "worse": int((d < 0).sum()),
            "code": (v := verdict(low, high, p, 0.05)), "verdict": {B_BETTER: f"{other.name} better", A_BETTER: f"{ref.name} better"}.get(v, v)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, help="the runs/ folder of a cv_defaults.py output")
    ap.add_argument("candidates", nargs="+", help="candidate names to compare with the reference")
    ap.add_argument("--ref", default="default", help="the reference candidate's name")
    ap.add_argument("--ref-dir", type=Path, help="the runs/ folder holding the reference (default: RUNS), for a reference "
                    "trained by another cv_defaults.py call on the same folds")
    ap.add_argument("--folds", type=int, default=2)
    ap.add_argument("--metrics", default="metrics", help="the candidates' per-case folder inside a run (nested: evaluations/test)")
    ap.add_argument("--ref-metrics", help="the reference's (default: --metrics)")
    ap.add_argument("--tuned-vs-raw", action="store_true", help="pair each candidate's tuned pipeline with its own raw prediction")
    a = ap.parse_args()
    print("| candidate | fold | scores | reference -> candidate | difference [95% CI] | Wilcoxon p | images better / worse | verdict |")
    print("|---|---|---|---|---|---|---|---|")
    for cand in a.candidates:
        for k in range(a.folds):
            if a.tuned_vs_raw:
                run = a.runs / f"{cand}-fold{k}"
                r = pair(run, run, "post-processed", a.metrics, a.metrics, ref_which="raw")
                print(f"| {cand} | {k} | raw -> tuned | {r['ref']:.3f} -> {r['other']:.3f} | {r['diff']:+.3f} [{r['ci'][0]:+.3f}, "
                      f"{r['ci'][1]:+.3f}] | {r['p']:.2g} | {r['better']} / {r['worse']} | { {B_BETTER: 'tuned better', A_BETTER: 'raw better'}.get(r['code'], r['verdict'])} |")
                continue
            for which in FILES:
                ref_run = (a.ref_dir or a.runs) / f"{a.ref}-fold{k}"
                if which != "raw" and not (ref_run / (a.ref_metrics or a.metrics) / FILES[which]).exists():
                    continue  # an untuned run (train.checkpoint last on a small validation part) has only raw scores
                r = pair(ref_run, a.runs / f"{cand}-fold{k}", which, a.ref_metrics or a.metrics, a.metrics)
                print(f"| {cand} | {k} | {which} | {r['ref']:.3f} -> {r['other']:.3f} | {r['diff']:+.3f} [{r['ci'][0]:+.3f}, "
                      f"{r['ci'][1]:+.3f}] | {r['p']:.2g} | {r['better']} / {r['worse']} | {r['verdict']} |")


if __name__ == "__main__":
    main()
