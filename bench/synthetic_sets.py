"""Real-size synthetic datasets for memory and speed benchmarks: LiTS-like CT volumes and SIIM-like 1024² X-rays.

    .venv/bin/python bench/synthetic_sets.py lits OUT/lits --cases 131            # 512², 75-400 slices, int16 HU
    .venv/bin/python bench/synthetic_sets.py siim OUT/siim --cases 12089          # 1024² DICOMs + train-rle.csv

The sizes are the real datasets' (LiTS: 131 CT volumes of 512² with 75-987 slices, here drawn
from 75-400 as the cache issue asks; SIIM-ACR: 12,089 X-rays at 1024², ~22% with a
pneumothorax); the content is made to be segmentable but is not anatomy: a body ellipse and
a liver-like blob in HU with 0-3 small darker lesions per volume (the label), or a chest-like
gradient with a thin crescent along one lung's edge (the RLE mask). Each case depends only on
(seed, index), so a rerun after a kill skips the files already written and gives the same set.

LiTS-like volumes are written as ``caseNNN_image.nii`` + ``caseNNN_label.nii`` (the
``volumes`` source), uncompressed unless ``--compress`` (gzip costs more CPU than the
benchmark it feeds); SIIM-like images as ``dicom/ID.dcm`` + ``train-rle.csv`` (the ``siim``
source). Sizes on disk, from the array sizes: 512² × 2 B × 237 slices on average ≈ 124 MB per
LiTS-like volume (16 GB for 131); 1024² × 2 B ≈ 2 MB per SIIM-like image.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def lits_case(index: int, seed: int = 0, side: int = 512, slices: tuple[int, int] = (75, 400)) -> tuple[np.ndarray, np.ndarray]:
    """One LiTS-like volume (X, Y, Z) int16 HU and its lesion label (X, Y, Z) uint8."""
    rng = np.random.default_rng([seed, index, 1])
    Z = int(rng.integers(slices[0], slices[1] + 1))
    yy, xx = np.mgrid[:side, :side].astype(np.float32) / side
    body = ((xx - 0.5) / 0.42) ** 2 + ((yy - 0.5) / 0.33) ** 2 <= 1
    vol = np.full((Z, side, side), -1000, np.int16)
    label = np.zeros((Z, side, side), np.uint8)
    z0, z1 = int(Z * 0.2), int(Z * 0.8)  # the liver spans the middle slices
    lesions = [(int(rng.integers(z0 + 3, max(z0 + 4, z1 - 3))), rng.uniform(0.35, 0.6), rng.uniform(0.35, 0.6),
                rng.uniform(3, 12) / side) for _ in range(int(rng.integers(0, 4)))]
    for z in range(Z):
        sl = np.where(body, 40, -1000).astype(np.float32)
        if z0 <= z < z1:
            t = (z - z0) / max(1, z1 - z0)
            r = 0.18 * np.sin(np.pi * t) + 0.02
            liver = ((xx - 0.4) / (1.3 * r)) ** 2 + ((yy - 0.45) / r) ** 2 <= 1
            sl[liver] = 60
            for lz, cx, cy, rad in lesions:
                dz = (z - lz) / max(rad * side / 2, 1)
                rr = rad * np.sqrt(max(0.0, 1 - dz * dz))
                if rr > 0:
                    les = ((xx - cx) ** 2 + (yy - cy) ** 2 <= rr * rr) & liver
                    sl[les] = 25
                    label[z][les] = 1
        sl += rng.normal(0, 12, sl.shape).astype(np.float32) * body
        vol[z] = np.clip(sl, -1024, 3071).astype(np.int16)
    return np.ascontiguousarray(vol.transpose(2, 1, 0)), np.ascontiguousarray(label.transpose(2, 1, 0))


def write_lits(out: Path, cases: int, seed: int = 0, side: int = 512, slices: tuple[int, int] = (75, 400),
               compress: bool = False) -> list[Path]:
    import nibabel as nib

    out.mkdir(parents=True, exist_ok=True)
    ext = ".nii.gz" if compress else ".nii"
    written = []
    t0 = time.perf_counter()
    for i in range(cases):
        ip, lp = out / f"case{i:03d}_image{ext}", out / f"case{i:03d}_label{ext}"
        if not (ip.exists() and lp.exists()):
            vol, lab = lits_case(i, seed, side, slices)
            aff = np.diag([0.7, 0.7, 2.5, 1.0])
            for path, arr in ((lp, lab), (ip, vol)):  # image last: its presence marks the pair done
                tmp = path.with_name(f".{path.name}.tmp{ext}")
                nib.save(nib.Nifti1Image(arr, aff), tmp)
                tmp.rename(path)
        written.append(ip)
        print(f"\rlits {i + 1}/{cases} ({time.perf_counter() - t0:.0f} s)", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return written


def siim_case(index: int, seed: int = 0, side: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """One SIIM-like X-ray (side, side) uint16 and its mask (uint8): ~22% of images hold a thin crescent."""
    rng = np.random.default_rng([seed, index, 2])
    yy, xx = np.mgrid[:side, :side].astype(np.float32) / side
    lungs = (((xx - 0.3) / 0.17) ** 2 + ((yy - 0.5) / 0.33) ** 2 <= 1) | (((xx - 0.7) / 0.17) ** 2 + ((yy - 0.5) / 0.33) ** 2 <= 1)
    img = 2400 - 1400 * lungs + 300 * yy + rng.normal(0, 60, (side, side))
    mask = np.zeros((side, side), np.uint8)
    if rng.random() < 0.22:
        cx = 0.3 if rng.random() < 0.5 else 0.7
        ring = ((xx - cx) / 0.17) ** 2 + ((yy - 0.5) / 0.33) ** 2
        top = yy < rng.uniform(0.35, 0.6)
        crescent = (ring <= 1) & (ring >= rng.uniform(0.75, 0.92)) & top
        mask[crescent] = 1
        img[crescent] -= 500
    return np.clip(img, 0, 4095).astype(np.uint16), mask


def write_siim(out: Path, cases: int, seed: int = 0, side: int = 1024) -> Path:
    from medseg.data.rle import rle_encode
    from tests.data.conftest import write_dicom  # the checkout's own minimal DICOM writer

    (out / "dicom").mkdir(parents=True, exist_ok=True)
    rows = ["ImageId, EncodedPixels"]
    t0 = time.perf_counter()
    for i in range(cases):
        uid = f"1.2.826.0.1.3680043.99.{seed}.{i}"
        path = out / "dicom" / f"{uid}.dcm"
        img, mask = siim_case(i, seed, side)
        if not path.exists():
            tmp = path.with_name(f".{path.name}.tmp")
            write_dicom(tmp, img, uid, patient=f"P{i:05d}", modality="CR", spacing=(0.14, 0.14))
            tmp.rename(path)
        rows.append(f"{uid}, {rle_encode(mask) if mask.any() else '-1'}")
        print(f"\rsiim {i + 1}/{cases} ({time.perf_counter() - t0:.0f} s)", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    csv = out / "train-rle.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("kind", choices=["lits", "siim"])
    ap.add_argument("out", type=Path)
    ap.add_argument("--cases", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--side", type=int, help="in-plane size (default 512 for lits, 1024 for siim)")
    ap.add_argument("--slices", type=int, nargs=2, default=(75, 400), metavar=("MIN", "MAX"), help="lits: slices per volume")
    ap.add_argument("--compress", action="store_true", help="lits: .nii.gz instead of .nii")
    args = ap.parse_args(argv)
    if args.kind == "lits":
        write_lits(args.out, args.cases, args.seed, args.side or 512, tuple(args.slices), args.compress)
    else:
        write_siim(args.out, args.cases, args.seed, args.side or 1024)
    return 0


if __name__ == "__main__":
    sys.exit(main())
