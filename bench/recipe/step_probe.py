"""The bare training step of a run's model: same network, loss, optimiser, clipping, batch and
input size as the run, on a fixed random batch (no data loading, augmentation, sampler,
Lightning or logging). Prints one JSON line: seconds per step and images/s.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 \
        .venv/bin/python bench/recipe/step_probe.py --run runs/X --batch 16 --channels-last
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from medseg.losses import build_loss  # noqa: E402
from medseg.models import create_model  # noqa: E402
from medseg.runfolder import load_run_config  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=12)
    a = ap.parse_args()
    cfg = load_run_config(a.run)
    torch.manual_seed(0)
    h, w = cfg.data.input_size
    # the run's channel count (3 for colour sets), as state.json recorded it
    chans = int(json.loads((a.run / "state.json").read_text()).get("in_channels", 1))
    net = create_model(cfg.model.name, chans, cfg.model.channels, cfg.model.dropout, cfg.model.res_units)
    x = torch.randn(a.batch, chans, h, w)
    y = torch.zeros(a.batch, 1, h, w)
    y[: a.batch // 2, :, h // 3 : h // 2, w // 3 : w // 2] = 1.0  # half the batch positive, ~3% foreground
    if a.channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    loss_fn = build_loss(cfg.loss, float(y.mean()))
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    net.train()

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
            logits = net(x)
        loss = loss_fn(logits, y)
        loss.backward()
        if cfg.train.grad_clip:
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.train.grad_clip)
        opt.step()

    for _ in range(a.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    sec = (time.perf_counter() - t0) / a.steps
    print(json.dumps({
        "model": cfg.model.name, "batch": a.batch, "input": [chans, h, w], "channels_last": a.channels_last, "bf16": a.bf16,
        "tcmalloc": "tcmalloc" in os.environ.get("LD_PRELOAD", ""), "threads": torch.get_num_threads(),
        "seconds_per_step": sec, "images_per_s": a.batch / sec,
    }))


if __name__ == "__main__":
    main()
