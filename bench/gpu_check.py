"""GPU check: fit -> evaluate -> predict on synthetic 512² data in bf16 and fp16, every network on the GPU.

Run by `bench/gpu_check.sh` on a machine with a CUDA GPU (it sets up the environment first):

    .venv/bin/python bench/gpu_check.py --out runs/gpu-check [--busi ../shared/data/busi]

Every verb runs in this process through the real CLI (`medseg.cli.main`). Two recorders note
where networks ran: the training step (the device of the module's parameters) and
`inference.predict_prob_sets` (the one function every verb's inference goes through: fit's
validation, evaluate, tune, predict, doctor, report). The check fails (exit 1) when a verb ran
a network on the CPU, ran none, or exited non-zero. It prints, per precision, training and
inference images/s and the peak GPU memory of each verb; then training images/s with
channels_last off and with torch.compile (the options are measured, not assumed); with --busi,
also a BUSI fit at 512² (15-minute budget by default) and its test Dice. Results also go to OUT/gpu_check.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("MEDSEG_TCMALLOC", "off")  # the verbs run in this process: no re-exec
DEVICE, ACCELERATOR = "cuda", "gpu"


def synthetic(root: Path, n: int, size: int, seed: int = 0) -> Path:
    """images/ + masks/ PNGs at size²: noisy texture, one to three bright ellipses as lesions, a fifth empty."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    for i in range(n):
        img = rng.normal(90, 20, (size, size)).astype(np.float32)
        mask = np.zeros((size, size), bool)
        if i % 5:
            for _ in range(rng.integers(1, 4)):
                cy, cx = rng.uniform(0.15, 0.85, 2) * size
                ry, rx = rng.uniform(0.01, 0.06, 2) * size
                mask |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        img[mask] += 60
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / "images" / f"s{i:04d}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"s{i:04d}.png")
    return root


class Recorder:
    """Where networks ran, per verb."""

    def __init__(self):
        import torch

        from medseg import inference
        from medseg.training import module

        self.verb = None
        self.devices: dict[str, set[str]] = {}
        real_sets, real_step = inference.predict_prob_sets, module.SegModule.training_step
        rec = self

        def sets(net, images, *args, **kwargs):
            device = kwargs.get("device", args[3] if len(args) > 3 else "cpu")
            rec.note(torch.device(device).type)
            return real_sets(net, images, *args, **kwargs)

        def step(self_, batch, batch_idx):
            rec.note(next(self_.parameters()).device.type)
            return real_step(self_, batch, batch_idx)

        inference.predict_prob_sets = sets
        module.SegModule.training_step = step

    def note(self, kind: str) -> None:
        self.devices.setdefault(self.verb, set()).add(kind)


def run_verb(rec: Recorder, verb: str, *args) -> dict:
    """One CLI call in this process; wall time, exit code and peak GPU memory."""
    import torch

    from medseg import cli

    rec.verb = verb
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    argv, sys.argv = sys.argv, ["medseg", verb, *map(str, args)]
    t0, code = time.time(), 0
    try:
        cli.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 0
    finally:
        sys.argv = argv
    out = {"verb": verb, "rc": code, "wall_s": round(time.time() - t0, 2), "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3) if torch.cuda.is_available() else 0.0,
           "devices": sorted(rec.devices.get(verb, ()))}
    print(f"  {verb:9s} rc={code} {out['wall_s']:8.1f} s  peak {out['peak_gib']:.2f} GiB  networks on {out['devices'] or 'nothing'}", flush=True)
    return out


def judge(label: str, verbs: list[dict], device: str) -> list[str]:
    """What failed: a verb that exited non-zero, ran no network, or ran one anywhere but `device`."""
    out = []
    for v in verbs:
        if v["rc"] != 0:
            out.append(f"{label} {v['verb']}: exit {v['rc']}")
        elif not v["devices"]:
            out.append(f"{label} {v['verb']}: ran no network")
        elif v["devices"] != [device]:
            out.append(f"{label} {v['verb']}: ran a network on {v['devices']} (expected {device})")
    return out


def timed_inference(run: Path, images: Path, cfg, repeats: int = 2) -> float:
    """Inference images/s of the run's network on the GPU at its eval batch size (warm, load excluded)."""
    import torch

    from medseg import runfolder as runfs
    from medseg.data import load_data
    from medseg.data.arrays import stack_part
    from medseg.inference import run_probs

    state = runfs.load_state(run)
    loaded = load_data(cfg.data, with_masks=True)
    arr = stack_part(loaded, sorted({s.case_id for s in loaded.samples})[:64])
    net, _ = runfs.load_network(run, cfg, state["in_channels"])
    run_probs(net, arr.images[: cfg.eval.batch_size], cfg, state)  # warm-up (cudnn autotune, allocator)
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    t0 = time.time()
    for _ in range(repeats):
        run_probs(net, arr.images, cfg, state)
    sync()
    return repeats * len(arr.images) / (time.time() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n", type=int, default=96, help="synthetic images")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--busi", type=Path, default=None, help="BUSI folder (../shared/data/busi): also a real 512² fit")
    ap.add_argument("--busi-minutes", type=float, default=15.0)
    ap.add_argument("--no-options", action="store_true", help="skip the channels_last-off and torch.compile training rows")
    ap.add_argument("--dry-run-cpu", action="store_true", help="check the script itself on a machine without a GPU (expects the CPU)")
    a = ap.parse_args(argv)

    import torch
    import yaml

    if a.dry_run_cpu:
        global DEVICE, ACCELERATOR
        DEVICE, ACCELERATOR = "cpu", "cpu"
        name = "CPU (dry run)"
    elif not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible to torch", torch.__version__, file=sys.stderr)
        return 1
    else:
        name = torch.cuda.get_device_name(0)
        print(f"device: {name}, torch {torch.__version__}, CUDA {torch.version.cuda}, bf16 {torch.cuda.is_bf16_supported()}", flush=True)
    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = synthetic(out / "synthetic", a.n, a.size)
    rec = Recorder()
    results = {"device": name, "torch": torch.__version__, "cuda": torch.version.cuda, "date": time.strftime("%Y-%m-%d"),
               "data": f"{a.n} synthetic {a.size}² images, seed 0", "epochs": a.epochs, "batch": a.batch, "runs": []}
    failures = []
    if a.dry_run_cpu:
        precisions = ["bf16"]
    else:
        precisions = ["bf16", "16"] if torch.cuda.is_bf16_supported() else ["16"]
    for precision in precisions:
        print(f"\n{precision}:", flush=True)
        cfg = {"name": f"synthetic-{precision}", "output_dir": str(out / "runs"), "seed": 0,
               "data": {"source": "images", "root": str(data), "input_size": [a.size, a.size]},
               "train": {"epochs": a.epochs, "batch_size": a.batch, "precision": precision, "accelerator": ACCELERATOR}}
        path = out / f"{precision}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        run = out / "runs" / cfg["name"]
        if run.exists():
            import shutil

            shutil.rmtree(run)
        verbs = [run_verb(rec, "fit", path, "--device", DEVICE, "--no-progress"),
                 run_verb(rec, "evaluate", run, "--device", DEVICE, "--no-progress"),
                 run_verb(rec, "predict", run, data / "images", out / f"pred-{precision}", "--device", DEVICE)]
        row = {"precision": precision, "verbs": verbs}
        if verbs[0]["rc"] == 0:
            from medseg import runfolder as runfs

            epochs = runfs.read_csv(run / runfs.EPOCHS_CSV)
            row["train_images_per_s"] = float(np.median([e["train_images_per_s"] for e in epochs[1:] or epochs]))  # epoch 0 warms up
            row["train_peak_gib"] = float(np.nanmax([float(e.get("gpu_peak_gib") or 0) for e in epochs] + [0.0]))
            row["infer_images_per_s"] = timed_inference(run, data / "images", runfs.load_run_config(run))
            row["val_dice"] = runfs.read_json(run / runfs.SUMMARY).get("dice")
            print(f"  train {row['train_images_per_s']:.1f} img/s (peak {row['train_peak_gib']:.2f} GiB), "
                  f"inference {row['infer_images_per_s']:.1f} img/s, val Dice {row['val_dice']:.3f}", flush=True)
        failures += judge(precision, verbs, DEVICE)
        rec.devices.clear()
        results["runs"].append(row)

    # the memory format and torch.compile are measured, not assumed: the same bf16 (else fp16) fit with one option changed
    if not a.no_options:
        print("\noptions (training only):", flush=True)
        results["options"] = []
        for label, over in (("channels_last off", {"channels_last": False}), ("torch.compile", {"compile": True})):
            cfg = {"name": f"option-{label.split()[0]}", "output_dir": str(out / "runs"), "seed": 0,
                   "data": {"source": "images", "root": str(data), "input_size": [a.size, a.size]},
                   "train": {"epochs": a.epochs, "batch_size": a.batch, "precision": precisions[0], "accelerator": ACCELERATOR, **over},
                   "postprocess": {"tune": False}}
            path = out / f"option-{label.split()[0]}.yaml"
            path.write_text(yaml.safe_dump(cfg))
            run = out / "runs" / cfg["name"]
            if run.exists():
                import shutil

                shutil.rmtree(run)
            v = run_verb(rec, "fit", path, "--device", DEVICE, "--no-progress")
            row = {"option": label, "precision": precisions[0], "verb": v}
            failures += judge(f"option {label}", [v], DEVICE)
            if v["rc"] == 0:
                from medseg import runfolder as runfs

                epochs = runfs.read_csv(run / runfs.EPOCHS_CSV)
                row["train_images_per_s"] = float(np.median([e["train_images_per_s"] for e in epochs[1:] or epochs]))
                print(f"  {label}: train {row['train_images_per_s']:.1f} img/s (epoch 0, which compiles, left out)", flush=True)
            rec.devices.clear()
            results["options"].append(row)

    if a.busi and a.busi.exists():
        print("\nBUSI split v2 at 512²:", flush=True)
        busi = a.busi.resolve()
        cfg = {"name": "busi512", "output_dir": str(out / "runs"), "seed": 0,
               "data": {"source": "images", "root": str(busi), "cases_csv": str(busi / "cases.csv"), "group_column": "patient",
                        "input_size": [512, 512]},
               "split": {"mode": "file", "file": str(busi / "split.json")},
               "train": {"budget_minutes": a.busi_minutes, "accelerator": ACCELERATOR}}
        path = out / "busi512.yaml"
        path.write_text(yaml.safe_dump(cfg))
        run = out / "runs" / "busi512"
        if not run.exists():
            verbs = [run_verb(rec, "fit", path, "--device", DEVICE, "--no-progress"),
                     run_verb(rec, "evaluate", run, "--split", "test", "--device", DEVICE, "--no-progress")]
            results["busi"] = {"verbs": verbs}
            failures += judge("busi", verbs, DEVICE)
            with contextlib.suppress(Exception):
                from medseg import runfolder as runfs

                evals = sorted((run / "evaluations").glob("*/summary.json")) if (run / "evaluations").exists() else []
                results["busi"]["test_summary"] = runfs.read_json(evals[-1]) if evals else None
                print("  test:", json.dumps(results["busi"]["test_summary"])[:400], flush=True)

    results["failures"] = failures
    (out / "gpu_check.json").write_text(json.dumps(results, indent=1, default=str))
    print("\n" + ("FAILED:\n  " + "\n  ".join(failures) if failures else f"gpu_check: every verb ran its networks on {DEVICE}"), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
