"""`medseg demo`: the default recipe on real breast-ultrasound images that ship with the repository.

The data is a reduced subset of BUSI (Al-Dhabyani et al., Data in Brief 2020, CC0) in
`demo_data/busi/`, drawn at random by pseudo-patient group and keeping BUSI's leak-free split
v2 (`bench/demo/make_busi_subset.py`, `demo_data/busi/README.md`). The demo trains the default
recipe for a fixed time budget (planned input size, batch, epochs; tuned post-processing), then
scores the held-out test images it never saw, predicts them as PNG masks, writes the report
and prints a short summary with the doctor's top findings.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Optional

from rich.console import Console

from medseg import runfolder as runfs
from medseg.commands.evaluate import evaluate_run
from medseg.commands.fit import fit
from medseg.commands.predict import predict_run
from medseg.config import config_from_dict
from medseg.doctor import diagnose
from medseg.errors import MedsegError

DEMO_DATA = Path(__file__).resolve().parents[2] / "demo_data" / "busi"
BUDGET_MINUTES = 3.0
# the Dice the demo is expected to reach on its held-out images (README, BENCHMARKS.md §0)
TARGET_DICE = 0.60
TOP_FINDINGS = 3


def find_demo_data(data: Optional[Path] = None) -> Path:
    """The demo's BUSI subset: `data`, else demo_data/busi in the repository, else ./demo_data/busi."""
    candidates = [Path(data)] if data is not None else [DEMO_DATA, Path.cwd() / "demo_data" / "busi"]
    for root in candidates:
        if (root / "images").is_dir() and (root / "masks").is_dir() and (root / "split.json").is_file():
            return root.resolve()
    where = ", ".join(str(c) for c in candidates)
    raise MedsegError(f"demo: no demo data (images/, masks/, split.json) at {where}; it ships in the repository's "
                      "demo_data/busi (or pass --data), or run the volume demo with --volumes")


def demo_config(data: Path, output_dir: Path, minutes: float) -> dict:
    """The demo's config: where the data is, the split, the budget; every recipe key is the default."""
    return {
        "name": "demo",
        "output_dir": str(output_dir),
        "seed": 0,
        "data": {"source": "images", "root": str(data)},
        "split": {"mode": "file", "file": str(data / "split.json")},
        "train": {"budget_minutes": minutes},
    }


def run_demo(output_dir: Path = Path("runs"), minutes: float = BUDGET_MINUTES, data: Optional[Path] = None,
             console: Optional[Console] = None, progress: bool = True) -> Path:
    """Train, tune, evaluate on the held-out test images, predict them, report, summarise; returns the run folder.

    Args:
        output_dir: where the run folder goes.
        minutes: the training budget (the plan sets epochs and batch from the measured step time).
        data: the demo data folder (default: demo_data/busi of the repository).
        console: where to print.
        progress: show progress bars.
    """
    console = console or Console(stderr=True)
    t0 = time.time()
    root = find_demo_data(data)
    split = json.loads((root / "split.json").read_text())
    cfg = config_from_dict(demo_config(root, Path(output_dir).resolve(), minutes), Path.cwd())
    console.print(f"[bold]medseg demo[/]: the default recipe on {len(split['train'])} BUSI ultrasound images "
                  f"(validation {len(split['val'])}, held-out test {len(split['test'])}), {minutes:g} min of training")
    run_dir = fit(cfg, console=console, progress=progress)
    test = evaluate_run(run_dir, console=console, part="test", progress=progress)
    pred_dir = run_dir / "predictions" / "test"
    with tempfile.TemporaryDirectory() as tmp:
        # predict reads a folder of images: the held-out ones, linked (not copied) into one
        images = Path(tmp) / "images"
        images.mkdir()
        for case in split["test"]:
            src = next((root / "images").glob(f"{case}.*"))
            os.symlink(src, images / src.name)
        predict_run(run_dir, images, pred_dir, console=console)
    findings = diagnose(run_dir, evaluate=True)
    lines = summary_lines(run_dir, runfs.read_json(run_dir / runfs.SUMMARY), test, findings, pred_dir, time.time() - t0)
    (run_dir / "demo_summary.md").write_text("\n".join(lines) + "\n")
    console.print("\n".join(lines), highlight=False, markup=False)
    return run_dir


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def summary_lines(run_dir: Path, val: dict, test: dict, findings: list, pred_dir: Path, wall: float) -> list[str]:
    """The demo's summary (Markdown): held-out figures first, then validation, the doctor, where things are."""
    pp, vpp = test.get("postprocessed") or {}, val.get("postprocessed") or {}
    final = pp.get("dice", test["dice"])
    epoch_text = f"best epoch {val['best_epoch']}" if "best_epoch" in val else f"last epoch {val.get('epoch')}"
    lines = [
        "# medseg demo summary",
        "",
        f"- metric contract: {test.get('contract_text')}",
        f"- held-out test images ({test['n_cases']}, {test['n_empty_truth']} without a lesion), never seen in training or tuning:",
        f"  Dice {_f(final)} with the tuned post-processing ({'meets' if final >= TARGET_DICE else 'BELOW'} the demo's target "
        f"{TARGET_DICE:.2f}), {_f(test['dice'])} raw network; lesion recall {_f(pp.get('lesion_recall', test.get('lesion_recall')))}, "
        f"false alarms on normal images {_f(pp.get('fp_rate_empty', test.get('fp_rate_empty')))}",
        f"- validation images ({val['n_cases']}): Dice {_f(vpp.get('dice', val['dice']))} post-processed, {_f(val['dice'])} raw "
        f"({epoch_text})",
        f"- post-processing: {pp.get('rule_text', 'none')}",
        f"- wall time (train, tune, evaluate, predict, report, doctor): {wall:.0f} s",
        "",
        "## The doctor's top findings",
        "",
    ]
    for i, f in enumerate(findings[:TOP_FINDINGS], 1):
        fix = f"change {f.fix_key} = {json.dumps(f.fix_value)}" if f.fix_key else str(f.fix_value)
        lines.append(f"{i}. {f.severity}: {f.title} ({fix})")
    if not findings:
        lines.append("none")
    lines += [
        "",
        f"- report: {run_dir / runfs.REPORT_HTML}",
        f"- run folder: {run_dir}",
        f"- held-out evaluation: {run_dir / runfs.EVALUATIONS}",
        f"- predicted masks of the held-out images (PNG, original size): {pred_dir}",
        f"- TensorBoard: tensorboard --logdir {run_dir / runfs.LOGS}",
    ]
    return lines
