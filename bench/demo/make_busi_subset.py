"""Make the demo's reduced BUSI subset (demo_data/busi/) from the full copy in ../shared/data/busi.

BUSI (Al-Dhabyani et al., Data in Brief 2020) is CC0. The subset is drawn at random by
pseudo-patient group (cases.csv `patient`), never by difficulty, and keeps BUSI's split v2:
the demo's training and validation images come from groups of v2's `train`, its held-out test
images from groups of v2's `test`. Images are scaled so the long side is --side px (Lanczos),
masks with the same geometry (bilinear, then >= 0.5), both as PNG.

Usage: .venv/bin/python bench/demo/make_busi_subset.py ../shared/data/busi demo_data/busi
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image


def groups_of(cases_csv: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    with open(cases_csv, newline="") as f:
        for row in csv.DictReader(f):
            out.setdefault(row["patient"], []).append(row["case"])
    return out


def draw(groups: dict[str, list[str]], allowed: set[str], n_images: int, rng: np.random.Generator) -> list[str]:
    """Whole groups, in a random order, until they hold n_images images (groups lying across `allowed` are skipped)."""
    names = sorted(g for g, cases in groups.items() if set(cases) <= allowed)
    chosen: list[str] = []
    for g in rng.permutation(names):
        if len(chosen) >= n_images:
            break
        chosen.extend(groups[g])
    return sorted(chosen)


def scaled(path: Path, side: int, mask: bool) -> Image.Image:
    im = Image.open(path)
    w, h = im.size
    s = side / max(w, h)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    if mask:
        a = np.asarray(im.convert("L").resize(size, Image.BILINEAR), dtype=np.float32) / 255.0
        return Image.fromarray(((a >= 0.5) * 255).astype(np.uint8))
    return im.convert("L").resize(size, Image.LANCZOS)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("busi", type=Path, help="the full BUSI copy (images/, masks/, cases.csv, split.json v2)")
    ap.add_argument("out", type=Path, help="new folder for the subset")
    ap.add_argument("--train", type=int, default=300, help="training + validation images (from v2 train groups)")
    ap.add_argument("--val-share", type=float, default=0.2, help="share of those groups used for validation")
    ap.add_argument("--test", type=int, default=60, help="held-out test images (from v2 test groups)")
    ap.add_argument("--side", type=int, default=160, help="long side of the stored images in px")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    split_v2 = json.loads((args.busi / "split.json").read_text())
    if split_v2.get("version") != 2:
        raise SystemExit(f"{args.busi / 'split.json'}: expected split version 2")
    groups = groups_of(args.busi / "cases.csv")
    rng = np.random.default_rng(args.seed)
    pool = draw(groups, set(split_v2["train"]), args.train, rng)
    test = draw(groups, set(split_v2["test"]), args.test, rng)
    # validation: whole groups of the training pool, at random
    group_of = {c: g for g, cases in groups.items() for c in cases}
    pool_groups = sorted({group_of[c] for c in pool})
    n_val_groups = max(1, round(args.val_share * len(pool_groups)))
    val_groups = set(rng.permutation(pool_groups)[:n_val_groups])
    val = [c for c in pool if group_of[c] in val_groups]
    train = [c for c in pool if group_of[c] not in val_groups]

    if args.out.exists() and any(args.out.iterdir()):
        raise SystemExit(f"{args.out}: exists and is not empty")
    (args.out / "images").mkdir(parents=True, exist_ok=True)
    (args.out / "masks").mkdir(parents=True, exist_ok=True)
    rows = []
    with open(args.busi / "cases.csv", newline="") as f:
        meta = {r["case"]: r for r in csv.DictReader(f)}
    for case in sorted(train + val + test):
        scaled(args.busi / "images" / f"{case}.png", args.side, mask=False).save(args.out / "images" / f"{case}.png", optimize=True)
        m = scaled(args.busi / "masks" / f"{case}.png", args.side, mask=True)
        m.save(args.out / "masks" / f"{case}.png", optimize=True)
        a = np.asarray(m) > 0
        rows.append({"case": case, "class": meta[case]["class"], "patient": meta[case]["patient"],
                     "width": m.size[0], "height": m.size[1], "foreground_fraction": f"{a.mean():.5f}"})
    with open(args.out / "cases.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    split = {
        "train": sorted(train), "val": sorted(val), "test": sorted(test),
        "note": f"demo subset of BUSI split v2, drawn by patient group with seed {args.seed}: train/val from v2 train, "
                f"test from v2 test; made by bench/demo/make_busi_subset.py --train {args.train} --test {args.test} "
                f"--side {args.side} --seed {args.seed}",
    }
    (args.out / "split.json").write_text(json.dumps(split, indent=1) + "\n")
    counts = {k: (len(v), sum(meta[c]["class"] == "normal" for c in v)) for k, v in split.items() if k != "note"}
    print(f"{args.out}: " + ", ".join(f"{k} {n} ({e} normal)" for k, (n, e) in counts.items()))


if __name__ == "__main__":
    main()
