"""TTA with sliding windows: per image (flip the image, slide, flip back) or per window (slide once, flip each window)?

Both run the same number of forward passes (windows x transforms); per window blends once, per
image once per transform. Timed on a run's network and its test images (one warm-up call each).

    .venv/bin/python bench/window_tta.py /work/bench-runs/native-busi/runs/patches --images 16
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medseg import runfolder as runfs  # noqa: E402
from medseg.inference import predict_probs  # noqa: E402


def per_window(net, images: np.ndarray, window, batch: int) -> np.ndarray:
    from monai.inferers import sliding_window_inference

    def flipped(t):  # each window predicted plain and flipped, averaged in probability space
        return 0.5 * (torch.sigmoid(net(t)) + torch.sigmoid(net(torch.flip(t, dims=[-1]))).flip(dims=[-1]))

    with torch.no_grad():
        x = torch.from_numpy(images)
        return sliding_window_inference(x, tuple(window.roi_size), batch, flipped, overlap=window.overlap, mode=window.mode,
                                        sigma_scale=window.sigma_scale)[:, 0].numpy()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path, help="a run trained with eval.sliding_window.roi_size set")
    ap.add_argument("--images", type=int, default=16)
    a = ap.parse_args(argv)
    cfg, state = runfs.load_run_config(a.run), runfs.load_state(a.run)
    part = runfs.load_split_part(a.run, cfg, part="test")
    net, _ = runfs.load_network(a.run, cfg, state["in_channels"])
    net.eval()
    images = np.ascontiguousarray(np.asarray(part.images[: a.images]), dtype=np.float32)
    w, bs = cfg.eval.sliding_window, cfg.eval.batch_size
    runs = {
        "per image": lambda x: predict_probs(net, x, bs, window=w, tta=True),
        "per window": lambda x: per_window(net, x, w, bs),
    }
    out = {}
    for name, fn in runs.items():
        fn(images[:2])
        t0 = time.perf_counter()
        out[name] = (fn(images), len(images) / (time.perf_counter() - t0))
    diff = float(np.abs(out["per image"][0] - out["per window"][0]).max())
    for name, (_, ips) in out.items():
        print(f"{name}: {ips:.2f} img/s")
    print(f"largest difference between the two: {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
