"""Peak memory of `medseg tune` against the validation set's size, on runs `bench/flat_memory.py` trained.

Each run folder is copied (tuning writes postprocess.json, and a finished benchmark run is not
changed), then `medseg tune COPY --force --no-progress` runs under ``/usr/bin/time -v`` (peak RSS
= its "Maximum resident set size"). The validation part is read from the run's cache
(`data.cache_dir`; a deleted cache is rebuilt for the part's cases alone, which then counts in
the wall time, not in the figure's meaning). `--set` passes postprocess overrides (e.g.
``postprocess.tta=false`` for one TTA set).

    .venv/bin/python bench/tune_memory.py /work/bench-runs/flat-s4/runs/n10 /work/bench-runs/flat-s4/runs/n131 \
        --out /work/bench-runs/tune-mem

Prints one Markdown row per run and writes OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.flat_memory import timed  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+", help="run folders (bench/flat_memory.py's OUT/runs/nN)")
    ap.add_argument("--out", type=Path, required=True, help="where the copies, logs and results.json go")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="postprocess.KEY=VALUE for the tuning")
    ap.add_argument("--label", default="", help="a name for this configuration in the results (e.g. the commit)")
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else []
    for run in a.runs:
        split = json.loads((run / "split.json").read_text())
        copy = a.out / f"{run.name}{'-' + a.label if a.label else ''}"
        if copy.exists():
            shutil.rmtree(copy)
        shutil.copytree(run, copy, ignore=shutil.ignore_patterns("evaluations", "report*", "last.ckpt"))
        cmd = [sys.executable, "-m", "medseg.cli", "tune", str(copy), "--force", "--no-progress"]
        for s in a.sets:
            cmd += ["--set", s]
        got = timed(cmd, a.out / f"{copy.name}.log")
        if got["rc"] != 0:
            raise SystemExit(f"{copy}: medseg tune failed (exit {got['rc']}); see {a.out / (copy.name + '.log')}")
        pp = json.loads((copy / "postprocess.json").read_text())
        row = {"run": str(run), "label": a.label, "sets": a.sets, "val_cases": len(split["val"]), "n_cases": pp["n_cases"],
               "chosen": pp["chosen"], "best_dice": pp["best"]["dice"], **got}
        results.append(row)
        path.write_text(json.dumps(results, indent=1))
        print(f"| {run.name} | {a.label or '-'} | {' '.join(a.sets) or 'defaults'} | {len(split['val'])} | "
              f"{got['peak_rss_mib']:,.0f} | {got['wall_s']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
