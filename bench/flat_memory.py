"""Peak memory against dataset size: LiTS-like volumes (or SIIM-like images) built into the cache, trained (capped steps) and evaluated.

For each size N (the first N cases of a set written by `bench/synthetic_sets.py`, linked into
OUT/data-N so each size is its own dataset), three processes, each under ``/usr/bin/time -v``
(peak RSS = its "Maximum resident set size"):

1. ``medseg cache``: the preprocessed cache of the N cases (build time, size on disk);
2. ``medseg fit`` from that cache: ``--steps`` optimiser steps of ``--batch`` slices, one epoch,
   the positive-aware sampler at 0.5, validation streamed over the validation volumes (20% of
   the cases, by volume);
3. ``medseg evaluate`` of the run (streamed; no sweep).

The fit's peak is also read from metrics/epochs.csv (``rss_peak_mib``: the process peak by the
end of the epoch, i.e. training and the streamed validation, before fit's final evaluation and
report). What does not stream: the per-volume metrics of one validation volume (HD95, lesion
counts) are computed on the whole stacked volume, so the largest validation volume sets a floor.

    .venv/bin/python bench/synthetic_sets.py lits /data/lits --cases 131
    .venv/bin/python bench/flat_memory.py lits /data/lits --sizes 10 40 131 --out runs/bench-flat

``--cache-only`` measures the cache alone: a build from nothing, then a read-back of the built
entry in one process (``--workers 1``: every unit restored, none prepared). ``--repo`` runs another
checkout's medseg (an older commit's, for a before/after).

The cache of a size is removed after its runs unless ``--keep-cache`` (a LiTS-size cache at 256²
is ~10 GB). Prints a Markdown table and writes OUT/results.json (updated after every step).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], log: Path, repo: Path = REPO) -> dict:
    """Run under /usr/bin/time -v in `repo` (its medseg): wall seconds, peak RSS (MiB), exit code; output to log."""
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(repo)}
    with open(log, "w") as f:
        rc = subprocess.run(["/usr/bin/time", "-v", *cmd], cwd=repo, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    text = log.read_text(errors="replace")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    return {"rc": rc, "wall_s": time.perf_counter() - t0, "peak_rss_mib": int(m.group(1)) / 1024 if m else None}


def link_cases(src: Path, dst: Path, kind: str, n: int) -> dict:
    """OUT/data-N: the first n cases of the set (symbolic links), and the data section that reads them."""
    dst.mkdir(parents=True, exist_ok=True)
    if kind == "lits":
        images = sorted(src.glob("case*_image.nii*"))[:n]
        if len(images) < n:
            raise SystemExit(f"{src}: {len(images)} volumes, {n} asked for (write them with bench/synthetic_sets.py)")
        for img in images:
            for p in (img, img.with_name(img.name.replace("_image", "_label"))):
                if not (dst / p.name).exists():
                    (dst / p.name).symlink_to(p.resolve())
        return {"source": "volumes", "root": str(dst), "context_slices": 1}
    rows = (src / "train-rle.csv").read_text().splitlines()
    (dst / "dicom").mkdir(exist_ok=True)
    ids = [r.split(",")[0].strip() for r in rows[1 : n + 1]]
    for uid in ids:
        p = src / "dicom" / f"{uid}.dcm"
        if not (dst / "dicom" / p.name).exists():
            (dst / "dicom" / p.name).symlink_to(p.resolve())
    (dst / "train-rle.csv").write_text("\n".join(rows[: n + 1]) + "\n")
    return {"source": "siim", "root": str(dst / "dicom"), "rle_csv": str(dst / "train-rle.csv")}


def _fit_facts(row: dict, run: Path) -> None:
    """The fit's training peak and split sizes, from its run folder."""
    epochs = list(csv.DictReader(open(run / "metrics" / "epochs.csv")))
    # the training process's peak by the end of the epoch (training + streamed validation), before the
    # final evaluation, tuning and report of the fit
    row["fit"]["peak_rss_mib_training"] = max(float(r["rss_peak_mib"]) for r in epochs)
    state = json.loads((run / "state.json").read_text()) if (run / "state.json").exists() else {}
    row["train_images"], row["val_images"] = state.get("n_train_images"), state.get("n_val_images")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("kind", choices=["lits", "siim"])
    ap.add_argument("data", type=Path, help="a set written by bench/synthetic_sets.py")
    ap.add_argument("--sizes", type=int, nargs="+", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--size", type=int, default=256, help="data.input_size (square)")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--keep-cache", action="store_true")
    ap.add_argument("--cache-only", action="store_true",
                    help="the cache alone: its build, then a read-back of the built entry (--workers 1); no fit or evaluate")
    ap.add_argument("--repo", type=Path, default=REPO, help="the checkout whose medseg runs (default: this one)")
    a = ap.parse_args(argv)
    repo = a.repo.resolve()
    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    medseg = [sys.executable, "-m", "medseg.cli"]
    res_path = out / "results.json"
    results = json.loads(res_path.read_text()) if res_path.exists() else {}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    results.update(command=" ".join(sys.argv), commit=commit, machine=f"{platform.machine()}, {os.cpu_count()} cores",
                   sizes=results.get("sizes", {}))
    for n in a.sizes:
        data = link_cases(a.data.resolve(), out / f"data-{n}", a.kind, n)
        cache = out / f"cache-{n}"
        cfg = {
            "name": f"n{n}", "output_dir": str(out / "runs"), "seed": 0,
            "data": {**data, "input_size": [a.size, a.size], "cache_dir": str(cache)},
            "split": {"mode": "holdout", "val_fraction": 0.2},
            # a small network: what is measured is the data path's memory, not the model's
            "model": {"name": "unet", "channels": [16, 32, 64, 128]},
            "loss": {"bce": 1.0, "dice": 1.0},
            "sampler": {"positive_share": 0.5},
            "schedule": {"warmup_epochs": 0.2},
            "train": {"epochs": 1, "batch_size": a.batch, "steps_per_epoch": a.steps, "precision": "32"},
            "postprocess": {"tune": False},
            "plan": {"enabled": False},
        }
        cfg_path = out / f"n{n}.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg))
        row = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        if a.cache_only:
            shutil.rmtree(cache, ignore_errors=True)  # a build from nothing
        row["cache"] = timed([*medseg, "cache", str(cfg_path), "--json", "--no-progress"], out / f"n{n}-cache.log", repo)
        text = (out / f"n{n}-cache.log").read_text()
        for m in re.finditer(r"^\{", text, re.M):  # the --json object among the progress and /usr/bin/time lines
            try:
                info = json.JSONDecoder().raw_decode(text[m.start():])[0]
            except ValueError:
                continue
            row["cache"].update({k: info.get(k) for k in ("samples", "units", "built", "reused", "disk_bytes", "seconds")})
            break
        row["cache"]["disk_mib_du"] = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()) / 2**20
        run = out / "runs" / f"n{n}"
        if a.cache_only:
            # what every later `medseg cache` of an unchanged set does: read each unit back, prepare none
            row["readback"] = timed([*medseg, "cache", str(cfg_path), "--workers", "1", "--no-progress"],
                                    out / f"n{n}-readback.log", repo)
        else:
            if run.exists():
                shutil.rmtree(run)
            row["fit"] = timed([*medseg, "fit", str(cfg_path), "--no-progress"], out / f"n{n}-fit.log", repo)
            row["evaluate"] = timed([*medseg, "evaluate", str(run), "--no-progress"], out / f"n{n}-evaluate.log", repo)
        for step in [k for k in row if k != "date"]:
            if row[step]["rc"] != 0:
                raise SystemExit(f"{step} failed (exit {row[step]['rc']}): see {out / f'n{n}-{step}.log'}")
        if not a.cache_only:
            _fit_facts(row, run)
        results["sizes"][str(n)] = row
        res_path.write_text(json.dumps(results, indent=1))
        print(f"N={n}: " + json.dumps(row), file=sys.stderr, flush=True)
        if not a.keep_cache:
            shutil.rmtree(cache, ignore_errors=True)
    if a.cache_only:
        print("| cases | samples | build s | build peak RSS MiB | read-back s | read-back peak RSS MiB |")
        print("|---|---|---|---|---|---|")
        for n, r in sorted(results["sizes"].items(), key=lambda kv: int(kv[0])):
            c, b = r["cache"], r["readback"]
            print(f"| {n} | {c.get('samples', '?')} | {c['wall_s']:.0f} | {c['peak_rss_mib']:.0f} | {b['wall_s']:.1f} | {b['peak_rss_mib']:.0f} |")
        return 0
    print("| cases | slices/images | cache build s | cache GiB | peak RSS cache MiB | fit s | peak RSS training MiB | peak RSS fit MiB | "
          "evaluate s | peak RSS evaluate MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n, r in sorted(results["sizes"].items(), key=lambda kv: int(kv[0])):
        c, f, e = r["cache"], r["fit"], r["evaluate"]
        print(f"| {n} | {c.get('samples', '?')} | {c['wall_s']:.0f} | {c['disk_mib_du'] / 1024:.2f} | {c['peak_rss_mib']:.0f} | "
              f"{f['wall_s']:.0f} | {f['peak_rss_mib_training']:.0f} | {f['peak_rss_mib']:.0f} | {e['wall_s']:.0f} | {e['peak_rss_mib']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
