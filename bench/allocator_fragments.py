"""Does the allocator keep freed whole-volume arrays of distinct sizes? A model of scoring volume by volume.

Per "volume" (the first 390 slices, then random lengths 75-390, seed 0), three float32 probability
arrays at 256², a uint8 mask, and a bool and an int32 temporary per array, all freed before the
next volume; optionally the allocator's free pages are handed back after each volume
(tcmalloc's `MallocExtension_ReleaseFreeMemory`, else glibc's `malloc_trim(0)`). Prints the
process's peak RSS. Run it under each allocator (BENCHMARKS §9c, tenth session):

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 .venv/bin/python bench/allocator_fragments.py --volumes 26 [--release]
    .venv/bin/python bench/allocator_fragments.py --volumes 26 [--release]
"""

from __future__ import annotations

import argparse
import ctypes
import resource

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--volumes", type=int, default=26)
    ap.add_argument("--release", action="store_true", help="hand free pages back after each volume")
    args = ap.parse_args()
    lib = ctypes.CDLL(None)
    tc = getattr(lib, "MallocExtension_ReleaseFreeMemory", None)
    release = tc or (lambda: lib.malloc_trim(0))
    lengths = [390] + [int(n) for n in np.random.default_rng(0).integers(75, 390, args.volumes - 1)]
    for n in lengths:
        sets = [np.full((n, 256, 256), 0.5, np.float32) for _ in range(3)]
        mask = np.zeros((n, 256, 256), np.uint8)
        for s in sets:
            hard = s > 0.3
            labels = hard.astype(np.int32)
            del hard, labels
        del sets, mask
        if args.release:
            release()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(f"allocator {'tcmalloc' if tc else 'glibc'}, {args.volumes} volumes, release {args.release}: peak RSS {peak} MiB")


if __name__ == "__main__":
    main()
