"""How closely the DDP runs of tests/training/test_distributed.py agree with the single-process run.

    .venv/bin/python -m pytest -q tests/training/test_distributed.py -m slow --basetemp /tmp/ddp-bench
    .venv/bin/python bench/ddp_agreement.py /tmp/ddp-bench

Finds the test's runs/ folder below the base temp and prints, per DDP variant against the
single process (and the resumed and torchrun runs against the Lightning-launcher run), the
largest relative train/val loss difference, the largest validation Dice difference, and whether
every epoch's training-draw digest matches.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def compare(a: list[dict], b: list[dict]) -> dict:
    rel = lambda x, y: abs(x - y) / max(abs(x), 1e-12)  # noqa: E731
    return {
        "epochs": f"{len(a)} / {len(b)}",
        "train_loss_rel": max(rel(x["train_loss"], y["train_loss"]) for x, y in zip(a, b)),
        "val_loss_rel": max(rel(x["val_loss"], y["val_loss"]) for x, y in zip(a, b)),
        "val_dice_abs": max(abs(x["val_dice"] - y["val_dice"]) for x, y in zip(a, b)),
        "digests_equal": all(x["train_draw_digest"] == y["train_draw_digest"] for x, y in zip(a, b)),
    }


def main(argv=None) -> int:
    from medseg import runfolder as runfs

    base = Path((argv or sys.argv[1:])[0])
    (root,) = [p.parent for p in base.rglob("single") if (p / runfs.EPOCHS_CSV).is_file()]
    rows = {name: runfs.read_csv(root / name / runfs.EPOCHS_CSV) for name in ("single", "ddp", "killed", "torchrun")}
    for a, b in (("single", "ddp"), ("ddp", "killed"), ("ddp", "torchrun")):
        c = compare(rows[a], rows[b])
        print(f"{b:>9} vs {a:<7} epochs {c['epochs']}  train loss rel {c['train_loss_rel']:.1e}  val loss rel {c['val_loss_rel']:.1e}  "
              f"val Dice abs {c['val_dice_abs']:.1e}  digests equal {c['digests_equal']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
