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
from medseg.config import Config, DataConfig, config_from_dict, read_yaml
from medseg.data import load_data
from medseg.errors import MedsegError
from medseg.infer import predict_probs
from medseg.metrics import case_metrics, summarize
from medseg.models import create_model

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


def load_validation(run_dir: Path, cfg: Config, progress: bool = False):
    """The run's validation cases (split.json) reloaded from its data, as `fit.SplitArrays`."""
    from medseg.fit import stack_part

    split = runfs.read_json(run_dir / runfs.SPLIT)
    val = stack_part(load_data(cfg.data, with_masks=True, progress=progress), split["val"])
    if len(val.images) == 0:
        raise MedsegError(f"{run_dir / runfs.SPLIT}: none of the validation cases is in the data any more")
    return val


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
) -> dict:
    """Score the best checkpoint on the run's validation cases (or on another dataset).

    Args:
        run_dir: the run folder.
        data_config: YAML with a `data:` section (or a bare data section) to evaluate on instead;
            results then go to runs/NAME/evaluations/<stem>/, never over the run's own metrics.
        sweep: also sweep the threshold 0.05..0.95 and save the curve.
        console: where to print.
        val / loaded: arrays already in memory (fit passes them to skip reloading).
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
    elif val is None:
        val = load_validation(run_dir, cfg, progress=progress)
    net, info = load_network(run_dir, cfg, state["in_channels"])
    probs = predict_probs(net, val.images, cfg.eval.batch_size, state["precision"], "cpu", cfg.train.channels_last)
    result = score(probs, val.masks, val.meta, contract, surface=True)
    summary = dict(result["summary"])
    summary["best_epoch"] = info["epoch"]
    summary["checkpoint"] = runfs.BEST_CKPT
    summary["evaluated_on"] = str(data_config) if data_config else "validation split"
    soft = contract.model_copy(update={"kind": "soft"})
    summary["soft_dice"] = summarize([case_metrics(p, m, soft, surface=False) for p, m in zip(probs, val.masks)], soft)["dice"]
    if result["volume_summary"] is not None:
        summary["per_volume"] = {**result["volume_summary"], "rows": result["volume_rows"]}
    if data_config is None:
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
    t = Table(title=title, caption=f"metric contract: {s.get('contract_text', '')}")
    t.add_column("metric")
    t.add_column("value", justify="right")
    keys = [
        "dice", "iou", "precision", "recall", "dice_nonempty", "soft_dice", "fp_rate_empty", "lesion_recall",
        "lesion_precision", "hd95", "asd", "n_cases", "n_empty_truth", "n_empty_empty",
    ]
    for k in keys:
        if k in s and s[k] is not None:
            v = s[k]
            t.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
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
