"""Live Python heap per loaded sample: `load_data` of a config's data section from its cache, under tracemalloc.

What each sample's bookkeeping costs in memory (ids, meta, lazy arrays), apart from pixels, which
stay on disk. The cache must exist (`medseg cache CONFIG`), or the first run builds it and the
peak then includes the build.

    .venv/bin/python bench/sample_bytes.py /work/bench-runs/s7/flat-siim-new/n1000.yaml

Prints the live and peak traced bytes per sample and the largest allocation sites.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config", type=Path, help="a run config whose data section has a cache_dir")
    ap.add_argument("--top", type=int, default=8, help="allocation sites to list")
    a = ap.parse_args(argv)
    from medseg.config import load_config
    from medseg.data import load_data

    cfg = load_config(a.config, [])
    tracemalloc.start(8)
    loaded = load_data(cfg.data, with_masks=True, progress=False)
    gc.collect()
    cur, peak = tracemalloc.get_traced_memory()
    n = len(loaded.samples)
    print(f"{n} samples: live {cur / 2**20:.1f} MiB ({cur / n:.0f} B per sample), peak {peak / 2**20:.1f} MiB ({peak / n:.0f} B per sample)")
    for s in tracemalloc.take_snapshot().statistics("lineno")[: a.top]:
        print(f"{s.size / n:7.0f} B per sample  {s.count / n:5.1f} objects per sample  {s.traceback}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
