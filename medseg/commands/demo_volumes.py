"""`medseg demo --volumes`: real CT/MR volumes from the pyradiomics 3.0.1 source release, end to end on CPU.

The sdist (not the wheel) ships five lesion volumes (brain1/2 MR, breast1 MR, lung1/2 CT).
It is fetched with pip (PyPI is the one registry reachable everywhere medseg is installed),
checked against its published sha256, and cached.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
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
from medseg.errors import MedsegError

PACKAGE = "pyradiomics==3.0.1"
ARCHIVE = "pyradiomics-3.0.1.tar.gz"
SHA256 = "47c57f441d6cb7973fa3b2ea48d3948df78e3348e1c69e1e2ff19001601fc2f5"
VOLUMES = ["brain1", "brain2", "breast1", "lung1", "lung2"]
# Fixed split by volume: MR brain and CT lung appear on both sides so the test volume has a
# sibling in training; breast1 (a small MR crop) only trains.
DEMO_SPLIT = {"train": ["brain1", "breast1", "lung2"], "val": ["lung1"], "test": ["brain2"]}


def default_cache() -> Path:
    return Path(os.environ.get("MEDSEG_CACHE", Path.home() / ".cache" / "medseg"))


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_demo_data(cache: Optional[Path] = None, console: Optional[Console] = None) -> Path:
    """Return a folder with NAME_image.nrrd / NAME_label.nrrd for the five volumes (download once)."""
    console = console or Console(stderr=True)
    cache = Path(cache or default_cache())
    data_dir = cache / "pyradiomics-3.0.1" / "data"
    if all((data_dir / f"{v}_{k}.nrrd").is_file() for v in VOLUMES for k in ("image", "label")):
        return data_dir
    cache.mkdir(parents=True, exist_ok=True)
    archive = cache / ARCHIVE
    if not archive.is_file() or sha256_of(archive) != SHA256:
        console.print(f"downloading {PACKAGE} source release (demo volumes) with pip ...")
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [
                sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                "--no-build-isolation", "-d", tmp, PACKAGE,
            ]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            except (OSError, subprocess.TimeoutExpired) as e:
                raise MedsegError(f"demo: cannot download {PACKAGE} ({type(e).__name__}); check network access to PyPI") from None
            got = Path(tmp) / ARCHIVE
            if proc.returncode != 0 or not got.is_file():
                last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                raise MedsegError(f"demo: cannot download {PACKAGE} from PyPI ({last.strip()[:160]}); place {ARCHIVE} in {cache} to run offline")
            shutil.copy(got, archive)
    digest = sha256_of(archive)
    if digest != SHA256:
        archive.unlink()
        raise MedsegError(f"demo: {archive}: sha256 {digest[:12]}… does not match the published {SHA256[:12]}…; removed it")
    tmp_dir = Path(tempfile.mkdtemp(dir=cache))
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith("pyradiomics-3.0.1/data/") and m.name.endswith(".nrrd")]
        tar.extractall(tmp_dir, members=members, filter="data")
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    if data_dir.exists():
        shutil.rmtree(data_dir)
    os.replace(tmp_dir / "pyradiomics-3.0.1" / "data", data_dir)
    shutil.rmtree(tmp_dir, ignore_errors=True)
    return data_dir


def demo_config(data_dir: Path, split_file: Path, output_dir: Path, epochs: int) -> dict:
    """The demo's config: a small MONAI UNet on 2.5D slices (k=1), CPU-sized."""
    return {
        "name": "demo-volumes",
        "output_dir": str(output_dir),
        "seed": 0,
        "data": {"source": "volumes", "root": str(data_dir), "context_slices": 1, "input_size": [192, 192]},
        "split": {"mode": "file", "file": str(split_file)},
        "model": {"name": "unet", "channels": [16, 32, 64, 128, 256]},
        "loss": {"bce": {"weight": 1.0, "pos_weight": 10.0}, "dice": {"weight": 1.0, "reduction": "batch"}},
        "optim": {"name": "adamw", "lr": 3e-3, "weight_decay": 1e-4},
        "schedule": {"name": "cosine", "warmup_epochs": 1},
        "augment": {"preset": "light"},
        "train": {"epochs": epochs, "batch_size": 8},
        "eval": {"contract": {"reduction": "per_volume", "empty": "one"}},
    }


def run_volume_demo(output_dir: Path = Path("runs"), epochs: int = 30, cache: Optional[Path] = None, console: Optional[Console] = None) -> Path:
    console = console or Console(stderr=True)
    t0 = time.time()
    data_dir = fetch_demo_data(cache, console)
    work = data_dir.parent
    split_file = work / "demo_split.json"
    split_file.write_text(json.dumps({**DEMO_SPLIT, "note": "fixed demo split by volume"}, indent=1))
    # the held-out test volume also gets a folder of its own, so `evaluate --data` can score it alone
    test_dir = work / "test"
    test_dir.mkdir(exist_ok=True)
    for v in DEMO_SPLIT["test"]:
        for kind in ("image", "label"):
            dst = test_dir / f"{v}_{kind}.nrrd"
            if not dst.exists():
                shutil.copy(data_dir / f"{v}_{kind}.nrrd", dst)
    test_yaml = work / "demo_test_data.yaml"
    test_yaml.write_text(f"data:\n  root: {test_dir}\n")
    cfg = config_from_dict(demo_config(data_dir, split_file, Path(output_dir).resolve(), epochs), Path.cwd())
    console.print(f"[bold]medseg demo --volumes[/]: 2.5D {cfg.model.name} on {', '.join(VOLUMES)} (train {DEMO_SPLIT['train']}, val {DEMO_SPLIT['val']}, test {DEMO_SPLIT['test']})")
    run_dir = fit(cfg, console=console)
    val_summary = runfs.read_json(run_dir / runfs.SUMMARY)
    test_summary = evaluate_run(run_dir, test_yaml, console=console)
    pred_dir = run_dir / "predictions" / "test"
    predict_run(run_dir, test_dir / f"{DEMO_SPLIT['test'][0]}_image.nrrd", pred_dir, console=console)
    wall = time.time() - t0
    lines = _summary_lines(run_dir, val_summary, test_summary, pred_dir, wall)
    (run_dir / "demo_summary.md").write_text("\n".join(lines) + "\n")
    console.print("\n".join(lines), highlight=False)
    return run_dir


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _summary_lines(run_dir: Path, val: dict, test: dict, pred_dir: Path, wall: float) -> list[str]:
    lines = [
        "# medseg demo --volumes summary",
        "",
        f"- metric contract: {val.get('contract_text')}",
        f"- wall time (download/cache, train, evaluate, predict): {wall:.0f} s",
        "",
        "| set | volume | Dice | lesions found / total | HD95 (mm) |",
        "|---|---|---|---|---|",
    ]
    for name, s in (("val", val), ("test", test)):
        for r in (s.get("per_volume") or {}).get("rows", []) or []:
            lines.append(f"| {name} | {r['volume']} | {_fmt(r.get('dice'))} | {r.get('n_lesions_found', 0)} / {r.get('n_lesions_truth', 0)} | {_fmt(r.get('hd95'))} |")
    for name, s in (("val", val), ("test", test)):
        pv = s.get("per_volume") or {}
        lines.append(f"- {name}: Dice per volume {_fmt(pv.get('dice'))}, lesion recall {_fmt(pv.get('lesion_recall'))}")
    lines += [
        "",
        "Three training volumes from three anatomies (MR brain, MR breast, CT lung) are far too few for a",
        "model that generalises: in our runs the held-out Dice stayed near 0. The demo shows the pipeline end to end",
        "(2.5D reading, training, contract-stated metrics, geometry-preserving prediction, report), not a",
        "useful model; see BENCHMARKS.md for BUSI figures.",
        "",
        f"- report: {run_dir / runfs.REPORT_HTML}",
        f"- run folder: {run_dir}",
        f"- per-epoch metrics: {run_dir / runfs.EPOCHS_CSV}",
        f"- per-slice metrics (val): {run_dir / runfs.CASES_CSV}",
        f"- test-volume evaluation: {run_dir / runfs.EVALUATIONS}",
        f"- test-volume prediction (NRRD, input geometry): {pred_dir}",
        f"- TensorBoard: tensorboard --logdir {run_dir / runfs.LOGS}",
    ]
    return lines
