"""Small helpers shared by the peer methods of the recipe benchmark (no medseg imports).

Every peer reads the same prepared folder (bench/recipe/prepare.py) and writes the same
output contract, so the orchestrator can score them all with one scorer:

    OUT/pred/{case}.png   uint8 0/255, at the prepared size, one per test case
    OUT/stats.json        method, budget_s, train_seconds, wall_seconds, images_seen, ...
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

# the allocator medseg's CLI preloads (medseg/cli.py searches more paths; the benchmark machine is Debian x86_64)
TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"

_T0 = time.perf_counter()


def log(msg: str) -> None:
    """Print one progress line with seconds since the script started (flushed at once)."""
    print(f"[{time.perf_counter() - _T0:7.1f}s] {msg}", flush=True)


def open_out(out: Path, force: bool) -> Path:
    """Create OUT/pred; refuse an existing OUT unless force (then it is wiped first).

    Args:
        out: the output folder of this method run.
        force: replace an existing folder instead of refusing.
    """
    if out.exists():
        if not force:
            sys.exit(f"error: {out} already exists; pick a new OUT or pass --force to replace it")
        shutil.rmtree(out)
    (out / "pred").mkdir(parents=True)
    return out


def load_split(prep: Path) -> dict:
    """Read PREP/split.json and check that its images and masks exist.

    Args:
        prep: folder written by bench/recipe/prepare.py.
    """
    path = prep / "split.json"
    if not path.is_file():
        sys.exit(f"error: {path} not found; run bench/recipe/prepare.py first")
    split = json.loads(path.read_text())
    for key in ("train", "val", "test"):
        for case in split[key]:
            for sub in ("images", "masks"):
                if not (prep / sub / f"{case}.png").is_file():
                    sys.exit(f"error: {prep / sub / (case + '.png')} missing (split.json lists it in {key})")
    return split


def read_grey(path: Path) -> np.ndarray:
    """Read a PNG as a uint8 (H, W) array."""
    return np.asarray(Image.open(path).convert("L"), dtype=np.uint8)


def read_image(path: Path) -> np.ndarray:
    """Read a prepared PNG as uint8: (H, W) when it is grey, (H, W, 3) when it is colour."""
    img = Image.open(path)
    return np.asarray(img.convert("RGB" if img.mode in ("RGB", "RGBA", "P") else "L"), dtype=np.uint8)


def read_mask(path: Path) -> np.ndarray:
    """Read a 0/255 mask PNG as a bool (H, W) array."""
    return read_grey(path) > 127


def write_pred(out: Path, case: str, pred: np.ndarray) -> None:
    """Write one binary prediction as OUT/pred/{case}.png, uint8 0/255."""
    Image.fromarray(np.where(pred, 255, 0).astype(np.uint8)).save(out / "pred" / f"{case}.png")


def write_stats(out: Path, stats: dict) -> None:
    """Write OUT/stats.json (images/s derived here so every method computes it the same way)."""
    seconds = stats.get("train_seconds") or 0.0
    stats["train_images_per_s"] = stats["images_seen"] / seconds if seconds > 0 else None
    (out / "stats.json").write_text(json.dumps(stats, indent=1))
