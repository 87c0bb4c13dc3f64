"""What the preprocessed cache costs and saves when a verb loads its data: `load_data` from the source files vs from the cache.

For one data config, each step in its own process (so its peak RSS is its own):

* ``memory``: `load_data` from the source files, everything in memory (medseg without a cache);
* ``build``: `load_data` into an empty cache (`medseg cache`), then the entry's size on disk;
* ``read``: `load_data` from the finished cache (what every later verb does), arrays not read;
* ``read+stack``: the same, then `stack_part` of every case (what `fit` does: from the cache the
  images stay on disk, a `SampleStack`; the masks are stacked in memory);
* ``read+stack+epoch``: the same, then every image read once through the stack (an epoch's reads);
* ``memory+stack``: the in-memory load, then `stack_part` of every case.

    .venv/bin/python bench/cache_load.py ../shared/data/busi --size 256 --out /tmp/cache-bench

Prints a Markdown table and writes OUT/results.json. The cache goes in OUT/cache (removed first).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def step(kind: str, root: str, size: int, cache: str) -> dict:
    sys.path.insert(0, str(REPO))
    from medseg.data import load_data
    from medseg.data.arrays import stack_part
    from medseg.data.cache import DiskStore
    from medseg.data.schema import DataConfig

    cfg = DataConfig(root=Path(root), input_size=(size, size))
    if not kind.startswith("memory"):
        cfg = cfg.model_copy(update={"cache_dir": Path(cache)})
    t0 = time.perf_counter()
    store = DiskStore(cfg.cache_dir, cfg, True) if cfg.cache_dir else None
    loaded = load_data(cfg, store=store)
    seconds_load = time.perf_counter() - t0
    out = {"kind": kind, "samples": len(loaded.samples), "load_s": seconds_load}
    if store is not None:
        out.update(built=store.built, reused=store.reused, disk_mib=store.disk_bytes() / 2**20)
    if "+stack" in kind:
        t1 = time.perf_counter()
        part = stack_part(loaded, sorted({s.case_id for s in loaded.samples}))
        out["stack_s"] = time.perf_counter() - t1
        out["stacked_mib"] = (part.images.nbytes + part.masks.nbytes) / 2**20
    if kind.endswith("+epoch"):
        t2 = time.perf_counter()
        total = 0.0
        for i in range(len(part.images)):
            total += float(part.images[i][0, 0, 0])
        out["epoch_read_s"] = time.perf_counter() - t2
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("root", help="an images/ + masks/ dataset folder")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--out", type=Path, default=Path("/tmp/cache-bench"))
    ap.add_argument("--step", help=argparse.SUPPRESS)
    args = ap.parse_args()
    cache = args.out / "cache"
    if args.step:
        print(json.dumps(step(args.step, args.root, args.size, str(cache))))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(cache, ignore_errors=True)
    rows = []
    for kind in ("memory", "build", "read", "read+stack", "read+stack+epoch", "memory+stack"):
        proc = subprocess.run([sys.executable, __file__, args.root, "--size", str(args.size), "--out", str(args.out),
                               "--step", kind], capture_output=True, text=True, check=True)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    machine = f"{platform.machine()} {subprocess.run(['nproc'], capture_output=True, text=True, check=False).stdout.strip()} cores"
    (args.out / "results.json").write_text(json.dumps({"root": args.root, "size": args.size, "machine": machine,
                                                        "date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=1))
    print("\n| step | load s | stack s | read every image s | peak RSS MiB | units built / read back | cache on disk MiB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        units = f"{r['built']} / {r['reused']}" if "built" in r else "-"
        disk = f"{r['disk_mib']:.0f}" if "disk_mib" in r else "-"
        stack = f"{r['stack_s']:.2f}" if "stack_s" in r else "-"
        epoch = f"{r['epoch_read_s']:.2f}" if "epoch_read_s" in r else "-"
        print(f"| {r['kind']} | {r['load_s']:.1f} | {stack} | {epoch} | {r['peak_rss_mib']:.0f} | {units} | {disk} |")


if __name__ == "__main__":
    main()
