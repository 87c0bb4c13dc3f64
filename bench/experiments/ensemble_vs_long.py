"""At equal total compute, is a k-fold ensemble better than one long model? One invocation, BUSI split v2.

Trains, one after the other on this machine with medseg's defaults (the plan sets input size,
batch and epochs from each budget):

* one model with a budget of B minutes (`--budget-min`, 15);
* one model with k x B minutes (`--long-min`, 75);
* a k-fold experiment (`medseg fit --folds k`), B minutes per fold;

then scores every variant on the fixed test 20% of BUSI split v2 (156 images, 22 normal) with one
scorer: the single models raw and with their validation-tuned rule; the fold ensemble raw, raw
with dihedral TTA, and with the rule tuned on its out-of-fold predictions. Paired per-image Dice
statistics (bootstrap CI, Wilcoxon) for each variant against the long model and the short one.

The single models validate on 15% of the training patients (pseudo-patients, `cases.csv`
`patient`; stratified normal / not normal, RandomState(0)); the experiment's folds are drawn from
all training patients. The test images are never used to choose anything.

    .venv/bin/python -u bench/experiments/ensemble_vs_long.py ../shared/data/busi --out runs/bench-ensemble

Writes OUT/results.json and OUT/results.md. Rerun the same command after a kill: finished runs
are reused and an unfinished run or experiment is resumed where it stopped.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
MEDSEG = REPO / ".venv" / "bin" / "medseg"


def log(msg: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {msg}", flush=True)


def sh(args: list, logfile: Path) -> float:
    log("$ medseg " + " ".join(map(str, args)))
    t0 = time.time()
    with open(logfile, "a") as f:
        proc = subprocess.run([str(MEDSEG), *map(str, args)], stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"medseg {args[0]} failed ({proc.returncode}); see {logfile}")
    return time.time() - t0


def patient_split(busi: Path, val_share: float = 0.15, seed: int = 0) -> dict:
    """Patients (pseudo-patient groups) of split v2: test as v2 test; val = 15% of the training patients."""
    with open(busi / "cases.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    v2 = json.loads((busi / "split.json").read_text())
    patient = {r["case"]: r["patient"] for r in rows}
    normal = {r["patient"] for r in rows if r["class"] == "normal"}
    test = sorted({patient[c] for c in v2["test"]})
    train_all = sorted({patient[c] for c in v2["train"]})
    rng = np.random.RandomState(seed)
    val: list[str] = []
    for stratum in (sorted(p for p in train_all if p in normal), sorted(p for p in train_all if p not in normal)):
        order = [stratum[i] for i in rng.permutation(len(stratum))]
        val += order[: int(round(val_share * len(stratum)))]
    return {"train": sorted(set(train_all) - set(val)), "val": sorted(val), "test": test,
            "method": f"patients of split v2; val = {val_share:.0%} of the training patients per stratum (normal or not), RandomState({seed})"}


def per_case_scores(probs, masks, rule):
    """Per-image Dice, empty/empty -> 1, of the rule's masks (hard@0.5 when rule is None)."""
    from medseg.metrics import MetricContract
    from medseg.postprocess import PostProcess, case_dice

    rule = rule or PostProcess(0.5)
    c = MetricContract()
    return [case_dice(rule.apply(p), m > 0, c) for p, m in zip(probs, masks)]


def summary_of(dice, probs, masks, rule) -> dict:
    from medseg.metrics import MetricContract, score
    from medseg.postprocess import PostProcess

    rule = rule or PostProcess(0.5)
    s = score([rule.apply(p).astype(np.float32) for p in probs], [m > 0 for m in masks], MetricContract(threshold=0.5))["summary"]
    return {"dice": float(np.mean(dice)), "dice_nonempty": s["dice_nonempty"], "lesion_recall": s["lesion_recall"],
            "fp_rate_empty": s["fp_rate_empty"], "hd95": s["hd95"], "n": len(dice)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("busi", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--budget-min", type=float, default=15.0)
    ap.add_argument("--long-min", type=float, default=75.0)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    logfile = out / "log.txt"
    split = patient_split(a.busi.resolve(), seed=a.seed)
    (out / "split.json").write_text(json.dumps(split, indent=1))
    base = {
        "seed": a.seed, "output_dir": str(out / "runs"),
        "data": {"source": "images", "root": str(a.busi.resolve()), "cases_csv": str(a.busi.resolve() / "cases.csv"), "group_column": "patient"},
        "split": {"mode": "file", "file": str(out / "split.json")},
    }
    import yaml

    walls = {}
    todo = [("short", a.budget_min, None), ("long", a.long_min, None), ("experiment", a.budget_min, a.folds)]
    for name, minutes, k in todo:
        folder = out / "runs" / name
        cfg_path = out / f"{name}.yaml"
        cfg_path.write_text(yaml.safe_dump({**base, "name": name, "train": {"budget_minutes": minutes}}))
        if folder.exists():
            # a killed earlier invocation: finish what it started (so the ~3 h can span sessions)
            from medseg import runfolder as runfs

            done = (folder / runfs.POSTPROCESS).exists() if k else runfs.is_finished(folder)
            if done:
                log(f"{folder} exists and is finished: reused")
            else:
                walls[name] = sh(["fit", "--resume", folder, "--no-progress"], logfile)
                log(f"{name}: resumed, {walls[name] / 60:.1f} min more")
            continue
        walls[name] = sh(["fit", cfg_path, "--no-progress", *(["--folds", k] if k else [])], logfile)
        log(f"{name}: {walls[name] / 60:.1f} min")

    from medseg import runfolder as runfs
    from medseg.commands.experiment import ensemble_members
    from medseg.config import config_from_dict
    from medseg.data import load_data
    from medseg.data.arrays import stack_part
    from medseg.data.tta import DIHEDRAL
    from medseg.inference import run_probs
    from medseg.metrics.paired import paired_comparison
    from medseg.postprocess import PostProcess

    variants: dict[str, dict] = {}
    test_cases = split["test"]
    arrays_by_size = {}

    def test_arrays(cfg):
        key = tuple(cfg.data.input_size)
        if key not in arrays_by_size:
            loaded = load_data(cfg.data, with_masks=True)
            arrays_by_size[key] = stack_part(loaded, test_cases)
        return arrays_by_size[key]

    t0 = time.time()
    for name in ("short", "long"):
        run = out / "runs" / name
        cfg, state = runfs.load_run_config(run), runfs.load_state(run)
        arr = test_arrays(cfg)
        net, _ = runfs.load_network(run, cfg, state["in_channels"])
        raw = run_probs(net, arr.images, cfg, state)
        rule = runfs.load_postprocess(run)
        tuned = run_probs(net, arr.images, cfg, state, tta=rule.tta) if rule and rule.tta else raw
        variants[f"{name}, raw"] = {"probs": raw, "rule": None, "masks": arr.masks, "ids": [m["sample_id"] for m in arr.meta]}
        variants[f"{name}, tuned on validation ({rule.describe() if rule else 'none'})"] = {"probs": tuned, "rule": rule, "masks": arr.masks,
                                                                                          "ids": [m["sample_id"] for m in arr.meta]}
    exp = out / "runs" / "experiment"
    runs, nets, cfg, state, _ = ensemble_members([exp])
    arr = test_arrays(cfg)
    ids = [m["sample_id"] for m in arr.meta]
    ens = run_probs(nets, arr.images, cfg, state)
    ens_d4 = run_probs(nets, arr.images, cfg, state, tta=DIHEDRAL)
    oof_rule = runfs.load_postprocess(exp) or PostProcess(0.5)
    ens_rule = run_probs(nets, arr.images, cfg, state, tta=oof_rule.tta) if oof_rule.tta else ens
    fold_dice = []
    for run, net in zip(runs, nets):
        fold_dice.append(per_case_scores(run_probs(net, arr.images, cfg, state), arr.masks, None))
    variants[f"{a.folds}-fold ensemble, raw"] = {"probs": ens, "rule": None, "masks": arr.masks, "ids": ids}
    variants[f"{a.folds}-fold ensemble, raw, dihedral TTA"] = {"probs": ens_d4, "rule": None, "masks": arr.masks, "ids": ids}
    variants[f"{a.folds}-fold ensemble, OOF-tuned ({oof_rule.describe()})"] = {"probs": ens_rule, "rule": oof_rule, "masks": arr.masks, "ids": ids}
    scoring_s = time.time() - t0

    table, per_case = [], {}
    for name, v in variants.items():
        d = per_case_scores(v["probs"], v["masks"], v["rule"])
        per_case[name] = dict(zip(v["ids"], d))
        table.append({"variant": name, **summary_of(d, v["probs"], v["masks"], v["rule"])})
    mean_fold = float(np.mean([np.mean(f) for f in fold_dice]))
    refs = [next(n for n in variants if n.startswith("long, tuned")), next(n for n in variants if n.startswith("short, tuned"))]
    paired = []
    for ref in refs:
        for name in variants:
            if name != ref:
                paired.append(paired_comparison(ref, per_case[ref], name, per_case[name], resamples=10_000, seed=0))
    exp_doc = runfs.read_json(exp / runfs.EXPERIMENT)
    oof = runfs.read_json(exp / runfs.SUMMARY)
    pp = runfs.read_json(exp / runfs.POSTPROCESS)
    results = {
        "date": dt.datetime.now().isoformat(timespec="minutes"), "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cpus",
        "budgets_min": {"short": a.budget_min, "long": a.long_min, "per_fold": a.budget_min, "folds": a.folds},
        "wall_s": walls, "scoring_s": scoring_s, "table": table, "mean_single_fold_dice": mean_fold,
        "paired": paired, "oof": {"raw_dice": oof["dice"], "leave_one_fold_out": oof["leave_one_fold_out"], "rule": pp["chosen"],
                                  "reason": pp["reason"], "tta_sets": pp.get("tta_sets"), "tta_reason": pp.get("tta_reason")},
        "folds": [len(f["val"]) for f in exp_doc["folds"]], "n_test": len(ids), "split": split["method"],
    }
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    lines = ["| variant | Dice (empty = one) | Dice, lesion images | lesion recall | FP rate on normals | HD95 px |", "|---|---|---|---|---|---|"]
    for r in table:
        lines.append(f"| {r['variant']} | {r['dice']:.3f} | {r['dice_nonempty']:.3f} | {r['lesion_recall']:.3f} | {r['fp_rate_empty']:.3f} | {r['hd95']:.1f} |")
    lines += ["", f"mean single-fold Dice (raw): {mean_fold:.3f}", "", "| A | B | B − A | 95% CI | Wilcoxon p | verdict |", "|---|---|---|---|---|---|"]
    for p in paired:
        lines.append(f"| {p['a']} | {p['b']} | {p['mean_diff']:+.3f} | {p['ci_low']:+.3f} to {p['ci_high']:+.3f} | {p['p_value']:.2g} | {p['verdict']} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
