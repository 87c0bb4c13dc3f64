"""nnU-Net v2 (2d configuration) as a peer method of the recipe benchmark, run on CPU.

Steps, all under OUT: convert PREP to nnU-Net raw format (Dataset501_BUSI256: train + val as
training cases, test as imagesTs, PNG via NaturalImage2DIO), plan and preprocess (2d only),
write splits_final.json with one fold (train = our train, val = our val, so nnU-Net sees the
same data as the other methods), train fold 0 with a trainer from bench/recipe/nnunet_trainer.py,
predict the test images with nnU-Net's default test-time mirroring, and write OUT/pred/*.png
(0/255) plus OUT/stats.json.

Trainers (--trainer):
    short   nnUNetTrainer_MedsegShort: stock nnU-Net with a short epoch (--iters-per-epoch,
            --val-iters) and num_epochs derived from --budget-s, so its poly LR schedule ends
            within the budget. The initial estimate assumes --sec-per-iter (conservative 20 s per
            training iteration, a validation iteration counted as half); then, unless
            --no-adapt, the trainer re-derives num_epochs from the measured time of epoch 0.
    1epoch  nnUNetTrainer_Medseg1epoch: stock nnUNetTrainer_1epoch (250 iterations), the
            long-budget point; --budget-s is only recorded.

nnU-Net's own executables run from --venv through subprocess; this script needs only the
standard library, numpy and Pillow.

    python bench/recipe/nnunet_runner.py /work/cache/busi256 OUT --budget-s 900 --seed 0
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

try:
    from bench.recipe.common import TCMALLOC, load_split, log, open_out, read_mask, write_pred, write_stats
except ImportError:  # run as a script: bench/recipe is sys.path[0]
    from common import TCMALLOC, load_split, log, open_out, read_mask, write_pred, write_stats

DATASET_ID = 501
DATASET = "Dataset501_BUSI256"
TRAINERS = {"short": "nnUNetTrainer_MedsegShort", "1epoch": "nnUNetTrainer_Medseg1epoch"}
VAL_ITER_COST = 0.5  # a validation iteration (forward only) as a fraction of a training one
# progress-bar and per-case chatter kept in the log files but not echoed
QUIET = ("it/s]", "s/it]", "perform_everything_on_device", "sending off prediction", "Predicting ")


def convert(prep: Path, split: dict, raw: Path) -> None:
    """Write nnU-Net raw format: imagesTr/{case}_0000.png, labelsTr/{case}.png (0/1), imagesTs, dataset.json."""
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (raw / sub).mkdir(parents=True)
    train_cases = split["train"] + split["val"]
    for case in train_cases:
        shutil.copyfile(prep / "images" / f"{case}.png", raw / "imagesTr" / f"{case}_0000.png")
        Image.fromarray(read_mask(prep / "masks" / f"{case}.png").astype(np.uint8)).save(raw / "labelsTr" / f"{case}.png")
    for case in split["test"]:
        shutil.copyfile(prep / "images" / f"{case}.png", raw / "imagesTs" / f"{case}_0000.png")
    dataset_json = {
        "channel_names": {"0": "ultrasound"},  # not "CT": nnU-Net then z-scores each image
        "labels": {"background": 0, "lesion": 1},
        "numTraining": len(train_cases),
        "file_ending": ".png",
        "overwrite_image_reader_writer": "NaturalImage2DIO",
        "name": DATASET,
        "description": "BUSI at 256x256 (bench/recipe/prepare.py); training cases = train + val, test in imagesTs",
    }
    (raw / "dataset.json").write_text(json.dumps(dataset_json, indent=1))


def run(cmd: list[str], env: dict, log_path: Path, tag: str) -> float:
    """Run one nnU-Net command, echo its output with a tag and keep it in log_path; return seconds."""
    log(f"{tag}: {' '.join(cmd)}")
    t = time.perf_counter()
    with open(log_path, "w") as logf:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in proc.stdout:
            logf.write(line)
            line = line.rstrip()
            if line and not any(noise in line for noise in QUIET):
                print(f"  [{tag}] {line}", flush=True)
        rc = proc.wait()
    if rc != 0:
        sys.exit(f"error: {tag} failed with exit code {rc}; see {log_path}")
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("prep", type=Path, help="prepared folder with images/, masks/, split.json")
    ap.add_argument("out", type=Path, help="output folder (pred/, stats.json, nnU-Net folders); must not exist")
    ap.add_argument("--budget-s", type=float, default=900.0, help="seconds for nnU-Net's training loop (incl. its per-epoch validation)")
    ap.add_argument("--seed", type=int, default=0, help="recorded only: nnU-Net's training is not seeded (nondeterministic augmenter)")
    ap.add_argument("--venv", type=Path, default=Path("/work/cache/nnunet-venv"), help="venv with nnunetv2 installed")
    ap.add_argument("--trainer", choices=sorted(TRAINERS), default="short", help="short: budgeted epochs; 1epoch: stock 250 iterations")
    ap.add_argument("--sec-per-iter", type=float, default=20.0, help="assumed seconds per training iteration for the initial epoch count")
    ap.add_argument("--iters-per-epoch", type=int, default=5, help="short: training iterations per epoch")
    ap.add_argument("--val-iters", type=int, default=1, help="short: validation iterations per epoch (nnU-Net needs >= 1)")
    ap.add_argument("--epochs", type=int, default=None, help="short: fixed number of epochs (implies --no-adapt)")
    ap.add_argument("--no-adapt", action="store_true", help="short: keep the initial epoch count instead of re-deriving it after epoch 0")
    ap.add_argument("--n-proc-da", type=int, default=2, help="nnUNet_n_proc_DA: augmentation worker processes (0 = in the main process)")
    ap.add_argument("--tcmalloc", action="store_true", help="preload tcmalloc (the CPU fast path medseg uses) into nnU-Net's processes")
    ap.add_argument("--final-val", action="store_true", help="also run nnU-Net's post-training prediction of the val cases")
    ap.add_argument("--force", action="store_true", help="replace an existing OUT")
    args = ap.parse_args()
    wall0 = time.perf_counter()

    bin_dir = args.venv / "bin"
    if not (bin_dir / "nnUNetv2_train").is_file():
        sys.exit(f"error: {bin_dir / 'nnUNetv2_train'} not found; pass --venv with nnunetv2 installed")
    if args.iters_per_epoch < 1 or args.val_iters < 1:
        sys.exit("error: --iters-per-epoch and --val-iters must be >= 1")
    split = load_split(args.prep)
    out = open_out(args.out.resolve(), args.force)
    raw, pre, res, ext = (out / n for n in ("nnunet_raw", "nnunet_preprocessed", "nnunet_results", "nnunet_ext"))
    for folder in (pre, res, ext):
        folder.mkdir()
    (out / "logs").mkdir()
    # nnU-Net finds trainers by scanning its package and, since 2.6, the nnUNet_extTrainer folders;
    # a private folder holding only this file keeps the venv untouched.
    shutil.copyfile(Path(__file__).with_name("nnunet_trainer.py"), ext / "nnunet_trainer.py")
    trainer = TRAINERS[args.trainer]

    if args.trainer == "short":
        epoch_cost = args.sec_per_iter * (args.iters_per_epoch + VAL_ITER_COST * args.val_iters)
        epochs = args.epochs or max(1, math.floor(args.budget_s / epoch_cost))
        adapt = args.epochs is None and not args.no_adapt
    else:
        epochs, adapt = 1, False
    env = dict(os.environ,
               nnUNet_raw=str(raw), nnUNet_preprocessed=str(pre), nnUNet_results=str(res), nnUNet_extTrainer=str(ext),
               nnUNet_n_proc_DA=str(args.n_proc_da),
               nnUNet_compile="f",  # nnU-Net disables compile on CPU anyway; say so explicitly
               MEDSEG_BENCH_NNUNET_ITERS=str(args.iters_per_epoch), MEDSEG_BENCH_NNUNET_VAL_ITERS=str(args.val_iters),
               MEDSEG_BENCH_NNUNET_EPOCHS=str(epochs), MEDSEG_BENCH_NNUNET_BUDGET_S=str(args.budget_s if adapt else 0),
               MEDSEG_BENCH_NNUNET_FINAL_VAL="1" if args.final_val else "0")
    if args.tcmalloc:
        if not Path(TCMALLOC).is_file():
            sys.exit(f"error: --tcmalloc: {TCMALLOC} not found (Debian: apt install libtcmalloc-minimal4)")
        env["LD_PRELOAD"] = TCMALLOC
    phase = {}

    t = time.perf_counter()
    convert(args.prep, split, raw / DATASET)
    phase["convert_seconds"] = time.perf_counter() - t
    log(f"converted {len(split['train']) + len(split['val'])} training + {len(split['test'])} test cases to {raw / DATASET}")

    phase["plan_preprocess_seconds"] = run(
        [str(bin_dir / "nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", "2d", "--verify_dataset_integrity",
         "-np", "2", "-npfp", "2"], env, out / "logs" / "plan_preprocess.log", "plan")
    plans = json.loads((pre / DATASET / "nnUNetPlans.json").read_text())
    plan_2d = plans["configurations"]["2d"]
    schedule = (f"{epochs} epochs x ({args.iters_per_epoch} + {args.val_iters} val) iterations"
                + (", epochs re-derived after epoch 0" if adapt else "")) if args.trainer == "short" else "1 epoch x 250 iterations"
    log(f"2d plan: batch {plan_2d['batch_size']}, patch {plan_2d['patch_size']}; {trainer}: {schedule}")

    splits = [{"train": sorted(split["train"]), "val": sorted(split["val"])}]
    (pre / DATASET / "splits_final.json").write_text(json.dumps(splits, indent=1))

    phase["train_process_seconds"] = run(
        [str(bin_dir / "nnUNetv2_train"), str(DATASET_ID), "2d", "0", "-tr", trainer, "-device", "cpu"],
        env, out / "logs" / "train.log", "train")
    fold = res / DATASET / f"{trainer}__nnUNetPlans__2d" / "fold_0"
    timing = json.loads((fold / "medseg_timing.json").read_text())

    pred_raw = out / "nnunet_pred"
    phase["predict_seconds"] = run(
        [str(bin_dir / "nnUNetv2_predict"), "-i", str(raw / DATASET / "imagesTs"), "-o", str(pred_raw),
         "-d", str(DATASET_ID), "-c", "2d", "-f", "0", "-tr", trainer, "-chk", "checkpoint_final.pth",
         "-device", "cpu", "-npp", "1", "-nps", "1"], env, out / "logs" / "predict.log", "predict")
    for case in split["test"]:
        labels = np.asarray(Image.open(pred_raw / f"{case}.png"))
        if labels.shape != (256, 256):
            sys.exit(f"error: {pred_raw / (case + '.png')} has shape {labels.shape}, expected (256, 256)")
        write_pred(out, case, labels > 0)
    log(f"wrote {len(split['test'])} predictions to {out / 'pred'}")

    batch = timing["batch_size"]
    stats = {
        "method": f"nnunet_2d_{args.trainer}",
        "budget_s": args.budget_s,
        "train_seconds": timing["train_loop_seconds"],
        "wall_seconds": time.perf_counter() - wall0,
        "images_seen": timing["train_iterations"] * batch,
        "epochs": timing["epochs_run"],
        "seed": args.seed,
        "trainer": trainer,
        "plan_batch_size": plan_2d["batch_size"],
        "plan_patch_size": plan_2d["patch_size"],
        "num_iterations_per_epoch": timing["num_iterations_per_epoch"],
        "num_val_iterations_per_epoch": timing["num_val_iterations_per_epoch"],
        "num_epochs": timing["num_epochs"],
        "train_iterations": timing["train_iterations"],
        "val_iterations": timing["val_iterations"],
        "val_images_seen": timing["val_iterations"] * batch,
        "sec_per_train_iter": timing["sec_per_train_step_mean"],
        "sec_per_train_iter_after_first": timing["sec_per_train_step_mean_after_first"],
        "epoch_seconds": timing["epoch_seconds"],
        "epoch_lr": timing["epoch_lr"],
        "budget_choice": (
            f"initial num_epochs = floor(budget {args.budget_s:.0f}s / ({args.sec_per_iter}s x ({args.iters_per_epoch} + "
            f"{VAL_ITER_COST} x {args.val_iters}))) = {epochs}"
            + ("; re-derived after epoch 0 as 1 + floor(remaining / epoch-0 seconds), shrunk later only if an overrun shows"
               if adapt else "; fixed")
            if args.trainer == "short" else "stock nnUNetTrainer_1epoch: 250 training + 50 validation iterations; budget not applied"),
        "budget_adapted": timing["adapted_after_epoch0"],
        "budget_shrunk_after_epochs": timing["shrunk_after_epoch"],
        "checkpoint": "checkpoint_final.pth",
        "tta": "nnU-Net default mirroring",
        "final_validation": args.final_val,
        "n_proc_da": args.n_proc_da,
        "tcmalloc": args.tcmalloc,
        "torch_threads": timing["torch_threads"],
        **phase,
    }
    write_stats(out, stats)
    log(f"done: {stats['train_iterations']} iterations x batch {batch} in {stats['train_seconds']:.0f}s "
        f"({stats['train_seconds'] / max(1, stats['train_iterations']):.1f}s/iteration incl. validation); stats in {out / 'stats.json'}")


if __name__ == "__main__":
    main()
