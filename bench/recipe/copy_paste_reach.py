"""How often lesion copy-paste can place a lesion on a set: `LesionCopyPaste` at p 1 on its masks.

A pasted lesion must not touch the target's own (see medseg/data/copy_paste.py), so on sets whose
lesions fill much of the image it mostly cannot be placed and is a no-op. Reads the first N masks
of DATA/masks, resized to SIZE² (nearest), and tries 3 draws per image with foreground.

    .venv/bin/python bench/recipe/copy_paste_reach.py ../shared/data/ph2 256
"""

from __future__ import annotations

import argparse
import glob

import cv2
import numpy as np

from medseg.data.copy_paste import STREAM_PASTE, LesionCopyPaste
from medseg.data.sampling import positive_images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("size", type=int)
    ap.add_argument("--n", type=int, default=60)
    args = ap.parse_args()
    files = sorted(glob.glob(f"{args.data}/masks/*"))[: args.n]
    masks = np.stack([
        (cv2.resize(cv2.imread(f, cv2.IMREAD_GRAYSCALE), (args.size, args.size), interpolation=cv2.INTER_NEAREST) > 0).astype(np.uint8)
        for f in files
    ])
    images = np.zeros((len(masks), 1, args.size, args.size), np.float32)  # placement depends on the masks only
    pos = np.flatnonzero(positive_images(masks))
    paste = LesionCopyPaste(1.0, pos)
    fired = sum(paste(images[i], masks[i], int(i), images, masks, np.random.default_rng([s, STREAM_PASTE]))[2] for s in range(3) for i in pos)
    print(f"{args.data}: pasted {fired} of {3 * len(pos)} draws; foreground share {masks.mean():.3f}")


if __name__ == "__main__":
    main()
