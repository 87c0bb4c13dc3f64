"""Cross-validation of default candidates inside a set's training part (the test part is never read).

The training cases of the prepared copy (bench/recipe/prepare.py: its train + val) are cut
into K folds of whole `patient` groups (the copy's cases.csv; BUSI split v2's pseudo-patients,
so no near-copy of a lesion is on both sides of a fold), stratified by class; every candidate trains on K-1 folds under the same wall-clock
budget and is scored on the held-out fold. Per fold and candidate: the raw per-image Dice
(threshold 0.5, empty=one), and the post-processed Dice, whose rule `medseg tune` picks on that
same fold (so it is optimistic by the same amount for every candidate; use it to rank, not to
report).

Nested (``--inner-val F``), for how a run should validate and tune on a small training set: the
held-out fold becomes the run's *test* part, never seen in training, checkpoint choice or tuning;
the run validates (best epoch, tuning) on a share F of whole patient groups of the remaining
folds (at least one group) and trains on the rest. With ``--train-cap N`` the remaining folds are
first cut to N images of whole random groups, so a large set stands in for a set of tens of
images while its held-out fold stays large enough to score. Each run is then scored on its test
part with ``medseg evaluate --split test``, once from the best checkpoint and once from the last
(``--checkpoint last``): raw, and with the rule tuned on its own validation cases. Nested runs set
``train.checkpoint=best`` and ``postprocess.tune=true`` (before the candidate's own keys), so both
choices are measured where the plan would keep the last epoch untuned (fewer than 30 validation cases).

    .venv/bin/python -u bench/recipe/cv_defaults.py /work/cache/busi256 --out runs/bench-cv \\
        --budget-min 5 --folds 2 --candidate default= --candidate r34=model.name=flexunet-resnet34
    .venv/bin/python -u bench/recipe/cv_defaults.py /work/cache/busi256 --out runs/bench-small \\
        --budget-min 3 --folds 2 --inner-val 0.15 --train-cap 40 --candidate default=
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def patient_groups(cases, rows: dict[str, dict]) -> dict[str, list[str]]:
    """{group: its cases, sorted}: the `patient` column of rows (each case its own group without it)."""
    groups: dict[str, list[str]] = {}
    for c in sorted(cases):
        groups.setdefault(rows.get(c, {}).get("patient") or c, []).append(c)
    return groups


def folds_of(cases: list[str], k: int, seed: int, rows: dict[str, dict] | None = None) -> list[list[str]]:
    """K folds of whole patient groups, stratified by class.

    Groups come from `rows[case]["patient"]` (each case its own group without it); a group's class
    is its first case's (`class` column; without rows, the stem before the last underscore). Within a
    class, groups are dealt in a random order, each to the fold holding the fewest images so far.
    """
    rows = rows or {}
    groups = patient_groups(cases, rows)

    def cls_of(case: str) -> str:
        # without cases.csv, BUSI-style names carry the class (benign_001); a cases.csv without `class`: one class
        return rows.get(case, {}).get("class") or ("all" if rows else case.rsplit("_", 1)[0])

    rng = np.random.RandomState(seed)
    folds: list[list[str]] = [[] for _ in range(k)]
    for cls in sorted({cls_of(m[0]) for m in groups.values()}):
        names = sorted(g for g, m in groups.items() if cls_of(m[0]) == cls)
        for j in rng.permutation(len(names)):
            min(folds, key=len).extend(groups[names[j]])
    return [sorted(f) for f in folds]


def nested_split(pool: list[str], held: list[str], val_share: float, cap: int | None, seed: int,
                 rows: dict[str, dict] | None = None) -> dict[str, list[str]]:
    """{train, val, test}: test = the held-out fold; val = whole random patient groups of the rest
    (at least one group, until val_share of the rest is reached); train = the others. With `cap`, the
    rest is first cut to whole random groups until it holds at least `cap` images."""
    rng = np.random.RandomState(seed)
    groups = patient_groups(set(pool) - set(held), rows or {})
    order = [sorted(groups)[i] for i in rng.permutation(len(groups))]
    if cap is not None:
        kept, n = [], 0
        for g in order:
            if n >= cap:
                break
            kept.append(g)
            n += len(groups[g])
        order = kept
    n_rest = sum(len(groups[g]) for g in order)
    val: list[str] = []
    for g in order:
        if val and len(val) >= val_share * n_rest:
            break
        val.extend(groups[g])
    in_val = set(val)
    train = sorted(c for g in order for c in groups[g] if c not in in_val)
    if not train:
        raise SystemExit(f"--inner-val {val_share}: nothing left to train on")
    return {"train": train, "val": sorted(val), "test": sorted(held)}


def evaluate_test(run_dir: Path, checkpoint: str) -> dict:
    """`medseg evaluate RUN --split test --checkpoint C --json` (a folder evaluations/test[-last] beside the run)."""
    folder = run_dir / "evaluations" / ("test" if checkpoint == "best" else "test-last")
    if not (folder / "summary.json").is_file():
        cmd = [sys.executable, "-m", "medseg.cli", "evaluate", str(run_dir), "--split", "test", "--checkpoint", checkpoint,
               "--no-progress", "--json"]
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        if r.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    return json.loads((folder / "summary.json").read_text())


def split_overrides(sets: str) -> list[str]:
    """'a=1,b={x: 1, y: 2}' -> ['a=1', 'b={x: 1, y: 2}']: commas inside YAML brackets stay."""
    out, depth, cur = [], 0, ""
    for ch in sets:
        depth += ch in "{["
        depth -= ch in "}]"
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    return [s for s in out + [cur] if s]


def _num(x) -> str:
    """Two decimals, or n/a where a set has no such figure (no empty images: no false-alarm rate)."""
    return "n/a" if x is None or x != x else f"{x:.2f}"


def _mean(rows: list[dict], key: str) -> str:
    vals = [r[key] for r in rows if r[key] is not None]
    return _num(float(np.mean(vals)) if vals else None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("prep", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--budget-min", type=float, default=5.0)
    ap.add_argument("--folds", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", action="store_true", help="OUT exists: keep its finished runs, train the others")
    ap.add_argument("--inner-val", type=float, help="nested: the held-out fold is each run's test part; the run validates "
                    "on this share of the other folds' patient groups")
    ap.add_argument("--train-cap", type=int, help="nested: cut the other folds to about this many images (whole groups)")
    ap.add_argument("--candidate", action="append", required=True,
                    help="NAME=key=value[,key=value...] (medseg --set overrides; 'NAME=' for the defaults)")
    a = ap.parse_args()
    if a.out.exists() and not a.resume:
        sys.exit(f"{a.out}: exists; never overwritten (--resume keeps its finished runs)")
    a.out.mkdir(parents=True, exist_ok=True)
    a.out, a.prep = a.out.resolve(), a.prep.resolve()  # the configs resolve relative paths against their own folder
    split = json.loads((a.prep / "split.json").read_text())
    pool = sorted(split["train"] + split["val"])  # the training part; split["test"] is never used here
    cases_csv = a.prep / "cases.csv"
    rows = {r["case"]: r for r in csv.DictReader(open(cases_csv))} if cases_csv.is_file() else {}
    folds = folds_of(pool, a.folds, a.seed, rows)
    size = int(split.get("size", 256))
    results = {"command": " ".join(sys.argv), "budget_min": a.budget_min, "folds": [len(f) for f in folds], "runs": []}
    for cand in a.candidate:
        name, _, sets = cand.partition("=")
        overrides = split_overrides(sets)
        if a.inner_val is not None:
            # nested runs measure both choices the plan makes for small validation parts (the best epoch or the last,
            # tuned or raw), so they keep best.ckpt and tune; a candidate's own --set comes after and wins
            overrides = ["train.checkpoint=best", "postprocess.tune=true"] + overrides
        for k, held in enumerate(folds):
            fold_split = a.out / f"split_fold{k}.json"
            if not fold_split.exists():
                if a.inner_val is not None:
                    part = nested_split(pool, held, a.inner_val, a.train_cap, a.seed + 1000 * (k + 1), rows)
                else:
                    part = {"train": sorted(set(pool) - set(held)), "val": held}
                fold_split.write_text(json.dumps(part))
            part = json.loads(fold_split.read_text())
            cfg = a.out / f"{name}_fold{k}.yaml"
            cfg.write_text(
                f"name: {name}-fold{k}\noutput_dir: {a.out / 'runs'}\nseed: {a.seed}\n"
                f"data: {{source: images, root: {a.prep}, input_size: [{size}, {size}]}}\n"
                f"split: {{mode: file, file: {fold_split}}}\ntrain: {{budget_minutes: {a.budget_min}}}\n"
            )
            run_dir = a.out / "runs" / f"{name}-fold{k}"
            cmd = [sys.executable, "-m", "medseg.cli", "fit", str(cfg), "--no-progress"] + [x for s in overrides for x in ("--set", s)]
            print(f"[{time.strftime('%H:%M:%S')}] {name} fold {k}: {' '.join(cmd[3:])}", flush=True)
            t0 = time.time()
            if not (run_dir / "metrics" / "summary.json").is_file():
                if run_dir.exists():
                    raise SystemExit(f"{run_dir}: unfinished; remove it to train it again")
                r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
                (a.out / f"{name}_fold{k}.log").write_text(r.stdout + r.stderr)
                if r.returncode != 0:
                    raise SystemExit(f"{name} fold {k} failed; see {a.out / f'{name}_fold{k}.log'}")
            s = json.loads((run_dir / "metrics" / "summary.json").read_text())
            pp = s.get("postprocessed") or s
            row = {"candidate": name, "overrides": overrides, "fold": k, "dice_raw": s["dice"], "dice_postprocessed": pp["dice"],
                   "fp_rate_empty_raw": s.get("fp_rate_empty"), "fp_rate_empty_postprocessed": pp.get("fp_rate_empty"),
                   "dice_nonempty_raw": s.get("dice_nonempty"), "best_epoch": s.get("best_epoch"), "wall_s": time.time() - t0}
            if a.inner_val is not None:
                # the run's own metrics are on its validation cases; the held-out fold is its test part
                row["val_dice_raw"], row["val_dice_postprocessed"] = row["dice_raw"], row["dice_postprocessed"]
                row["n_train"], row["n_val"] = len(part["train"]), len(part["val"])
                row["rule"] = pp.get("rule_text") if s.get("postprocessed") else "raw"
                for ck in ("best", "last"):
                    t = evaluate_test(run_dir, ck)
                    tp = t.get("postprocessed") or t
                    row[f"test_{ck}_raw"], row[f"test_{ck}_postprocessed"] = t["dice"], tp["dice"]
                    row[f"test_{ck}_fp_raw"], row[f"test_{ck}_fp_postprocessed"] = t.get("fp_rate_empty"), tp.get("fp_rate_empty")
                    row[f"{ck}_epoch"] = t.get("best_epoch", t.get("epoch"))
                row["dice_raw"], row["dice_postprocessed"] = row["test_best_raw"], row["test_best_postprocessed"]
                row["fp_rate_empty_raw"], row["fp_rate_empty_postprocessed"] = row["test_best_fp_raw"], row["test_best_fp_postprocessed"]
            results["runs"].append(row)
            print(f"   dice raw {row['dice_raw']:.4f}, post-processed {row['dice_postprocessed']:.4f}, "
                  f"fp_rate_empty {_num(row['fp_rate_empty_raw'])} -> {_num(row['fp_rate_empty_postprocessed'])}"
                  + (f"; last epoch raw {row['test_last_raw']:.4f}, post-processed {row['test_last_postprocessed']:.4f}"
                     f" (epochs {row['best_epoch']} / {row['last_epoch']}; {row['rule']})" if a.inner_val is not None else ""), flush=True)
            (a.out / "results.json").write_text(json.dumps(results, indent=1))
    lines = ["| candidate | overrides | Dice raw (mean ± sd over folds) | Dice post-processed | FP rate normals raw → post-processed |", "|---|---|---|---|---|"]
    for cand in dict.fromkeys(r["candidate"] for r in results["runs"]):
        rs = [r for r in results["runs"] if r["candidate"] == cand]
        f = lambda key: f"{np.mean([r[key] for r in rs]):.3f} ± {np.std([r[key] for r in rs]):.3f}"  # noqa: E731
        lines.append(f"| {cand} | {' '.join(rs[0]['overrides']) or '(defaults)'} | {f('dice_raw')} | {f('dice_postprocessed')} | "
                     f"{_mean(rs, 'fp_rate_empty_raw')} → {_mean(rs, 'fp_rate_empty_postprocessed')} |")
    if a.inner_val is not None:
        lines += ["", "Nested: scored on each fold's test part (never validated or tuned on).", "",
                  "| candidate | fold | train / val images | val Dice raw → tuned | test raw best | test tuned best | test raw last | "
                  "test tuned last | FP normals raw → tuned (best) | epochs best / last | rule |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in results["runs"]:
            lines.append(f"| {r['candidate']} | {r['fold']} | {r['n_train']} / {r['n_val']} | {r['val_dice_raw']:.3f} → "
                         f"{r['val_dice_postprocessed']:.3f} | {r['test_best_raw']:.3f} | {r['test_best_postprocessed']:.3f} | "
                         f"{r['test_last_raw']:.3f} | {r['test_last_postprocessed']:.3f} | {_num(r['test_best_fp_raw'])} → "
                         f"{_num(r['test_best_fp_postprocessed'])} | {r['best_epoch']} / {r['last_epoch']} | {r['rule']} |")
    (a.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
