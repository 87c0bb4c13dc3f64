"""Paired comparison of two methods of one bench/recipe/run.py invocation, on the same test images.

Scores each method's binary PNGs with bench/recipe/score.py (per-image Dice, empty=one) and
reports the mean per-image difference with medseg compare's statistics: a percentile-bootstrap
95% CI (10,000 resamples, seed 0) and the two-sided Wilcoxon signed-rank p-value; also a
bootstrap CI of the ratio of mean Dice (the issue's goal is stated as a ratio).

    .venv/bin/python bench/recipe/paired.py runs/bench-recipe-v2 medseg/pred notebook/pred
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.recipe.score import score_predictions  # noqa: E402
from medseg.metrics.paired import A_BETTER, B_BETTER, bootstrap_mean_ci, verdict, wilcoxon_p  # noqa: E402


def paired(bench: Path, a: str, b: str, prep: Path, bench_b: Path | None = None) -> dict:
    """Per-image Dice difference a - b over the test images, its CI, Wilcoxon p, the ratio of means and compare's verdict.

    Args:
        bench: output folder of bench/recipe/run.py.
        a / b: prediction folders of the two methods, relative to bench.
        prep: the prepared data folder (its split.json names the test images).
        bench_b: the output folder b is relative to, when the two methods ran as separate invocations (default bench).
    """
    test = json.loads((prep / "split.json").read_text())["test"]
    da = np.array([r["dice"] for r in score_predictions(bench / a, prep, test)["rows"]])
    db = np.array([r["dice"] for r in score_predictions((bench_b or bench) / b, prep, test)["rows"]])
    diff = da - db
    low, high = bootstrap_mean_ci(diff)
    p = wilcoxon_p(diff)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(diff), size=(10_000, len(diff)))
    ratios = da[idx].mean(axis=1) / db[idx].mean(axis=1)
    return {
        "a": a, "b": b, "n_cases": len(diff), "dice_a": float(da.mean()), "dice_b": float(db.mean()),
        "mean_diff": float(diff.mean()), "ci95": [low, high], "wilcoxon_p": p,
        "ratio": float(da.mean() / db.mean()), "ratio_ci95": [float(x) for x in np.quantile(ratios, [0.025, 0.975])],
        "a_better_cases": int((diff > 0).sum()), "b_better_cases": int((diff < 0).sum()),
        # medseg compare's verdict reads differences as (its B) - (its A); ours are a - b
        "verdict": {B_BETTER: f"{a} better", A_BETTER: f"{b} better"}.get(v := verdict(low, high, p, 0.05), v),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bench", type=Path, help="output folder of bench/recipe/run.py")
    ap.add_argument("a", help="prediction folder of method A, relative to BENCH (e.g. medseg/pred)")
    ap.add_argument("b", help="prediction folder of method B (e.g. notebook/pred)")
    ap.add_argument("--prep", type=Path, default=Path("/work/cache/busi256"))
    a = ap.parse_args()
    print(json.dumps(paired(a.bench, a.a, a.b, a.prep), indent=1))

if __name__ == "__main__":
    main()
