"""`medseg evaluate`: recompute metrics from a run's best checkpoint (and check them)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from medseg import run as runfs
from medseg.config import Config, config_from_dict, read_yaml
from medseg.data import load_data
from medseg.errors import MedsegError
from medseg.infer import run_probs
from medseg.metrics import case_metrics, summarize
from medseg.models import create_model
from medseg.postprocess import load_postprocess

MATCH_TOLERANCE = 1e-4


def load_run_config(run_dir: Path) -> Config:
    return config_from_dict(read_yaml(run_dir / runfs.CONFIG), run_dir)


def load_network(run_dir: Path, cfg: Config, in_channels: int, which: str = runfs.BEST_CKPT) -> tuple[torch.nn.Module, dict]:
    """Rebuild the network and load a checkpoint's weights; returns (net, checkpoint info)."""
    path = run_dir / which
    if not path.is_file():
        raise MedsegError(f"{path}: no checkpoint (did training finish an epoch?)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001
        raise MedsegError(f"{path}: unreadable checkpoint ({type(e).__name__})") from None
    net = create_model(cfg.model.name, in_channels, cfg.model.channels, cfg.model.dropout, cfg.model.res_units)
    state = {k[len("net."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    net.load_state_dict(state)
    if cfg.train.channels_last:
        net = net.to(memory_format=torch.channels_last)
    net.eval()
    return net, {"epoch": int(ckpt.get("epoch", -1)), "global_step": int(ckpt.get("global_step", -1))}


def load_validation(run_dir: Path, cfg: Config, progress: bool = False, part: str = "val", loaded=None):
    """The run's validation (or test) cases (split.json) reloaded from its data, as `fit.SplitArrays`."""
    from medseg.fit import stack_part

    split = runfs.read_json(run_dir / runfs.SPLIT)
    if not split.get(part):
        raise MedsegError(f"{run_dir / runfs.SPLIT}: the run has no '{part}' cases")
    loaded = loaded if loaded is not None else load_data(cfg.data, with_masks=True, progress=progress)
    val = stack_part(loaded, split[part])
    if len(val.images) == 0:
        raise MedsegError(f"{run_dir / runfs.SPLIT}: none of the '{part}' cases is in the data any more")
    return val


def postprocessed_summary(probs: np.ndarray, masks: np.ndarray, meta: list[dict], contract, pp) -> tuple[dict, list[dict]]:
    """Summary and per-case rows of the post-processed masks (see medseg.postprocess), under the contract.

    Post-processing works per case: per image, or per stacked volume for a per-volume contract.
    """
    from medseg.metrics import sweep_cases

    hard_contract = contract.model_copy(update={"kind": "hard", "threshold": 0.5})
    cases_p, cases_m = sweep_cases(probs, masks, meta, contract)
    rows = []
    for i, (p, m) in enumerate(zip(cases_p, cases_m)):
        rows.append({"case_index": i, **case_metrics(pp.apply(p).astype(np.float32), m, hard_contract, surface=True)})
    summary = summarize(rows, hard_contract if contract.reduction != "per_volume" else hard_contract.model_copy(update={"reduction": "per_image"}))
    summary["rule"] = pp.to_json()
    summary["rule_text"] = pp.describe()
    summary["cases"] = "volumes" if len(cases_p) != len(probs) else "images"
    return summary, rows


def score(probs: np.ndarray, masks: np.ndarray, meta: list[dict], contract, surface: bool = True) -> dict:
    """Per-image rows, per-volume rows (for volume data) and the summary under the contract."""
    from medseg.engine import volume_metrics

    rows = []
    for p, m, info in zip(probs, masks, meta):
        r = case_metrics(p, m, contract, spacing=tuple(info["spacing_input"]) if info.get("spacing_input") else None, surface=surface)
        rows.append({"case": info["sample_id"], "case_id": info.get("case_id"), **r})
    image_contract = contract.model_copy(update={"reduction": "per_image"}) if contract.reduction == "per_volume" else contract
    out = {"image_rows": rows, "summary": summarize(rows, image_contract), "volume_rows": [], "volume_summary": None}
    if meta and meta[0].get("volume") is not None:
        vol = volume_metrics(probs, masks, meta, contract, surface=surface)
        out["volume_rows"], out["volume_summary"] = vol["rows"], vol["summary"]
        if contract.reduction == "per_volume":
            out["summary"] = vol["summary"]
    return out


def evaluate_run(
    run_dir: Path,
    data_config: Optional[Path] = None,
    sweep: bool = False,
    console: Optional[Console] = None,
    val=None,
    loaded=None,
    progress: bool = True,
    part: str = "val",
) -> dict:
    """Score the best checkpoint on the run's validation cases (or on another dataset).

    Args:
        run_dir: the run folder.
        data_config: YAML with a `data:` section (or a bare data section) to evaluate on instead;
            results then go to runs/NAME/evaluations/<stem>/, never over the run's own metrics.
        sweep: also sweep the threshold 0.05..0.95 and save the curve.
        console: where to print.
        val / loaded: arrays already in memory (fit passes them to skip reloading).
        part: which cases of the run's split to score: 'val' (the default) or 'test'; test
            results go to runs/NAME/evaluations/test[-N]/.
    """
    from medseg.fit import stack_part

    console = console or Console(stderr=True)
    run_dir = runfs.open_run(run_dir)
    cfg = load_run_config(run_dir)
    state = runfs.read_json(run_dir / runfs.STATE)
    contract = cfg.eval.contract
    out_dir = run_dir / "metrics"
    if data_config is not None:
        raw = read_yaml(Path(data_config))
        data_raw = raw.get("data", raw)
        merged = cfg.model_dump(mode="json")
        merged["data"] = {**merged["data"], **data_raw}
        other = config_from_dict(merged, Path(data_config).resolve().parent)
        loaded = load_data(other.data, with_masks=True, progress=progress)
        if loaded.in_channels != state["in_channels"]:
            raise MedsegError(f"{data_config}: data has {loaded.in_channels} channels, the model expects {state['in_channels']}")
        val = stack_part(loaded, sorted({s.case_id for s in loaded.samples}))
        out_dir = runfs.create_run(run_dir / "evaluations", Path(data_config).stem)
    elif part != "val":
        val = load_validation(run_dir, cfg, progress=progress, part=part, loaded=loaded)
        out_dir = runfs.create_run(run_dir / "evaluations", part)
    elif val is None:
        val = load_validation(run_dir, cfg, progress=progress)
    net, info = load_network(run_dir, cfg, state["in_channels"])
    probs = run_probs(net, val.images, cfg, state)
    result = score(probs, val.masks, val.meta, contract, surface=True)
    summary = dict(result["summary"])
    summary["best_epoch"] = info["epoch"]
    summary["checkpoint"] = runfs.BEST_CKPT
    summary["evaluated_on"] = str(data_config) if data_config else ("validation split" if part == "val" else f"{part} split")
    soft = contract.model_copy(update={"kind": "soft"})
    summary["soft_dice"] = summarize([case_metrics(p, m, soft, surface=False) for p, m in zip(probs, val.masks)], soft)["dice"]
    if result["volume_summary"] is not None:
        summary["per_volume"] = {**result["volume_summary"], "rows": result["volume_rows"]}
    pp = load_postprocess(run_dir)
    if pp is not None:
        # the deployed pipeline (tuned on validation); the raw numbers above stay the contract's
        pp_probs = run_probs(net, val.images, cfg, state, tta=True) if pp.tta else probs
        summary["postprocessed"], pp_rows = postprocessed_summary(pp_probs, val.masks, val.meta, contract, pp)
        runfs.write_csv(out_dir / "cases_postprocessed.csv", pp_rows)
    if data_config is None and part == "val":
        epochs = runfs.read_csv(run_dir / runfs.EPOCHS_CSV)
        row = next((r for r in epochs if int(r["epoch"]) == info["epoch"]), None)
        if row is not None and "val_dice" in row:
            reported = float(row["val_dice"])
            diff = abs(reported - summary["dice"]) if not (math.isnan(reported) and math.isnan(summary["dice"])) else 0.0
            summary["training_reported"] = {"epoch": info["epoch"], "dice": reported, "abs_diff": diff, "tolerance": MATCH_TOLERANCE, "match": bool(diff <= MATCH_TOLERANCE)}
    runfs.write_csv(out_dir / "cases.csv", result["image_rows"])
    if result["volume_rows"]:
        runfs.write_csv(out_dir / "volumes.csv", result["volume_rows"])
    if sweep:
        from medseg.metrics import sweep_cases, threshold_sweep

        sw = threshold_sweep(*sweep_cases(probs, val.masks, val.meta, contract), contract)
        runfs.write_json(out_dir / "threshold_sweep.json", sw)
        runfs.write_csv(out_dir / "threshold_sweep.csv", sw["rows"])
        summary["threshold_sweep"] = {k: v for k, v in sw.items() if k != "rows"}
        _print_sweep(console, sw, contract)
    runfs.write_json(out_dir / "summary.json", summary)
    print_summary(console, summary, title=f"{run_dir.name}: best epoch {info['epoch']}")
    return summary


def print_summary(console: Console, s: dict, title: str = "") -> None:
    pp = s.get("postprocessed")
    caption = f"metric contract: {s.get('contract_text', '')}"
    if pp:
        caption += f"\npost-processed: {pp['rule_text']} (tuned on validation: medseg tune)"
    t = Table(title=title, caption=caption)
    t.add_column("metric")
    t.add_column("raw" if pp else "value", justify="right")
    if pp:
        t.add_column("post-processed", justify="right")
    keys = [
        "dice", "iou", "precision", "recall", "dice_nonempty", "soft_dice", "fp_rate_empty", "lesion_recall",
        "lesion_precision", "hd95", "asd", "n_cases", "n_empty_truth", "n_empty_empty",
    ]
    show = lambda v: "" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))  # noqa: E731
    for k in keys:
        if k in s and s[k] is not None:
            t.add_row(k, show(s[k]), *([show(pp.get(k))] if pp else []))
    if s.get("per_volume"):
        t.add_row("dice (per volume)", f"{s['per_volume']['dice']:.4f}")
    tr = s.get("training_reported")
    if tr:
        ok = "[green]matches" if tr["match"] else "[red]DIFFERS"
        t.add_row("training reported dice", f"{tr['dice']:.4f} ({ok} to {tr['abs_diff']:.1e})")
    console.print(t)


def _print_sweep(console: Console, sw: dict, contract) -> None:
    t = Table(title="threshold sweep", caption=f"metric contract: {contract.describe()}")
    for c in ("threshold", "dice", "precision", "recall", "fp_rate_empty"):
        t.add_column(c, justify="right")
    for r in sw["rows"]:
        t.add_row(*(f"{r.get(c, float('nan')):.3f}" for c in ("threshold", "dice", "precision", "recall", "fp_rate_empty")))
    console.print(t)
    console.print(f"best threshold {sw['best_threshold']:.2f} → dice {sw['best_value']:.4f} (in use: {contract.threshold:.2f})")
    if sw.get("flat"):
        console.print(f"[bold red]WARNING: {sw.get('warning')}")
