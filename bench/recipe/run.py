"""The recipe benchmark in one invocation: medseg default vs the notebook baseline vs nnU-Net v2 2d.

Each method trains on the same square copy of the set (BUSI at 256² by default; bench/recipe/prepare.py: train 530,
val 94 for checkpoint choice and tuning, test 156 = the fixed 20% incl. normals) under the
same wall-clock training budget, one after the other on this machine, then every test
prediction is scored by one scorer (bench/recipe/score.py). It also measures the medseg
pipeline's training throughput against the bare model step, and the CPU fast path
(tcmalloc + channels_last) against the naive step.

    .venv/bin/python -u bench/recipe/run.py ../shared/data/busi --out runs/bench-recipe --budget-min 15
    .venv/bin/python -u bench/recipe/run.py ../shared/data/ph2 --out runs/recipe-ph2 --methods medseg,notebook
    .venv/bin/python -u bench/recipe/run.py ../shared/data/chase --size 512 --out runs/recipe-chase --methods medseg,notebook --budget-min 10

Writes OUT/results.json and OUT/results.md (the table for BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from bench.recipe.common import TCMALLOC  # noqa: E402
from bench.recipe.prepare import prepare  # noqa: E402
from bench.recipe.score import score_predictions  # noqa: E402


def log(msg: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {msg}", flush=True)


def sh(cmd: list[str], logfile: Path, env: dict | None = None) -> float:
    """Run cmd with its output teed into logfile; returns wall seconds; raises on failure."""
    log("$ " + " ".join(map(str, cmd)))
    t0 = time.time()
    with open(logfile, "a") as f:
        proc = subprocess.Popen(list(map(str, cmd)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
        for line in proc.stdout:
            f.write(line)
            if line.strip():
                print("   " + line.rstrip()[:200], flush=True)
        rc = proc.wait()
    if rc != 0:
        raise RuntimeError(f"{cmd[0]} ... failed with exit code {rc}; see {logfile}")
    return time.time() - t0


# --------------------------------------------------------------------------------------------
# medseg


def run_medseg(prep: Path, out: Path, budget_min: float, seed: int, extra: list[str], size: int = 256) -> dict:
    """`medseg fit` with no model/loss/augment keys, then predict the test images (tuned and raw)."""
    out.mkdir(parents=True)
    cfg = (
        f"name: medseg-default\noutput_dir: {out / 'runs'}\nseed: {seed}\n"
        f"data: {{source: images, root: {prep}, input_size: [{size}, {size}]}}\n"
        f"split: {{mode: file, file: {prep / 'split.json'}}}\n"
        f"train: {{budget_minutes: {budget_min}}}\n"
    )
    (out / "config.yaml").write_text(cfg)
    medseg = [sys.executable, "-m", "medseg.cli"]
    t0 = time.time()
    sh(medseg + ["fit", out / "config.yaml", "--no-progress", *extra], out / "log.txt")
    run = out / "runs" / "medseg-default"
    test_in = out / "test_images"
    test_in.mkdir()
    for c in json.loads((prep / "split.json").read_text())["test"]:
        os.symlink(prep / "images" / f"{c}.png", test_in / f"{c}.png")
    sh(medseg + ["predict", run, test_in, out / "predicted"], out / "log.txt")
    wall = time.time() - t0
    sh(medseg + ["predict", run, test_in, out / "predicted_raw", "--raw"], out / "log.txt")
    for name, src in (("pred", "predicted"), ("pred_raw", "predicted_raw")):
        shutil.copytree(out / src / "masks", out / name)
    epochs = list(csv.DictReader(open(run / "metrics" / "epochs.csv")))
    train_s = sum(float(r["train_seconds"]) for r in epochs)
    val_s = sum(float(r.get("val_seconds") or 0) for r in epochs)
    seen = sum(float(r["train_seconds"]) * float(r["train_images_per_s"]) for r in epochs)
    plan = json.loads((run / "plan.json").read_text())["entries"]
    state = json.loads((run / "state.json").read_text())
    summary = json.loads((run / "metrics" / "summary.json").read_text())
    # a plan that keeps the raw prediction (train.checkpoint: last, postprocess.tune: false) writes no postprocess.json
    tuned = run / "postprocess.json"
    stats = {
        "method": "medseg default", "budget_s": budget_min * 60, "train_seconds": train_s, "val_seconds": val_s,
        "wall_seconds": wall, "images_seen": seen, "train_images_per_s": seen / train_s if train_s else float("nan"),
        "epochs": len(epochs), "best_epoch": summary.get("best_epoch"), "checkpoint": summary.get("checkpoint"),
        "model_epoch": summary.get("best_epoch", summary.get("epoch")),
        "plan": {k: v["value"] for k, v in plan.items()}, "tcmalloc": state.get("tcmalloc"), "precision": state.get("precision"),
        "postprocess": json.loads(tuned.read_text())["chosen"] if tuned.is_file() else None, "run": str(run),
        "median_epoch_images_per_s": sorted(float(r["train_images_per_s"]) for r in epochs)[len(epochs) // 2],
    }
    (out / "stats.json").write_text(json.dumps(stats, indent=1))
    return stats


def bare_step(stats: dict) -> dict:
    """The same model/batch/input's bare training step (no data loading), and the naive step."""
    plan = stats["plan"]
    batch = int(plan.get("train.batch_size", 16))
    res = {}
    probe = HERE / "step_probe.py"
    for label, env_extra, args in (
        ("fast (tcmalloc, channels_last, fp32)", {"LD_PRELOAD": TCMALLOC}, ["--channels-last"]),
        ("naive (glibc malloc, NCHW, fp32)", {"MEDSEG_TCMALLOC": "off"}, []),
        ("fast + bf16 autocast", {"LD_PRELOAD": TCMALLOC}, ["--channels-last", "--bf16"]),
    ):
        env = dict(os.environ, **env_extra)
        if "LD_PRELOAD" in env_extra and not Path(TCMALLOC).exists():
            env.pop("LD_PRELOAD")
        cmd = [sys.executable, probe, "--run", stats["run"], "--batch", str(batch), *args]
        r = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, env=env, cwd=REPO)
        if r.returncode != 0:
            raise RuntimeError(f"step probe failed: {r.stderr[-2000:]}")
        res[label] = json.loads(r.stdout.strip().splitlines()[-1])
        log(f"bare step {label}: {res[label]['images_per_s']:.1f} img/s")
    return res


# --------------------------------------------------------------------------------------------
# peers


def run_peer(script: str, prep: Path, out: Path, budget_min: float, seed: int, extra: list[str], python: str,
             tcmalloc: bool = False) -> dict:
    t0 = time.time()
    out.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, LD_PRELOAD=TCMALLOC) if tcmalloc and Path(TCMALLOC).exists() else None
    sh([python, HERE / script, prep, out, "--budget-s", str(int(budget_min * 60)), "--seed", str(seed), *extra],
       out.parent / f"{out.name}.log", env=env)
    stats = json.loads((out / "stats.json").read_text())
    stats.setdefault("wall_seconds", time.time() - t0)
    return stats


# --------------------------------------------------------------------------------------------
# table


def _fmt(v, digits=3) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "–"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def table(results: dict) -> str:
    head = "| method | per-image Dice (empty=one) | Dice, lesion images | lesion recall | FP rate, normal images | HD95 px (n) | train img/s | train s | wall s |"
    lines = [head, "|" + "---|" * 9]
    for name, r in results["methods"].items():
        s, st = r["score"], r["stats"]
        lines.append(
            f"| {name} | {_fmt(s['dice'])} | {_fmt(s['dice_nonempty'])} | {_fmt(s['lesion_recall'])} | {_fmt(s['fp_rate_empty'])} | "
            f"{_fmt(s['hd95'], 1)} ({s['hd95_n']}) | {_fmt(st.get('train_images_per_s'), 1)} | {_fmt(st.get('train_seconds'), 0)} | {_fmt(st.get('wall_seconds'), 0)} |"
        )
    if results.get("ratios"):
        lines.append("")
        for k, v in results["ratios"].items():
            lines.append(f"- {k}: {_fmt(v)}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path, help="dataset folder (images/, masks/, split.json; cases.csv for groups): BUSI, PH2, CHASE")
    ap.add_argument("--size", type=int, default=256, help="side of the square copy every method reads (default 256)")
    ap.add_argument("--prep", type=Path, default=None, help="where the square copy is cached (default /work/cache/NAMESIZE)")
    ap.add_argument("--out", type=Path, required=True, help="new output folder")
    ap.add_argument("--budget-min", type=float, default=15.0, help="training budget per method, minutes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default="medseg,notebook,nnunet", help="comma list of medseg, notebook, nnunet")
    ap.add_argument("--nnunet-venv", type=Path, default=Path("/work/cache/nnunet-venv"))
    ap.add_argument("--nnunet-trainer", default="short", help="short (budget-sized epochs) or 1epoch (stock, 250 iterations)")
    ap.add_argument("--nnunet-tcmalloc", action="store_true", help="preload tcmalloc into nnU-Net's processes too (medseg preloads it by default)")
    ap.add_argument("--notebook-glibc", action="store_true", help="run the notebook with glibc malloc (before split v2 it always did)")
    ap.add_argument("--medseg-set", action="append", default=[], help="extra --set for medseg fit (ablations only)")
    a = ap.parse_args()
    if a.out.exists():
        sys.exit(f"{a.out}: exists; the benchmark never overwrites")
    a.out.mkdir(parents=True)
    started = dt.datetime.now()
    prep = prepare(a.data, a.prep or Path(f"/work/cache/{a.data.resolve().name}{a.size}"), a.size)
    test = json.loads((prep / "split.json").read_text())["test"]
    results: dict = {
        "command": " ".join(sys.argv), "date": started.isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "budget_min": a.budget_min, "seed": a.seed, "size": a.size, "prep": str(prep), "n_test": len(test), "methods": {},
    }
    methods = a.methods.split(",")

    def save():
        (a.out / "results.json").write_text(json.dumps(results, indent=1, default=str))
        (a.out / "results.md").write_text(table(results) + "\n")

    if "medseg" in methods:
        log("== medseg default")
        extra = [x for s in a.medseg_set for x in ("--set", s)]
        st = run_medseg(prep, a.out / "medseg", a.budget_min, a.seed, extra, a.size)
        results["methods"]["medseg default"] = {"stats": st, "score": score_predictions(a.out / "medseg" / "pred", prep, test)["summary"]}
        results["methods"]["medseg default, raw (no post-processing)"] = {
            "stats": st, "score": score_predictions(a.out / "medseg" / "pred_raw", prep, test)["summary"]}
        save()
        steps = bare_step(st)
        fast = steps["fast (tcmalloc, channels_last, fp32)"]["images_per_s"]
        # the pipeline is compared with the bare step at the precision the run trained in
        same = steps["fast + bf16 autocast"] if str(st.get("precision", "")).startswith("bf16") else steps["fast (tcmalloc, channels_last, fp32)"]
        results["throughput"] = {
            "pipeline_images_per_s": st["median_epoch_images_per_s"], "bare_steps": steps,
            "pipeline_over_bare": st["median_epoch_images_per_s"] / same["images_per_s"],
            "pipeline_precision": st.get("precision"),
            "fast_over_naive": fast / steps["naive (glibc malloc, NCHW, fp32)"]["images_per_s"],
            "bf16_over_fast": steps["fast + bf16 autocast"]["images_per_s"] / fast,
        }
        save()
    if "notebook" in methods:
        log("== notebook baseline")
        st = run_peer("notebook.py", prep, a.out / "notebook", a.budget_min, a.seed, [], sys.executable,
                      tcmalloc=not a.notebook_glibc)
        st["tcmalloc"] = not a.notebook_glibc
        results["methods"]["notebook baseline"] = {"stats": st, "score": score_predictions(a.out / "notebook" / "pred", prep, test)["summary"]}
        save()
    if "nnunet" in methods:
        log("== nnU-Net v2 2d")
        st = run_peer("nnunet_runner.py", prep, a.out / "nnunet", a.budget_min, a.seed,
                      ["--venv", str(a.nnunet_venv), "--trainer", a.nnunet_trainer, *(["--tcmalloc"] if a.nnunet_tcmalloc else [])],
                      sys.executable)
        results["methods"][f"nnU-Net v2 2d ({a.nnunet_trainer})"] = {"stats": st, "score": score_predictions(a.out / "nnunet" / "pred", prep, test)["summary"]}
        save()
    m = results["methods"]
    ratios = {}
    if "medseg default" in m:
        d = m["medseg default"]["score"]["dice"]
        for peer in [k for k in m if k.startswith(("notebook", "nnU-Net"))]:
            ratios[f"Dice medseg / {peer}"] = d / m[peer]["score"]["dice"]
            ratios[f"train img/s medseg / {peer}"] = m["medseg default"]["stats"]["train_images_per_s"] / m[peer]["stats"]["train_images_per_s"]
    if "throughput" in results:
        ratios["pipeline img/s / bare step img/s"] = results["throughput"]["pipeline_over_bare"]
        ratios["fast path / naive step (img/s)"] = results["throughput"]["fast_over_naive"]
        ratios["bf16 / fast fp32 step (img/s)"] = results["throughput"]["bf16_over_fast"]
    results["ratios"] = ratios
    results["finished"] = dt.datetime.now().isoformat(timespec="seconds")
    save()
    print(table(results))


if __name__ == "__main__":
    main()
