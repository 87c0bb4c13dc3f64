"""The run folder: the contract every verb after `fit` reads.

runs/NAME/
  config.yaml  fingerprint.json  split.json  bad_files.json
  metrics/epochs.csv  metrics/cases.csv  metrics/summary.json
  checkpoints/best.ckpt  checkpoints/last.ckpt
  logs/ (TensorBoard events, train.log)
  predictions/ (optional), report.md
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

from medseg.errors import MedsegError

RUN_VERSION = 1

CONFIG = "config.yaml"
FINGERPRINT = "fingerprint.json"
SPLIT = "split.json"
BAD_FILES = "bad_files.json"
EPOCHS_CSV = "metrics/epochs.csv"
CASES_CSV = "metrics/cases.csv"
VOLUMES_CSV = "metrics/volumes.csv"
SUMMARY = "metrics/summary.json"
BEST_CKPT = "checkpoints/best.ckpt"
LAST_CKPT = "checkpoints/last.ckpt"
LOGS = "logs"
STATE = "state.json"


def create_run(output_dir: Path, name: str) -> Path:
    """Make a new run folder; an existing one is never reused (name-2, name-3, ...)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for i in range(1, 10_000):
        path = output_dir / (name if i == 1 else f"{name}-{i}")
        try:
            path.mkdir()  # atomic: two concurrent fits never get the same folder
        except FileExistsError:
            continue
        for sub in ("metrics", "checkpoints", LOGS):
            (path / sub).mkdir()
        return path
    raise MedsegError(f"output_dir: {output_dir}: too many runs named '{name}'")


def open_run(path: Path) -> Path:
    path = Path(path)
    if not (path / CONFIG).is_file():
        raise MedsegError(f"{path}: not a medseg run folder (no {CONFIG})")
    return path


def _clean(obj: Any) -> Any:
    # JSON has no NaN: write null so every reader (and browsers) can parse it
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):
        return _clean(obj.item())
    return obj


def write_json(path: Path, obj: Any) -> None:
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_clean(obj), indent=1))
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise MedsegError(f"{path}: missing from the run folder") from None
    except json.JSONDecodeError:
        raise MedsegError(f"{path}: not valid JSON") from None


def write_csv(path: Path, rows: list[dict]) -> None:
    path = Path(path)
    keys: list[str] = []
    for r in rows:
        keys.extend(k for k in r if k not in keys)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(r.get(k)) for k in keys})
    os.replace(tmp, path)


def _fmt(v):
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v)
    if isinstance(v, (list, dict)):
        return json.dumps(_clean(v))
    return v


def read_csv(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        conv = {}
        for k, v in r.items():
            try:
                conv[k] = float(v) if v not in ("", None) else float("nan")
                if conv[k].is_integer() and k in ("epoch", "step"):
                    conv[k] = int(conv[k])
            except ValueError:
                conv[k] = v
        out.append(conv)
    return out
