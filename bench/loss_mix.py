"""BUSI 256²: the SIIM winners' loss mix (bce 3, dice 1, focal 4) against bce 1 + dice 1.

One invocation trains both runs with the same config, seed and epoch budget, then scores each
best checkpoint on the benchmark split's held-out cases under two metric contracts (per-image
hard Dice at 0.5 with empty/empty scored one, and with empty/empty excluded as NaN) and sweeps
the threshold 0.05..0.95. Prints a Markdown table for BENCHMARKS.md and writes JSON.

    .venv/bin/python bench/loss_mix.py --data ../shared/data/busi --epochs 15 --out runs/bench-loss-mix

Args (command line):
    --data: BUSI folder (images/, masks/, split.json).
    --epochs: training epochs per run (same for both).
    --out: folder for the two run folders and results.json (must not exist).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

MIXES = {"bce1_dice1": {"bce": 1.0, "dice": 1.0}, "bce3_dice1_focal4": {"bce": 3.0, "dice": 1.0, "focal": 4.0}}


def score_run(run_dir: Path) -> dict:
    """Best-checkpoint probabilities on the run's validation cases, scored under both contracts."""
    from medseg import runfolder as runfs
    from medseg.data import load_data
    from medseg.data.arrays import stack_part
    from medseg.inference import predict_probs
    from medseg.metrics import MetricContract, case_metrics, summarize, threshold_sweep
    from medseg.runfolder import load_network, load_run_config

    cfg = load_run_config(run_dir)
    state = runfs.read_json(run_dir / runfs.STATE)
    split = runfs.read_json(run_dir / runfs.SPLIT)
    val = stack_part(load_data(cfg.data, with_masks=True, progress=False), split["val"])
    net, info = load_network(run_dir, cfg, state["in_channels"])
    probs = predict_probs(net, val.images, cfg.eval.batch_size, state["precision"], "cpu", cfg.train.channels_last)
    out = {"best_epoch": info["epoch"]}
    for empty in ("one", "nan"):
        c = MetricContract(kind="hard", threshold=0.5, reduction="per_image", empty=empty)
        s = summarize([case_metrics(p, m, c, surface=False) for p, m in zip(probs, val.masks)], c)
        out[f"dice_empty_{empty}"] = s["dice"]
        out[f"n_empty_empty_{empty}"] = s["n_empty_empty"]
        out["dice_nonempty"] = s["dice_nonempty"]
        out["fp_rate_empty"] = s["fp_rate_empty"]
        out["lesion_recall"] = s["lesion_recall"]
        sw = threshold_sweep(list(probs), list(val.masks), c)
        out[f"best_threshold_empty_{empty}"] = sw["best_threshold"]
        out[f"best_dice_empty_{empty}"] = sw["best_value"]
        out[f"sweep_flat_empty_{empty}"] = sw["flat"]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.out.exists():
        sys.exit(f"{args.out}: exists (never overwritten)")
    from medseg.commands.fit import fit
    from medseg.config import config_from_dict

    data = args.data.resolve()
    results = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cpus", "runs": {}}
    for name, loss in MIXES.items():
        cfg = config_from_dict({
            "name": name, "output_dir": str(args.out), "seed": 0,
            "data": {"source": "images", "root": str(data), "input_size": [256, 256]},
            "split": {"mode": "file", "file": str(data / "split.json")},
            "loss": loss, "train": {"epochs": args.epochs},
        })
        t0 = time.time()
        run = fit(cfg, progress=False)
        r = score_run(run)
        r["train_wall_s"] = time.time() - t0
        r["run"] = str(run)
        results["runs"][name] = r
        print(json.dumps({name: r}), flush=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print("\n| loss | best epoch | Dice per-image empty=one | Dice per-image empty=nan (n excluded) | Dice lesion images | FP rate normals | lesion recall | best threshold (Dice there, empty=one) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results["runs"].items():
        print(
            f"| {name} | {r['best_epoch']} | {r['dice_empty_one']:.4f} | {r['dice_empty_nan']:.4f} ({r['n_empty_empty_nan']}) | "
            f"{r['dice_nonempty']:.4f} | {r['fp_rate_empty']:.3f} | {r['lesion_recall']:.3f} | "
            f"{r['best_threshold_empty_one']:.2f} ({r['best_dice_empty_one']:.4f}) |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
