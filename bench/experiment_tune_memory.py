"""Peak memory of `medseg tune EXPERIMENT` (the out-of-fold tuning) against the number of out-of-fold images.

For each size N: the first N SIIM-like images of a set `bench/synthetic_sets.py siim` wrote (linked
into OUT/data-N by `bench/flat_memory.py`'s `link_cases`), their cache built (`medseg cache`,
not timed), and an experiment folder whose K folds "predicted" noisy copies of the truths under
the default three TTA sets (nothing is trained: what is measured is the tuning's data path). Then
``medseg tune EXP --force`` runs under ``/usr/bin/time -v`` (peak RSS = "Maximum resident set
size"), with the code of ``--repo`` (default: this checkout), so an older checkout can be
measured on the same experiments.

    .venv/bin/python bench/synthetic_sets.py siim /work/bench-data/siim --cases 12089
    .venv/bin/python -u bench/experiment_tune_memory.py /work/bench-data/siim --sizes 500 2000 --out /work/bench-runs/exp-tune

Prints one Markdown row per size and writes OUT/results.json (one entry per --label).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.flat_memory import link_cases  # noqa: E402


def build_experiment(out: Path, n: int, data: dict, size: int, k: int, seed: int) -> Path:
    """OUT/exp-N: an experiment over the N images with K round-robin folds of stored OOF 'predictions'."""
    from medseg import runfolder as runfs
    from medseg.config import config_from_dict, dump_config
    from medseg.data import load_data
    from medseg.data.arrays import stack_part

    exp = out / f"exp-{n}"
    if (exp / runfs.EXPERIMENT).is_file():
        return exp
    raw = {"name": f"exp-{n}", "output_dir": str(out), "seed": seed,
           "data": {**data, "input_size": [size, size], "cache_dir": str(out / f"cache-{n}")},
           "plan": {"enabled": False}}
    cfg = config_from_dict(raw)
    cfg_path = out / f"exp-{n}.yaml"
    cfg_path.write_text(dump_config(cfg))
    subprocess.run([sys.executable, "-m", "medseg.cli", "cache", str(cfg_path), "--no-progress"], check=True,
                   cwd=HERE.parent, stdout=subprocess.DEVNULL)
    loaded = load_data(cfg.data, with_masks=True, progress=False)
    exp = runfs.create_run(out, f"exp-{n}", subfolders=(runfs.METRICS, runfs.SPLITS))
    (exp / runfs.CONFIG).write_text(dump_config(cfg))
    cases = sorted({s.case_id for s in loaded.samples})
    folds = [cases[i::k] for i in range(k)]
    sets = cfg.postprocess.tta_sets()
    rng = np.random.default_rng(seed)
    for i, val in enumerate(folds):
        part = stack_part(loaded, val)
        truth = np.asarray(part.masks).astype(np.float32)
        # lesion pixels 0.45-1.0, stray ones up to 0.55: thresholds and min_area both matter
        base = np.clip(0.45 * truth + rng.uniform(0, 0.55, truth.shape).astype(np.float32), 0, 1)
        ids = [m["sample_id"] for m in part.meta]
        for s, names in enumerate(sets):
            runfs.save_oof(exp, i, names, ids, np.clip(base + rng.normal(0, 0.02 * s, base.shape).astype(np.float32), 0, 1))
        del part, truth, base
    doc = {"experiment_version": 1, "k": k, "seed": seed, "test": [], "tta_sets": [list(s) for s in sets],
           "folds": [{"fold": i, "run": f"fold-{i}", "val": val, "status": "done"} for i, val in enumerate(folds)]}
    runfs.write_json(exp / runfs.EXPERIMENT, doc)
    return exp


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path, help="a SIIM-like set written by bench/synthetic_sets.py siim")
    ap.add_argument("--sizes", type=int, nargs="+", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--size", type=int, default=256, help="data.input_size (square)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repo", type=Path, default=HERE.parent, help="the checkout whose medseg tunes (default: this one)")
    ap.add_argument("--label", default="", help="a name for this configuration in the results (e.g. the commit)")
    a = ap.parse_args(argv)
    from medseg import runfolder as runfs

    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else []
    repo = a.repo.resolve()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    for n in a.sizes:
        data = link_cases(a.data.resolve(), out / f"data-{n}", "siim", n)
        exp = build_experiment(out, n, data, a.size, a.folds, a.seed)
        log = out / f"tune-{n}-{a.label or commit}.log"
        env = {**os.environ, "PYTHONPATH": str(repo)}
        t0 = time.perf_counter()
        with open(log, "w") as f:
            rc = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "medseg.cli", "tune", str(exp), "--force",
                                 "--no-progress"], cwd=repo, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
        wall = time.perf_counter() - t0
        text = log.read_text(errors="replace")
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
        oof_mib = sum(p.stat().st_size for p in (exp / runfs.OOF).rglob("*.npy")) / 2**20
        row = {"label": a.label, "commit": commit, "images": n, "folds": a.folds, "rc": rc, "wall_s": wall,
               "peak_rss_mib": int(m.group(1)) / 1024 if m else None, "oof_files_mib": oof_mib,
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        results.append(row)
        path.write_text(json.dumps(results, indent=1))
        if rc != 0:
            raise SystemExit(f"tune failed (exit {rc}): see {log}")
        print(f"| {a.label or commit} | {n} | {oof_mib:.0f} | {row['peak_rss_mib']:.0f} | {wall:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
