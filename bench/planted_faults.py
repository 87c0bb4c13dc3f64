"""Planted faults: train runs that each carry one deliberate fault, and check `medseg doctor` ranks it first.

    python bench/planted_faults.py /work/shared/data/busi --out /tmp/planted [--epochs 30] [--size 256]

Each fault is planted as close to real life as a run allows: a config value (LR 1e-7, a warm-up
of 90% of the run, Tversky weights favouring precision, a zero positive share, a soft metric
contract, too few epochs, too small an input), a derived copy of the data (validation images
copied into training, intensities shifted between the splits), a patch below the loader
(masks reaching the loss as 0/255; a focal loss that overflows to inf, as fp16 without
clamping does), or, for one fault, an edit of a finished run's logs (a train-validation gap).
The test suite (tests/doctor/test_planted.py) runs the same faults on tiny synthetic data.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@dataclass
class Fault:
    """One planted fault.

    Attributes:
        name: short name.
        expected: id of the finding the doctor should rank first ("a|b": either names the cause).
        configure: edits the config dict in place (gets the base config).
        prepare: builds a derived data folder from (source root, destination) and returns its root.
        patch: a context manager active while the run trains (a fault below the loader).
        edit: rewrites files of the finished run folder (the fault is simulated, not trained).
        simulated: part of the evidence is written rather than produced by training.
        description: what is planted.
    """

    name: str
    expected: str
    description: str
    configure: Callable[[dict], None] = lambda cfg: None
    prepare: Optional[Callable[[Path, Path], Path]] = None
    patch: Optional[Callable[[], contextlib.AbstractContextManager]] = None
    edit: Optional[Callable[[Path], None]] = None
    simulated: bool = False


# ---------------------------------------------------------------------------------------
# Data folders


def _read(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.array(im)


def _write(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(arr).save(path)


def _pairs(root: Path) -> list[tuple[str, Path, Path]]:
    """(stem, image, mask) for every image with a mask of the same stem."""
    masks = {p.stem: p for p in (root / "masks").iterdir() if p.is_file()}
    return [(p.stem, p, masks[p.stem]) for p in sorted((root / "images").iterdir()) if p.is_file() and p.stem in masks]


CASES = "cases.csv"
GROUP_COLUMN = "patient"


def read_groups(root: Path) -> Optional[dict[str, str]]:
    """{image stem: patient} from root/cases.csv (BUSI split v2's pseudo-patients), or None when there is none."""
    path = Path(root) / CASES
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or GROUP_COLUMN not in rows[0]:
        return None
    return {r["case"]: r[GROUP_COLUMN] for r in rows}


def derive_folder(
    src: Path,
    dst: Path,
    image_fn: Callable[[str, np.ndarray], np.ndarray] = lambda stem, a: a,
    copies: Callable[[str], list[str]] = lambda stem: [stem],
    mask_fn: Callable[[np.ndarray], np.ndarray] = lambda m: m,
    group_fn: Callable[[str, str], str] = lambda out, patient: patient,
) -> Path:
    """Write dst/images + dst/masks as PNG from src, transforming images and masks and writing extra copies.

    When src has a cases.csv (patient groups), dst gets one too, so the derived run's split is
    grouped by patient as the healthy run's is.

    Args:
        src / dst: data roots (images/ + masks/).
        image_fn: (stem, image array) -> image array to write.
        copies: stem -> the stems to write this pair under (the first is the original).
        mask_fn: mask array -> mask array to write.
        group_fn: (written stem, source patient) -> the patient it is filed under.
    """
    for sub in ("images", "masks"):
        (dst / sub).mkdir(parents=True, exist_ok=True)
    groups = read_groups(src)
    rows = []
    for stem, ipath, mpath in _pairs(src):
        img, mask = _read(ipath), _read(mpath)
        for out in copies(stem):
            _write(dst / "images" / f"{out}.png", image_fn(stem, img))
            _write(dst / "masks" / f"{out}.png", mask_fn(mask))
            if groups is not None:
                rows.append({"case": out, GROUP_COLUMN: group_fn(out, groups[stem])})
    if groups is not None:
        with open(dst / CASES, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["case", GROUP_COLUMN])
            w.writeheader()
            w.writerows(rows)
    return dst


def duplicated_into_train(src: Path, dst: Path) -> Path:
    """Every third image also saved under a second name: the split puts many twins on both sides.

    With patient groups the copy is filed under a patient of its own (a duplicate exported
    under another patient id, the way near-copies reach a dataset), so a grouped split can put
    the twins on opposite sides.
    """
    stems = [s for s, _, _ in _pairs(src)]
    twin = set(stems[::3])
    return derive_folder(src, dst, copies=lambda s: [s, f"copy_{s}"] if s in twin else [s],
                         group_fn=lambda out, patient: f"copy_{patient}" if out.startswith("copy_") else patient)


def masks_0_255(src: Path, dst: Path) -> Path:
    """Masks re-saved with 255 for foreground (what most image tools write)."""
    return derive_folder(src, dst, mask_fn=lambda m: np.where(m > 0, 255, 0).astype(np.uint8))


def shifted_val(src: Path, dst: Path) -> Path:
    """Validation images (every fourth case, fixed in split_file.json) darkened to half their intensity.

    With patient groups the cases are patients: every fourth patient validates, all its images darkened.
    """
    stems = [s for s, _, _ in _pairs(src)]
    groups = read_groups(src)
    case_of = (lambda s: groups[s]) if groups is not None else (lambda s: s)
    cases = sorted({case_of(s) for s in stems})
    val = set(cases[1::4])
    derive_folder(src, dst, image_fn=lambda s, a: (a.astype(np.float32) * 0.5).astype(a.dtype) if case_of(s) in val else a)
    (dst / "split_file.json").write_text(json.dumps({"train": [c for c in cases if c not in val], "val": sorted(val)}))
    return dst


# ---------------------------------------------------------------------------------------
# Patches below the loader


@contextlib.contextmanager
def masks_as_stored() -> Iterator[None]:
    """The training dataset hands the loss 0/255 masks, as stored, instead of the loader's 0/1 (a pipeline bug)."""
    from medseg.data.dataset import SegDataset

    original = SegDataset.__getitem__

    def getitem(self, key):
        x, y, i = original(self, key)
        return x, y * 255.0, i

    SegDataset.__getitem__ = getitem
    try:
        yield
    finally:
        SegDataset.__getitem__ = original


@contextlib.contextmanager
def focal_overflow(after_calls: int = 6) -> Iterator[None]:
    """From its n-th call on, the focal term's value is +inf (fp16 overflow of an unclamped power).

    The gradient stays that of the real loss, as when only the logged value overflows; the run
    keeps training, and the epochs log records the non-finite steps and the term.
    """
    from medseg.losses.focal import FocalLoss

    original = FocalLoss.forward
    calls = {"n": 0}

    def forward(self, logits, target):
        value = original(self, logits, target)
        calls["n"] += 1
        return value + float("inf") if calls["n"] > after_calls else value

    FocalLoss.forward = forward
    try:
        yield
    finally:
        FocalLoss.forward = original


# ---------------------------------------------------------------------------------------
# Edits of finished runs


def as_fp16(run_dir: Path) -> None:
    """Record the run as trained in float16 mixed precision (what the overflow fault models on a CPU)."""
    from medseg import runfolder as runfs

    state = runfs.read_json(run_dir / runfs.STATE)
    state["precision"] = "16-mixed"
    runfs.write_json(run_dir / runfs.STATE, state)


def growing_gap(run_dir: Path) -> None:
    """From a third of the run on, validation loss climbs and Dice sinks while training loss keeps falling."""
    from medseg import runfolder as runfs

    rows = runfs.read_csv(run_dir / runfs.EPOCHS_CSV)
    start = max(1, len(rows) // 3)
    base_loss, base_dice = rows[start]["val_loss"], rows[start]["val_dice"]
    for i, r in enumerate(rows):
        if i > start:
            r["val_loss"] = base_loss * (1 + 0.12 * (i - start))
            r["val_dice"] = max(0.0, base_dice - 0.02 * (i - start))
        r["train_loss"] = rows[0]["train_loss"] * (1 - 0.6 * i / max(1, len(rows) - 1))
    runfs.write_csv(run_dir / runfs.EPOCHS_CSV, rows)
    summary = runfs.read_json(run_dir / runfs.SUMMARY)
    summary["best_epoch"] = int(rows[start]["epoch"])
    runfs.write_json(run_dir / runfs.SUMMARY, summary)


# ---------------------------------------------------------------------------------------
# The faults


def _set(cfg: dict, dotted: str, value) -> None:
    node = cfg
    parts = dotted.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value


def _few_epochs(cfg: dict) -> None:
    epochs = max(2, cfg["train"]["epochs"] // 8)
    cfg["train"]["epochs"] = epochs
    cfg["schedule"]["warmup_epochs"] = round(0.1 * epochs, 2)  # a proportionate warm-up: only the budget is wrong


def _tversky_precision(cfg: dict) -> None:
    cfg["loss"] = {"tversky": {"weight": 1.0, "fp_weight": 0.9, "fn_weight": 0.1}}
    # twice the epochs: an under-trained network over-segments whatever its loss, which would hide the
    # weights' pull towards under-segmentation that this fault is about
    cfg["train"]["epochs"] *= 2


def _small_input(cfg: dict) -> None:
    h, w = cfg["data"]["input_size"]
    cfg["data"]["input_size"] = [max(16, 16 * (h // 64)), max(16, 16 * (w // 64))]


FAULTS: list[Fault] = [
    Fault("lr_1e-7", "optimisation.lr_too_low", "optim.lr = 1e-7", configure=lambda c: _set(c, "optim.lr", 1e-7)),
    Fault(
        "warmup_90pct", "optimisation.warmup_too_long", "warm-up 90% of the epochs",
        configure=lambda c: _set(c, "schedule.warmup_epochs", round(0.9 * c["train"]["epochs"], 2)),
    ),
    Fault(
        "tversky_precision", "errors.recall_loss_weights|errors.loss_weights_reversed", "Tversky fn_weight 0.1 / fp_weight 0.9, trained twice as long",
        configure=_tversky_precision,
    ),
    Fault(
        "masks_0_255_in_loss", "data.mask_values_in_loss", "masks saved as 0/255 reach the loss unscaled",
        prepare=masks_0_255, patch=masks_as_stored,
    ),
    Fault("val_copied_into_train", "data.duplicates", "every third image saved twice under another name", prepare=duplicated_into_train),
    Fault("sampler_share_0", "sampling.few_positives", "sampler.positive_share = 0.0", configure=lambda c: _set(c, "sampler.positive_share", 0.0)),
    Fault("soft_contract", "metrics.soft_contract", "eval.contract.kind = soft", configure=lambda c: _set(c, "eval.contract.kind", "soft")),
    Fault(
        "fp16_focal_overflow", "optimisation.nonfinite", "focal term overflows to inf (fp16 without clamping)",
        configure=lambda c: _set(c, "loss", {"focal": 1.0, "dice": 1.0}), patch=focal_overflow, edit=as_fp16, simulated=True,
    ),
    Fault("too_few_epochs", "generalisation.budget_too_short", "an eighth of the epochs (at least 2)", configure=_few_epochs),
    Fault("input_too_small", "data.tiny_lesions", "input size a quarter of the base", configure=_small_input),
    Fault(
        "intensity_shift", "data.split_intensity", "validation images at half intensity, no normalisation",
        configure=lambda c: (_set(c, "data.normalize", {"mode": "none"}), _set(c, "split", {"mode": "file", "file": "split_file.json"})),
        prepare=shifted_val,
    ),
    Fault("train_val_gap", "generalisation.growing_gap", "validation loss rising from a third of the run (log edited)", edit=growing_gap, simulated=True),
]


def base_config(data_root: Path, out_dir: Path, input_size: int = 256, epochs: int = 30, batch_size: int = 8,
                channels: Optional[list[int]] = None, lr: float = 1e-3, seed: int = 0) -> dict:
    """A healthy config for the data; each fault changes one thing in it.

    Every key a fault touches is set here, and the automatic plan (where the config has one) is
    off, so nothing but the planted fault differs between a fault's run and the healthy run.
    """
    from medseg.config import Config

    cfg = {
        "name": "healthy",
        "output_dir": str(out_dir),
        "seed": seed,
        "data": {"source": "images", "root": str(data_root), "input_size": [input_size, input_size]},
        "split": {"mode": "holdout", "val_fraction": 0.25},
        "model": {"name": "unet", "channels": channels or [16, 32, 64, 128, 256]},
        "loss": {"bce": 1.0, "dice": 1.0},
        "optim": {"lr": lr},
        "schedule": {"warmup_epochs": round(min(1.0, 0.1 * epochs), 2)},
        "augment": {"preset": "light"},
        "train": {"epochs": epochs, "batch_size": batch_size},
        "track": "none",
    }
    if "plan" in Config.model_fields:
        cfg["plan"] = {"enabled": False}
    if read_groups(data_root) is not None:
        # split by patient (BUSI split v2's pseudo-patients): near-copies of one lesion stay on one side
        cfg["data"].update(cases_csv=str(Path(data_root) / CASES), group_column=GROUP_COLUMN)
    return cfg


def train_run(cfg: dict, patch: Optional[Callable[[], contextlib.AbstractContextManager]] = None) -> Path:
    from medseg.commands.fit import fit
    from medseg.config import config_from_dict

    data_root = Path(cfg["data"]["root"])
    config = config_from_dict(copy.deepcopy(cfg), data_root)
    with patch() if patch else contextlib.nullcontext():
        return fit(config, progress=False, console=_quiet_console())


def _quiet_console():
    import io

    from rich.console import Console

    return Console(file=io.StringIO(), width=120)


def plant(fault: Fault, base: dict, work: Path) -> Path:
    """Train (and edit) the run that carries `fault`; returns its run folder."""
    cfg = copy.deepcopy(base)
    cfg["name"] = fault.name
    if fault.prepare is not None:
        root = fault.prepare(Path(base["data"]["root"]), work / "data" / fault.name)
        cfg["data"]["root"] = str(root)
        if (root / CASES).is_file():
            cfg["data"]["cases_csv"] = str(root / CASES)
    fault.configure(cfg)
    if cfg.get("split", {}).get("file"):
        cfg["split"]["file"] = str(Path(cfg["data"]["root"]) / cfg["split"]["file"])
    run_dir = train_run(cfg, fault.patch)
    if fault.edit is not None:
        fault.edit(run_dir)
    return run_dir


def rank_of(findings: list, expected: str) -> Optional[int]:
    """1-based rank of the first finding with an id `expected` names (None: not found)."""
    return next((i for i, f in enumerate(findings, 1) if f.id in expected.split("|")), None)


def rank_beyond_baseline(finding_ids: list[str], expected: str, baseline: set[str]) -> Optional[int]:
    """Rank of `expected` once findings the unfaulted run also had are set aside.

    Real data can carry a real fault of its own (BUSI's benchmark split has near-duplicate
    images on both sides): the doctor rightly ranks it first on every run, which says nothing
    about whether it found the planted cause.
    """
    wanted = expected.split("|")
    kept = [i for i in finding_ids if i not in baseline or i in wanted]
    return next((k for k, i in enumerate(kept, 1) if i in wanted), None)


def rediagnose(results: list[dict], evaluate: bool = True) -> list[dict]:
    """Diagnose the runs of an earlier results file again (after a doctor change), adding both ranks."""
    from medseg.doctor import diagnose

    out = []
    for r in results:
        findings = diagnose(Path(r["run_dir"]), evaluate=evaluate)
        r = dict(r, findings=[f.id for f in findings], severities=[f.severity for f in findings])
        if r["fault"] != "healthy":
            r["rank"] = rank_of(findings, r["expected"])
            r["top"] = [f.id for f in findings[:3]]
        else:
            r["rank"] = 0 if not any(f.severity == "serious" for f in findings) else None
            r["top"] = [f.id for f in findings[:3]]
        out.append(r)
    return out


def add_baseline_ranks(results: list[dict]) -> None:
    healthy_ids = next((r.get("findings") for r in results if r["fault"] == "healthy"), None) or []
    healthy_sev = next((r.get("severities") for r in results if r["fault"] == "healthy"), None) or []
    baseline = {i for i, s in zip(healthy_ids, healthy_sev) if s in ("serious", "warning")}
    for r in results:
        if r["fault"] != "healthy" and "findings" in r:
            r["rank_beyond_baseline"] = rank_beyond_baseline(r["findings"], r["expected"], baseline)
            r["baseline"] = sorted(baseline)


def run_faults(base: dict, work: Path, names: Optional[list[str]] = None, evaluate: bool = True,
               plant_fn: Callable[[Fault, dict, Path], Path] = plant) -> list[dict]:
    """Plant each fault, diagnose it, and report where the planted cause ranked."""
    from medseg.doctor import diagnose

    results = []
    for fault in FAULTS:
        if names and fault.name not in names:
            continue
        t0, c0 = time.time(), time.process_time()
        run_dir = plant_fn(fault, base, work)
        findings = diagnose(run_dir, evaluate=evaluate)
        results.append({
            "fault": fault.name,
            "expected": fault.expected,
            "rank": rank_of(findings, fault.expected),
            "top": [f.id for f in findings[:3]],
            "findings": [f.id for f in findings], "severities": [f.severity for f in findings],
            "simulated": fault.simulated,
            "run_dir": str(run_dir),
            "seconds": time.time() - t0, "cpu": time.process_time() - c0,
        })
    return results


def healthy(base: dict) -> tuple[Path, list]:
    """The unfaulted run and its findings."""
    from medseg.doctor import diagnose

    run_dir = train_run(base)
    return run_dir, diagnose(run_dir)


def report(results: list[dict]) -> None:
    """Print each fault's rank (plain, and beyond the unfaulted run's own findings) and the totals."""
    add_baseline_ranks(results)
    planted = [r for r in results if r["fault"] != "healthy"]
    print(f"{'fault':24} {'rank':>4} {'rank*':>5}  {'expected':34} top findings")
    for r in results:
        rank = "ok" if r["fault"] == "healthy" and r["rank"] == 0 else ("-" if r["rank"] is None else str(r["rank"]))
        rb = r.get("rank_beyond_baseline")
        print(f"{r['fault']:24} {rank:>4} {'-' if rb is None else rb:>5}  {r['expected']:34} {', '.join(r['top'])}")
    first = sum(r["rank"] == 1 for r in planted)
    print(f"planted cause ranked first in {first} of {len(planted)}")
    if any("rank_beyond_baseline" in r for r in planted):
        base = next((r.get("baseline") for r in planted if r.get("baseline") is not None), [])
        first_b = sum(r.get("rank_beyond_baseline") == 1 for r in planted)
        print(f"rank*: beyond the unfaulted run's own warnings/serious findings ({', '.join(base) or 'none'}): "
              f"first in {first_b} of {len(planted)}")


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", type=Path, help="image folder with images/ and masks/ (e.g. /work/shared/data/busi)")
    ap.add_argument("--out", type=Path, required=True, help="new work folder for derived data and runs")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--size", type=int, default=256, help="input side in pixels (multiple of 16)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--faults", nargs="*", help="only these faults (names)")
    ap.add_argument("--no-eval", action="store_true", help="diagnose from the run files only")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--rediagnose", type=Path, help="diagnose the runs listed in this earlier --json file again (no training)")
    ap.add_argument("--report", action="store_true", help="also write each run's report (it runs the doctor once more)")
    args = ap.parse_args(argv)
    args.out = args.out.resolve()  # derived data folders are written into configs: keep them absolute
    if not args.report:
        import medseg.commands.fit

        # skips the per-run report and its doctor pass
        medseg.commands.fit.report_run = lambda *a, **k: None
    if not args.rediagnose and args.out.exists() and any(args.out.iterdir()):
        ap.error(f"--out {args.out}: exists and is not empty")
    base = base_config(args.data.resolve(), args.out / "runs", args.size, args.epochs, args.batch_size, args.channels, args.lr)
    if args.rediagnose:
        results = rediagnose(json.loads(args.rediagnose.read_text()), evaluate=not args.no_eval)
        report(results)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
        return 0
    results = []
    if not args.faults or "healthy" in args.faults:
        run_dir, findings = healthy(base)
        n_serious = sum(f.severity == "serious" for f in findings)
        results.append({"fault": "healthy", "expected": "no serious finding", "rank": None if n_serious else 0,
                        "top": [f.id for f in findings[:3]], "findings": [f.id for f in findings],
                        "severities": [f.severity for f in findings], "simulated": False, "run_dir": str(run_dir), "seconds": 0.0})
    results += run_faults(base, args.out, [n for n in (args.faults or []) if n != "healthy"] or None, evaluate=not args.no_eval)
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
