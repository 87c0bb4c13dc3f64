"""The plan's estimate of a training step against the warm step itself, on BUSI's planned recipe.

Prints one JSON line. Run each variant in a fresh process (as `medseg fit` plans in one), with
tcmalloc preloaded as the CLI does, alternating the variants:

    export LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4
    git show b5d53fe:medseg/planning/stepcost.py > /tmp/stepcost_old.py   # the estimate before a6794b7
    for i in 1 2 3; do
      .venv/bin/python bench/step_estimate.py --stepcost /tmp/stepcost_old.py
      .venv/bin/python bench/step_estimate.py
    done
    .venv/bin/python bench/step_estimate.py --truth

Args (command line):
    --stepcost: a stepcost.py to load instead of medseg's (e.g. an earlier commit's).
    --batches: with medseg's stepcost, the two timed batch sizes (default its MEASURE_BATCHES).
    --truth: instead, time 8 warm steps at --batch and print them.
    --batch: the batch the estimate is read at (16: what the plan picks for BUSI on 2 cores).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time

import torch

from medseg.config import config_from_dict

# the recipe the plan makes for BUSI at 256² on 2 cores (flexunet-resnet34, bf16, channels_last): grey images
IN_CHANNELS, SIZE, N_TRAIN, N_VAL = 1, (256, 256), 624, 156


def _stepcost(path):
    if path is None:
        import medseg.planning.stepcost as sc
        return sc
    spec = importlib.util.spec_from_file_location("stepcost_under_test", path)
    sc = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = sc  # dataclasses look their module up
    spec.loader.exec_module(sc)
    return sc


def _truth(cfg, batch: int) -> dict:
    from medseg.runtime import autocast_for, resolve_precision
    from medseg.training import SegModule

    prec = resolve_precision(cfg.train.precision, cfg.train.accelerator)
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    m = SegModule(cfg, IN_CHANNELS, pos_fraction=0.01, steps_per_epoch=1, precision=prec)
    opt = m.configure_optimizers()[0][0]
    x = torch.randn(batch, IN_CHANNELS, *SIZE).contiguous(memory_format=torch.channels_last)
    y = (torch.rand(batch, 1, *SIZE) > 0.95).float()

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast_for(prec, cpu):
            loss = m.training_step((x, y, torch.arange(batch)), 0)
        loss.backward()
        opt.step()

    m.train()
    steps = []
    for _ in range(8):
        t = time.perf_counter()
        step()
        steps.append(round(time.perf_counter() - t, 3))
    return {"variant": "truth", "batch": batch, "steps_s": steps}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stepcost", default=None)
    ap.add_argument("--batches", default=None)
    ap.add_argument("--truth", action="store_true")
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args(argv)
    cfg = config_from_dict({"data": {"source": "images", "root": ".", "input_size": list(SIZE)}, "train": {"batch_size": args.batch}})
    if args.truth:
        print(json.dumps(_truth(cfg, args.batch)))
        return 0
    sc = _stepcost(args.stepcost)
    if args.batches:
        sc.MEASURE_BATCHES = tuple(int(v) for v in args.batches.split(","))
    t = time.perf_counter()
    c = sc.measure_cost(cfg, IN_CHANNELS, SIZE, SIZE)
    print(json.dumps({"variant": args.stepcost or "medseg", "batches": getattr(sc, "MEASURE_BATCHES", (2, 4)),
                      f"step{args.batch}_s": round(c.step_s(args.batch), 3), "fixed_s": round(c.step_s_fixed, 4),
                      "per_image_s": round(c.train_s_per_image, 4), "epoch_s": round(sc.epoch_seconds(c, args.batch, N_TRAIN, N_VAL, None), 1),
                      "measure_wall_s": round(time.perf_counter() - t, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
