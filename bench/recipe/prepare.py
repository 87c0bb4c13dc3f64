"""One copy of BUSI at 256x256 that every method reads, and the split they share.

Every method sees the same pixels: images resized with area averaging (bilinear when
enlarging), masks with nearest neighbour and re-binarised to 0/255. The test set is the
fixed 20% of `split.json` in the shared data (split v2: 156 cases incl. 22 normals, no
pseudo-patient on both sides). The validation set for checkpoint choice and tuning is drawn
from the other 80% by whole `patient` groups (`cases.csv`), about 15% of each class's images
(seed 0), so neither test nor validation images have a near-copy in training and no method
ever picks anything on the test images.

    python bench/recipe/prepare.py ../shared/data/busi /work/cache/busi256
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 256
VAL_FRACTION = 0.15
SEED = 0


def _resize(arr: np.ndarray, nearest: bool) -> np.ndarray:
    img = Image.fromarray(arr)
    if nearest:
        return np.asarray(img.resize((SIZE, SIZE), Image.NEAREST))
    shrink = arr.shape[0] > SIZE or arr.shape[1] > SIZE
    return np.asarray(img.resize((SIZE, SIZE), Image.BOX if shrink else Image.BILINEAR))


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
    rng = np.random.RandomState(SEED)
    val: list[str] = []
    for cls in sorted({c.rsplit("_", 1)[0] for c in train}):
        # a group's class is its first case's (near-copies of one lesion share it)
        names = sorted(g for g, m in groups.items() if m[0].rsplit("_", 1)[0] == cls)
        want = VAL_FRACTION * sum(len(groups[g]) for g in names)
        taken = 0
        for i in rng.permutation(len(names)):
            if taken >= want - 0.5:
                break
            val += groups[names[i]]
            taken += len(groups[names[i]])
    return sorted(val)


def prepare(src: Path, dst: Path) -> Path:
    """Write dst/images, dst/masks (PNG, 256x256) and dst/split.json once; reuse them after."""
    done = dst / "split.json"
    if done.is_file():
        return dst
    tmp = dst.with_name(dst.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    (tmp / "masks").mkdir()
    for path in sorted((src / "images").glob("*.png")):
        img = np.asarray(Image.open(path).convert("L"))
        mask = np.asarray(Image.open(src / "masks" / path.name).convert("L")) > 127
        Image.fromarray(_resize(img, nearest=False)).save(tmp / "images" / path.name)
        Image.fromarray((_resize(mask.astype(np.uint8) * 255, nearest=True) > 127).astype(np.uint8) * 255).save(tmp / "masks" / path.name)
    shared = json.loads((src / "split.json").read_text())
    train_all = sorted(shared["train"])
    val = _grouped_val(train_all, src / "cases.csv")
    split = {
        "train": sorted(set(train_all) - set(val)),
        "val": sorted(val),
        "test": sorted(shared["test"]),
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
    ap.add_argument("src", type=Path, help="BUSI folder with images/, masks/, split.json")
    ap.add_argument("dst", type=Path, help="where the 256x256 copy goes")
    a = ap.parse_args()
    print(prepare(a.src, a.dst))


if __name__ == "__main__":
    main()
