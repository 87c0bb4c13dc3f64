"""Two probes behind BENCHMARKS §9c ("Later, fifth session"): what grew evaluate's memory with the set.

    .venv/bin/python bench/evaluate_memory_probes.py batch-shapes RUN   # RSS as the batch size steps 16 -> 1
    .venv/bin/python bench/evaluate_memory_probes.py load RUN [--all]   # RSS added by loading the val part (or every case)

RUN is a run folder (the flat-memory runs under /work/bench-runs/flat-s4/runs/nN). Run with
MEDSEG_TCMALLOC=off so the figures are glibc's, as they were measured, after `medseg cache` of the
run's config (the loads then read the cache, as evaluate does), one probe per process. `batch-shapes` calls
`predict_probs` with a batch size of 1 (the padding of a short last batch, which it measures the
need for, then never applies).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from medseg import runfolder as runfs  # noqa: E402
from medseg.data.sources import load_data  # noqa: E402
from medseg.inference import predict_probs  # noqa: E402


def rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20


def batch_shapes(run: Path) -> None:
    cfg, state = runfs.load_run_config(run), runfs.load_state(run)
    net, _ = runfs.load_network(run, cfg, state["in_channels"])
    side = cfg.data.input_size
    x = np.random.default_rng(0).random((16, state["in_channels"], *side), dtype=np.float32)
    predict_probs(net, x, batch_size=16)
    first = rss_mib()
    print(f"after a batch of 16: {first:.0f} MiB")
    for n in range(15, 0, -1):
        predict_probs(net, x[:n], batch_size=n)  # one batch of n: a new shape each time
    print(f"after batch sizes 15..1: {rss_mib():.0f} MiB (+{rss_mib() - first:.0f})")


def load(run: Path, every: bool) -> None:
    cfg = runfs.load_run_config(run)
    only = None if every else runfs.read_json(run / runfs.SPLIT)["val"]
    r0, t = rss_mib(), time.time()
    loaded = load_data(cfg.data, with_masks=True, only=only)
    print(f"{'every case' if every else 'the val part'}: {len(loaded.samples)} samples, +{rss_mib() - r0:.0f} MiB RSS, "
          f"{time.time() - t:.1f} s")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("probe", choices=("batch-shapes", "load"))
    ap.add_argument("run", type=Path)
    ap.add_argument("--all", action="store_true", help="load: every case of the data, not the val part")
    a = ap.parse_args(argv)
    batch_shapes(a.run) if a.probe == "batch-shapes" else load(a.run, a.all)


if __name__ == "__main__":
    main()
