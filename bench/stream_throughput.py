"""Training throughput with the data in memory vs streamed from the on-disk cache, with 0, 1 or 2 DataLoader workers.

Every variant is one `medseg fit` (its own process, tcmalloc preloaded by medseg) of the same
recipe on the same split: the model, batch, precision and augmentation the plan picks for BUSI
on this machine (flexunet-resnet34, batch 16, bf16 where native, medium augmentation,
channels_last), capped at ``--steps`` optimiser steps per epoch for ``--epochs`` epochs. The
figure is the median over epochs of ``train_images_per_s`` in metrics/epochs.csv (the training
loop only: loading, sampler, augmentation, the step, Lightning; not validation), and the first
epoch (worker start-up) is left out of the median. The cache is built once before the runs.

    .venv/bin/python bench/stream_throughput.py ../shared/data/busi --out runs/bench-stream

Prints a Markdown table and writes OUT/results.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
VARIANTS = [  # (name, from the cache, workers)
    ("memory, 0 workers", False, 0),
    ("cache, 0 workers", True, 0),
    ("cache, 1 worker", True, 1),
    ("cache, 2 workers", True, 2),
    ("memory, 2 workers", False, 2),
]


def recipe(root: Path, out: Path, size: int, steps: int, epochs: int, batch: int) -> dict:
    return {
        "name": "x", "output_dir": str(out / "runs"), "seed": 0,
        "data": {"source": "images", "root": str(root), "input_size": [size, size],
                 "cases_csv": str(root / "cases.csv"), "group_column": "patient"},
        # throughput only: a patient-grouped holdout of all 780 images (no figure here is a quality figure)
        "split": {"mode": "holdout", "val_fraction": 0.15},
        "model": {"name": "flexunet-resnet34"},
        "augment": {"preset": "medium"},
        "train": {"epochs": epochs, "batch_size": batch, "steps_per_epoch": steps, "precision": "auto", "channels_last": True,
                  "early_stopping": {"patience": 0}},
        "postprocess": {"tune": False},
        "plan": {"enabled": False},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("root", type=Path, help="BUSI folder (images/, masks/, cases.csv, split.json)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    a = ap.parse_args(argv)
    root, out = a.root.resolve(), a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    base = recipe(root, out, a.size, a.steps, a.epochs, a.batch)
    cache = out / "cache"
    medseg = [sys.executable, "-m", "medseg.cli"]
    cfg_path = out / "base.yaml"
    cfg_path.write_text(yaml.safe_dump(base))
    t0 = time.perf_counter()
    subprocess.run([*medseg, "cache", str(cfg_path), "--dir", str(cache)], check=True, cwd=REPO)
    results = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
               "cache_build_s": time.perf_counter() - t0, "recipe": base, "variants": {}}
    for name, cached, workers in VARIANTS:
        if a.only and name not in a.only:
            continue
        run = name.replace(", ", "-").replace(" ", "")
        sets = ["--set", f"name={run}", "--set", f"train.num_workers={workers}"]
        if cached:
            sets += ["--set", f"data.cache_dir={cache}"]
        t1 = time.perf_counter()
        subprocess.run([*medseg, "fit", str(cfg_path), *sets], check=True, cwd=REPO, stdout=subprocess.DEVNULL)
        rows = list(csv.DictReader(open(out / "runs" / run / "metrics" / "epochs.csv")))
        ips = [float(r["train_images_per_s"]) for r in rows]
        results["variants"][name] = {"images_per_s_per_epoch": ips, "median_images_per_s": statistics.median(ips[1:] or ips),
                                     "train_loss": [float(r["train_loss"]) for r in rows], "wall_s": time.perf_counter() - t1}
        print(f"{name}: {results['variants'][name]['median_images_per_s']:.2f} img/s", file=sys.stderr, flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    ref = results["variants"].get("memory, 0 workers", {}).get("median_images_per_s")
    print("| data, workers | img/s (median epoch) | vs memory, 0 workers | train loss, last epoch |\n|---|---|---|---|")
    for name, v in results["variants"].items():
        rel = f"{v['median_images_per_s'] / ref:.2f}×" if ref else "–"
        print(f"| {name} | {v['median_images_per_s']:.2f} | {rel} | {v['train_loss'][-1]:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
