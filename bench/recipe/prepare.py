"""One copy of BUSI at 256x256 that every method reads, and the split they share.

Every method sees the same pixels: images resized with area averaging (bilinear when
enlarging), masks with nearest neighbour and re-binarised to 0/255. The test set is the
fixed 20% of `split.json` in the shared data (seed 0, 156 cases incl. the normals); 15% of
each class of the remaining 80% (seed 0) is the validation set for checkpoint choice and tuning, so no
method ever picks anything on the test images.

    python bench/recipe/prepare.py ../shared/data/busi /work/cache/busi256
"""

from __future__ import annotations

import argparse
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
    # stratified by class (the stem's prefix): an unstratified 15% drew only 6 of 99 normal
    # images, too few to tune false-positive control on
    rng = np.random.RandomState(SEED)
    val: list[str] = []
    for cls in sorted({c.rsplit("_", 1)[0] for c in train_all}):
        members = [c for c in train_all if c.rsplit("_", 1)[0] == cls]
        order = [members[i] for i in rng.permutation(len(members))]
        val += order[: int(round(VAL_FRACTION * len(members)))]
    split = {
        "train": sorted(set(train_all) - set(val)),
        "val": sorted(val),
        "test": sorted(shared["test"]),
        "method": f"test = {src / 'split.json'} test (fixed 20%); val = {VAL_FRACTION:.0%} of its train per class "
        f"(benign/malignant/normal) by RandomState({SEED}); train = the rest",
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
