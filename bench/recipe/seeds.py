"""Seeds of the recipe benchmark side by side: mean and spread per method, the paired statistics per seed.

Reads OUT/*/results.json written by `bench/recipe/run.py --seed S --out OUT/NAME` (one invocation
per seed with every method, or one per seed and method: results of one seed are merged) and
scores each seed's predictions against the notebook's on the same test images
(`paired.paired`: bootstrap CI of the mean per-image Dice difference, Wilcoxon p, ratio of
the means). Writes OUT/seeds.json and prints the markdown tables for BENCHMARKS.md.

    for s in 0 1 2; do .venv/bin/python -u bench/recipe/run.py ../shared/data/busi --out OUT/seed$s --methods medseg,notebook --seed $s; done
    .venv/bin/python bench/recipe/seeds.py OUT
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.recipe.paired import paired  # noqa: E402

METHODS = {"medseg default": "medseg/pred", "medseg default, raw (no post-processing)": "medseg/pred_raw", "notebook baseline": "notebook/pred"}
BASELINE = "notebook baseline"
FIELDS = ("dice", "dice_nonempty", "lesion_recall", "fp_rate_empty")


def _spread(values: list[float]) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.3f} ± {v.std(ddof=1):.3f} ({v.min():.3f}–{v.max():.3f})" if v.size > 1 else f"{v.mean():.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="folder holding */results.json")
    a = ap.parse_args()
    by_seed: dict[int, dict] = {}  # seed -> {"prep": ..., "methods": {method: its results}, "roots": {method: its output folder}}
    for path in sorted(a.out.glob("*/results.json")):
        res = json.loads(path.read_text())
        seed = by_seed.setdefault(int(res["seed"]), {"prep": Path(res["prep"]), "methods": {}, "roots": {}})
        for k, v in res["methods"].items():
            if k in seed["methods"]:
                sys.exit(f"{path}: seed {res['seed']}'s {k!r} is also in {seed['roots'][k] / 'results.json'}")
            seed["methods"][k], seed["roots"][k] = v, path.parent
    if not by_seed:
        sys.exit(f"{a.out}: no */results.json")
    rows, pairs = [], []
    for s, seed in sorted(by_seed.items()):
        m, root = seed["methods"], seed["roots"]
        rows.append({"seed": s, **{k: {f: m[k]["score"][f] for f in FIELDS} | {
            "img_s": m[k]["stats"].get("train_images_per_s"), "epochs": m[k]["stats"].get("epochs")} for k in METHODS if k in m}})
        for k, rel in METHODS.items():
            if k != BASELINE and k in m and BASELINE in m:
                pairs.append({"seed": s, "method": k, **paired(root[k], rel, METHODS[BASELINE], seed["prep"], root[BASELINE])})
    out = {"seeds": rows, "paired": pairs}
    print("| method | " + " | ".join(FIELDS) + " | train img/s |\n|---|" + "---|" * (len(FIELDS) + 1))
    for k in METHODS:
        have = [r[k] for r in rows if k in r]
        if have:
            print(f"| {k} | " + " | ".join(_spread([h[f] for h in have]) for f in FIELDS) + f" | {_spread([h['img_s'] for h in have])} |")
    print("\n| seed | method | Dice | notebook Dice | ratio (95% CI) | difference (95% CI) | Wilcoxon p | better / worse images | verdict |\n|---|---|---|---|---|---|---|---|---|")
    for p in pairs:
        print(f"| {p['seed']} | {p['method']} | {p['dice_a']:.3f} | {p['dice_b']:.3f} | {p['ratio']:.3f} ({p['ratio_ci95'][0]:.2f}–{p['ratio_ci95'][1]:.2f}) | "
              f"{p['mean_diff']:+.3f} ({p['ci95'][0]:+.3f} to {p['ci95'][1]:+.3f}) | {p['wilcoxon_p']:.2g} | {p['a_better_cases']} / {p['b_better_cases']} | {p['verdict']} |")
    for k in METHODS:
        r = [p["ratio"] for p in pairs if p["method"] == k]
        if r:
            out.setdefault("ratio_of_seed_means", {})[k] = float(np.mean([x[k]["dice"] for x in rows if k in x]) / np.mean([x[BASELINE]["dice"] for x in rows]))
            print(f"\n{k} / notebook: per-seed ratios {', '.join(f'{x:.3f}' for x in r)}; ratio of the seed means {out['ratio_of_seed_means'][k]:.3f}")
    (a.out / "seeds.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
