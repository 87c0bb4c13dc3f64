"""Memory of the per-volume metrics of one 2.5D validation volume (what sets the floor of streamed validation).

tracemalloc peaks (numpy allocations) on a Z x 256 x 256 volume with one small lesion, for a
solid prediction (everything foreground) and a noisy one (random probabilities in 0.4-0.9, so
~80% foreground with most voxels on a surface):

* ``score (no surface)``: the volume row training's validation computes (Dice, lesions);
* ``hd95 now``: `metrics.surface.hd95_asd` (nearest neighbours between the surfaces);
* ``hd95 by distance transforms``: the former method, for comparison (two EDTs over the box);
* ``voxel list``: `np.argwhere` of the foreground, what the crop box was computed from before.

    .venv/bin/python bench/volume_metric_memory.py --slices 372
"""

from __future__ import annotations

import argparse
import sys
import tracemalloc
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medseg.metrics import MetricContract  # noqa: E402
from medseg.metrics.cases import case_metrics  # noqa: E402
from medseg.metrics.surface import _crop, hd95_asd, surface  # noqa: E402


def peak_mib(fn) -> float:
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    fn()
    return (tracemalloc.get_traced_memory()[1] - base) / 2**20


def edt_hd95(pred, truth, spacing):
    pred, truth = _crop(pred, truth)
    sp_, st_ = surface(pred), surface(truth)
    to_truth = ndimage.distance_transform_edt(~st_, sampling=spacing)
    to_pred = ndimage.distance_transform_edt(~sp_, sampling=spacing)
    return to_truth[sp_], to_pred[st_]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--slices", type=int, default=372)
    a = ap.parse_args(argv)
    Z, spacing = a.slices, (2.5, 1.4, 1.4)
    truth = np.zeros((Z, 256, 256), np.uint8)
    truth[100:110, 50:60, 50:60] = 1
    contract = MetricContract()
    tracemalloc.start()
    print(f"| prediction | score (no surface) MiB | hd95 now MiB | hd95 by distance transforms MiB | voxel list MiB |\n|---|---|---|---|---|")
    for name, prob in (("solid", np.ones((Z, 256, 256), np.float32)),
                       ("noisy", np.random.default_rng(0).uniform(0.4, 0.9, (Z, 256, 256)).astype(np.float32))):
        hard, t = prob >= 0.5, truth > 0
        row = [peak_mib(lambda: case_metrics(prob, truth, contract, spacing=spacing, surface=False)),
               peak_mib(lambda: hd95_asd(hard, t, spacing)),
               peak_mib(lambda: edt_hd95(hard, t, spacing)),
               peak_mib(lambda: np.argwhere(hard | t))]
        print(f"| {name}, {Z}x256x256 | " + " | ".join(f"{v:.0f}" for v in row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
