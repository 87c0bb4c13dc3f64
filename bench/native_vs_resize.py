"""Resize everything to the input size, or train on patches of larger images and predict with sliding windows? At equal wall-clock budget.

Two `medseg fit`s with the same budget (`train.budget_minutes`; the plan fills every other key),
on a set's patient split (BUSI split v2, CHASE_DB1, ...): validation = 15% of the training
patients (what a default is chosen on), test = the split's test part (what is reported):

* ``resize``: the default: the plan's input size (256² on a CPU), whole images;
* ``patches``: images kept at ``--native`` px (BUSI's median image is ~500x600, so 512² is near
  its native resolution), trained on ``--patch``² crops (a third centred on foreground,
  nnU-Net's share) and predicted window by window (`eval.sliding_window`: Gaussian, overlap 0.5).

Reported per variant: validation and test Dice (per image, empty = 1; raw and with the tuned
post-processing), lesion recall by size bin on test, the paired test comparison, and inference
images/s on the test images with and without flip TTA (each timed after one warm-up batch).

    .venv/bin/python bench/native_vs_resize.py ../shared/data/busi --out runs/bench-native-busi --minutes 10 --native 512
    .venv/bin/python bench/native_vs_resize.py /data/siim --siim 1000 --out runs/bench-native-siim --minutes 10 --native 1024

Prints a Markdown table and writes OUT/results.json.
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
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))



def patient_split(root: Path, val_share: float = 0.15, seed: int = 0) -> dict:
    """The set's split.json by patient (cases.csv): test as there; val = val_share of the training patients (per class if listed)."""
    with open(root / "cases.csv", newline="") as f:
        table = list(csv.DictReader(f))
    given = json.loads((root / "split.json").read_text())
    patient = {r["case"]: r["patient"] for r in table}
    klass = {r["patient"]: r.get("class", "") for r in table}
    test = sorted({patient[c] for c in given["test"]})
    train_all = sorted({patient[c] for c in given["train"]})
    rng = np.random.RandomState(seed)
    val: list[str] = []
    for stratum in sorted({klass[p] for p in train_all}):
        members = sorted(p for p in train_all if klass[p] == stratum)
        order = [members[i] for i in rng.permutation(len(members))]
        val += order[: max(1, int(round(val_share * len(members))))]
    return {"train": sorted(set(train_all) - set(val)), "val": sorted(val), "test": test,
            "method": f"patients of {root.name}/split.json; val = {val_share:.0%} of the training patients per class, RandomState({seed})"}


def variants(native: int, patch: int) -> dict:
    return {
        "resize": {},
        "patches": {
            "data": {"input_size": [native, native]},
            "sampler": {"crop_size": [patch, patch], "foreground_crop_share": 0.33},
            "eval": {"sliding_window": {"roi_size": [patch, patch], "overlap": 0.5, "mode": "gaussian"}},
        },
    }


def merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def rows(path: Path) -> list[dict]:
    return list(csv.DictReader(open(path))) if path.exists() else []


def images_per_s(run: Path, tta) -> float:
    from medseg import runfolder as runfs
    from medseg.inference import run_probs

    cfg, state = runfs.load_run_config(run), runfs.load_state(run)
    part = runfs.load_split_part(run, cfg, part="test", progress=False)
    net, _ = runfs.load_network(run, cfg, state["in_channels"])
    images = np.asarray(part.images[: min(48, len(part.images))])
    run_probs(net, images[:8], cfg, state, tta=tta)  # warm-up
    t0 = time.perf_counter()
    run_probs(net, images, cfg, state, tta=tta)
    return len(images) / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("root", type=Path, help="images/, masks/, cases.csv (case, patient[, class]) and split.json (train, test)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--native", type=int, default=512)
    ap.add_argument("--patch", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--siim", type=int, metavar="N",
                    help="root is a SIIM-like set (bench/synthetic_sets.py siim): use its first N images, a seeded "
                         "holdout of 15%% validation and 20%% test (one image per patient)")
    a = ap.parse_args(argv)
    root, out = a.root.resolve(), a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if a.siim:
        from bench.flat_memory import link_cases

        data = link_cases(root, out / "data", "siim", a.siim)
        split = {"mode": "holdout", "val_fraction": 0.15, "test_fraction": 0.2}
    else:
        (out / "split.json").write_text(json.dumps(patient_split(root, seed=a.seed), indent=1))
        data = {"source": "images", "root": str(root), "cases_csv": str(root / "cases.csv"), "group_column": "patient"}
        split = {"mode": "file", "file": str(out / "split.json")}
    base = {
        "seed": a.seed, "output_dir": str(out / "runs"),
        "data": {**data, "cache_dir": str(out / "cache")},
        "split": split,
        "train": {"budget_minutes": a.minutes},
    }
    medseg = [sys.executable, "-m", "medseg.cli"]
    results = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "variants": {}}
    for name, over in variants(a.native, a.patch).items():
        run = out / "runs" / name
        cfg_path = out / f"{name}.yaml"
        cfg_path.write_text(yaml.safe_dump(merge({**base, "name": name}, over)))
        if not (run / "state.json").exists() or not json.loads((run / "state.json").read_text()).get("finished"):
            t0 = time.perf_counter()
            with open(out / f"{name}.log", "w") as log:
                subprocess.run([*medseg, "fit", str(cfg_path), "--no-progress"], check=True, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
            print(f"{name}: fit {(time.perf_counter() - t0) / 60:.1f} min", file=sys.stderr, flush=True)
        ev = out / "runs" / name / "evaluations" / "test"
        if not ev.exists():
            subprocess.run([*medseg, "evaluate", str(run), "--split", "test", "--no-progress"], check=True, cwd=REPO,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        summary = json.loads((ev / "summary.json").read_text())
        val = json.loads((run / "metrics" / "summary.json").read_text())
        cases = rows(ev / "cases.csv")
        recall = {}
        for b in ("small", "medium", "large"):
            n = sum(float(r.get(f"n_lesions_truth_{b}") or 0) for r in cases)
            found = sum(float(r.get(f"n_lesions_found_{b}") or 0) for r in cases)
            recall[b] = {"lesions": int(n), "recall": found / n if n else None}
        epochs = rows(run / "metrics" / "epochs.csv")
        results["variants"][name] = {
            "val_dice": val.get("dice"), "val_dice_tuned": (val.get("postprocessed") or {}).get("dice"),
            "test_dice": summary["dice"], "test_dice_tuned": (summary.get("postprocessed") or {}).get("dice"),
            "test_lesion_recall": summary.get("lesion_recall"), "test_recall_by_size": recall,
            "per_case_test_dice": {r["case"]: float(r["dice"]) for r in cases},
            "epochs": len(epochs), "train_images_per_s": float(np.median([float(r["train_images_per_s"]) for r in epochs])) if epochs else None,
            "inference_images_per_s": images_per_s(run, False), "inference_images_per_s_flip_tta": images_per_s(run, True),
        }
        (out / "results.json").write_text(json.dumps(results, indent=1))
    from medseg.metrics.paired import paired_comparison

    v = results["variants"]
    results["paired_test_dice_patches_vs_resize"] = paired_comparison("resize", v["resize"]["per_case_test_dice"], "patches",
                                                                      v["patches"]["per_case_test_dice"])
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print("| variant | epochs | train img/s | val Dice raw / tuned | test Dice raw / tuned | test lesion recall small / medium / large | "
          "inference img/s, no TTA / flip |\n|---|---|---|---|---|---|---|")
    f = lambda x: "–" if x is None else f"{x:.3f}"  # noqa: E731
    for name, r in v.items():
        rec = " / ".join(f"{f(r['test_recall_by_size'][b]['recall'])} (n={r['test_recall_by_size'][b]['lesions']})" for b in ("small", "medium", "large"))
        print(f"| {name} | {r['epochs']} | {r['train_images_per_s']:.1f} | {f(r['val_dice'])} / {f(r['val_dice_tuned'])} | "
              f"{f(r['test_dice'])} / {f(r['test_dice_tuned'])} | {rec} | {r['inference_images_per_s']:.1f} / {r['inference_images_per_s_flip_tta']:.1f} |")
    p = results["paired_test_dice_patches_vs_resize"]
    print(f"\npatches - resize, test Dice: {p['mean_diff']:+.3f} (CI {p['ci_low']:+.3f} to {p['ci_high']:+.3f}, p {p['p_value']:.3g}): {p['verdict']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
