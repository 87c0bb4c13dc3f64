"""One square copy of a dataset (BUSI, PH2, CHASE) that every method reads, and the split they share.

Every method sees the same pixels: images resized with area averaging (bilinear when
enlarging), masks with nearest neighbour and re-binarised to 0/255. Grey sets stay grey, colour
sets (PH2, CHASE) stay RGB. The test set is the fixed test part of `split.json` in the shared
data (BUSI split v2: 156 cases incl. 22 normals, no pseudo-patient on both sides). The
validation set for checkpoint choice and tuning is drawn from the rest by whole `patient`
groups (`cases.csv`), about 15% of each class's images (seed 0; one class where `cases.csv` has
no `class` column), so neither test nor validation images have a near-copy in training and no
method ever picks anything on the test images.

    python bench/recipe/prepare.py ../shared/data/busi /work/cache/busi256
    python bench/recipe/prepare.py ../shared/data/chase /work/cache/chase512 --size 512
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

VAL_FRACTION = 0.15
SEED = 0


def _resize(arr: np.ndarray, nearest: bool, size: int) -> np.ndarray:
    img = Image.fromarray(arr)
    if nearest:
        return np.asarray(img.resize((size, size), Image.NEAREST))
    shrink = arr.shape[0] > size or arr.shape[1] > size
    return np.asarray(img.resize((size, size), Image.BOX if shrink else Image.BILINEAR))


def _grouped_val(train: list[str], cases_csv: Path) -> list[str]:
    """Whole patient groups, ~VAL_FRACTION of each class's images, drawn per class.

    Stratified by class because an unstratified 15% once drew only 6 of 99 normal images, too
    few to tune false-positive control on; grouped because near-copies of one lesion on both
    sides of train/val would flatter checkpoint choice and tuning as the v1 split did the test.
    """
    rows = {r["case"]: r for r in csv.DictReader(open(cases_csv))} if cases_csv.is_file() else {}
    groups: dict[str, list[str]] = {}
    for c in train:
        groups.setdefault(rows.get(c, {}).get("patient") or c, []).append(c)
    def cls_of(case: str) -> str:
        return rows.get(case, {}).get("class") or "all"

    rng = np.random.RandomState(SEED)
    val: list[str] = []
    for cls in sorted({cls_of(c) for c in train}):
        # a group's class is its first case's (near-copies of one lesion share it)
        names = sorted(g for g, m in groups.items() if cls_of(m[0]) == cls)
        want = VAL_FRACTION * sum(len(groups[g]) for g in names)
        taken = 0
        for i in rng.permutation(len(names)):
            if taken >= want - 0.5:
                break
            val += groups[names[i]]
            taken += len(groups[names[i]])
    return sorted(val)


def _is_colour(src: Path) -> bool:
    """True when the set's images carry colour (PH2, CHASE); grey PNGs saved as RGB count as grey."""
    for path in sorted((src / "images").glob("*.png"))[:8]:
        a = np.asarray(Image.open(path).convert("RGB")).astype(np.int16)
        if np.abs(a[..., 0] - a[..., 1]).max() > 2 or np.abs(a[..., 1] - a[..., 2]).max() > 2:
            return True
    return False


def prepare(src: Path, dst: Path, size: int = 256) -> Path:
    """Write dst/images, dst/masks (PNG, size x size) and dst/split.json once; reuse them after.

    Args:
        src: the shared dataset folder (images/, masks/, split.json, cases.csv).
        dst: where the copy goes; an existing finished copy is reused as it is.
        size: the side of the square copy.
    """
    done = dst / "split.json"
    if done.is_file():
        return dst
    tmp = dst.with_name(dst.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    (tmp / "masks").mkdir()
    mode = "RGB" if _is_colour(src) else "L"
    for path in sorted((src / "images").glob("*.png")):
        img = np.asarray(Image.open(path).convert(mode))
        mask = np.asarray(Image.open(src / "masks" / path.name).convert("L")) > 127
        Image.fromarray(_resize(img, nearest=False, size=size)).save(tmp / "images" / path.name)
        Image.fromarray((_resize(mask.astype(np.uint8) * 255, nearest=True, size=size) > 127).astype(np.uint8) * 255).save(tmp / "masks" / path.name)
    shared = json.loads((src / "split.json").read_text())
    train_all = sorted(shared["train"])
    val = _grouped_val(train_all, src / "cases.csv")
    split = {
        "train": sorted(set(train_all) - set(val)),
        "val": sorted(val),
        "test": sorted(shared["test"]),
        "size": size,
        "method": f"test = {src / 'split.json'} test (fixed 20%, version {shared.get('version', 1)}); val = whole patient "
        f"groups of its train, ~{VAL_FRACTION:.0%} of each class's images, by RandomState({SEED}); train = the rest",
    }
    (tmp / "split.json").write_text(json.dumps(split, indent=1))
    if (src / "cases.csv").is_file():
        shutil.copy(src / "cases.csv", tmp / "cases.csv")
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
    return dst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path, help="dataset folder with images/, masks/, split.json (cases.csv for groups)")
    ap.add_argument("dst", type=Path, help="where the square copy goes")
    ap.add_argument("--size", type=int, default=256, help="side of the square copy (default 256)")
    a = ap.parse_args()
    print(prepare(a.src, a.dst, a.size))


if __name__ == "__main__":
    main()
