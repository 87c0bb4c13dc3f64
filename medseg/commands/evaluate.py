"""`medseg evaluate`: recompute metrics from a run's model checkpoint (and check them against training's)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

from rich.console import Console

from medseg import runfolder as runfs
from medseg.commands.console import print_summary, print_sweep
from medseg.config import config_from_dict, read_yaml
from medseg.data import load_data
from medseg.data.arrays import describe_changes, sample_hashes, stack_part
from medseg.errors import MedsegError
from medseg.inference import run_probs, run_probs_by_case
from medseg.metrics.sweep import SweepCounter
from medseg.metrics.validation import PostprocessedScorer, ValidationScorer

MATCH_TOLERANCE = 1e-4
CHECKPOINTS = runfs.CHECKPOINT_FILES


def other_data_arrays(cfg, data_config: Path, in_channels: int, progress: bool = True):
    """Every case of `--data other.yaml`: its data keys over the run's, read with the run's preprocessing.

    Args:
        cfg: the run's (or experiment's) Config.
        data_config: a YAML with a data: section (or the data keys at its top level).
        in_channels: what the model expects; other data with another channel count is refused.
        progress: show a progress bar while reading.
    """
    raw = read_yaml(Path(data_config))
    data_raw = raw.get("data", raw)
    if not isinstance(data_raw, dict):
        raise MedsegError(f"{data_config}: 'data' must be a mapping of data keys (source, root, ...), got {type(data_raw).__name__}")
    merged = cfg.model_dump(mode="json")
    merged["data"] = {**merged["data"], **data_raw}
    other = config_from_dict(merged, Path(data_config).resolve().parent)
    loaded = load_data(other.data, with_masks=True, progress=progress)
    if loaded.in_channels != in_channels:
        raise MedsegError(f"{data_config}: data has {loaded.in_channels} channels, the model expects {in_channels}")
    return stack_part(loaded, sorted({s.case_id for s in loaded.samples}))


def evaluate_run(
    run_dir: Path,
    data_config: Optional[Path] = None,
    sweep: bool = False,
    console: Optional[Console] = None,
    val=None,
    loaded=None,
    progress: bool = True,
    part: str = "val",
    own: bool = False,
    checkpoint: Optional[str] = None,
) -> dict:
    """Score the run's model (or its best or last checkpoint) on the run's validation cases (or on another dataset).

    Args:
        run_dir: the run folder.
        data_config: YAML with a `data:` section (or a bare data section) to evaluate on instead;
            results then go to runs/NAME/evaluations/<stem>/, never over the run's own metrics.
        sweep: also sweep the threshold 0.05..0.95 and save the curve.
        console: where to print.
        val / loaded: arrays already in memory (fit passes them to skip reloading).
        part: which cases of the run's split to score: 'val' (the default) or 'test'.
        own: write the run's own metrics/ (fit's final evaluation); otherwise results go to
            a new runs/NAME/evaluations/<val|test|data stem>[-N]/ and the run's files stay as they are.
        checkpoint: None: the run's model, the file ``train.checkpoint`` names (what tune, predict and
            export use); 'best' (the monitor's best epoch) or 'last' (the final epoch) to score that file
            instead, its folder name then suffixed '-best' or '-last'. Scoring both on cases outside the
            validation split shows whether picking the best epoch on the validation cases paid. A tuned
            rule is applied to either (it was tuned on the run's model's probabilities).
    """
    if checkpoint is not None and checkpoint not in CHECKPOINTS:
        raise MedsegError(f"evaluate: checkpoint must be one of {', '.join(CHECKPOINTS)}, got '{checkpoint}'")
    console = console or Console(stderr=True)
    run_dir = runfs.open_run(run_dir)
    cfg = runfs.load_run_config(run_dir)
    state = runfs.load_state(run_dir)
    contract = cfg.eval.contract
    deployed = cfg.train.checkpoint
    checkpoint = checkpoint or deployed
    if own and (data_config is not None or part != "val" or checkpoint != deployed or runfs.is_finished(run_dir, state)):
        raise MedsegError(f"{run_dir}: only fit writes a run's own metrics, on its validation cases, before the run finishes")
    if data_config is not None:
        val = other_data_arrays(cfg, data_config, state["in_channels"], progress)
    elif part != "val" or val is None:
        val = runfs.load_split_part(run_dir, cfg, part=part, loaded=loaded, progress=progress)
    net, info = runfs.load_network(run_dir, cfg, state["in_channels"], checkpoint)
    pp = runfs.load_postprocess(run_dir)
    # only now, with the data and the checkpoint known good, is anything written
    if own:
        out_dir = run_dir / runfs.METRICS
    else:
        name = Path(data_config).stem if data_config is not None else part
        out_dir = runfs.create_evaluation(run_dir, name if checkpoint == deployed else f"{name}-{checkpoint}")
    # streamed: one chunk of whole cases (a few batches of images, or a volume) at a time
    scorer = ValidationScorer(contract, surface=True)
    pp_scorer = PostprocessedScorer(contract, pp.apply) if pp is not None else None
    sweeper = SweepCounter(contract) if sweep else None
    for _, images, probs, masks, meta in run_probs_by_case(net, val, cfg, state):
        scorer.add(probs, masks, meta)
        if sweeper is not None:
            sweeper.add_chunk(probs, masks, meta)
        if pp_scorer is not None:
            # the deployed pipeline (tuned on validation); the raw numbers stay the contract's
            if pp.tta:
                del probs  # scored: its TTA probabilities replace it, not sit beside it
                probs = run_probs(net, images, cfg, state, tta=pp.tta)
            pp_scorer.add(probs, masks, meta)
        # dropped before the next chunk is predicted, or two volumes' probabilities are in memory at once
        del probs, images
    scores = scorer.result()
    summary = dict(scores.summary)
    summary.update(runfs.checkpoint_record(info))
    summary["evaluated_on"] = str(data_config) if data_config else ("validation split" if part == "val" else f"{part} split")
    summary["soft_dice"] = scores.soft_dice
    if scores.volume_summary is not None:
        summary["per_volume"] = {**scores.volume_summary, "rows": scores.volume_rows}
    if pp_scorer is not None:
        pp_summary, pp_rows = pp_scorer.result()
        summary["postprocessed"] = {**pp_summary, "rule": pp.to_json(), "rule_text": pp.describe()}
        runfs.write_csv(out_dir / runfs.CASES_PP_NAME, pp_rows)
    if data_config is None and part == "val":
        trained_on = runfs.optional_dict(run_dir / runfs.DATA_HASHES)
        now = sample_hashes(val)
        if trained_on and any(trained_on.get(k) != h for k, h in now.items()):
            summary["data_changed"] = describe_changes({k: trained_on.get(k) for k in now}, now)
        epochs = runfs.read_csv(run_dir / runfs.EPOCHS_CSV)
        row = next((r for r in epochs if int(r["epoch"]) == info["epoch"]), None)
        if row is not None and "val_dice" in row:
            reported = float(row["val_dice"])
            diff = abs(reported - summary["dice"]) if not (math.isnan(reported) and math.isnan(summary["dice"])) else 0.0
            summary["training_reported"] = {"epoch": info["epoch"], "dice": reported, "abs_diff": diff, "tolerance": MATCH_TOLERANCE, "match": bool(diff <= MATCH_TOLERANCE)}
    runfs.write_csv(out_dir / runfs.CASES_NAME, scores.image_rows)
    if scores.volume_rows:
        runfs.write_csv(out_dir / runfs.VOLUMES_NAME, scores.volume_rows)
    if sweep:
        sw = sweeper.result()
        runfs.write_json(out_dir / runfs.SWEEP_NAME, sw)
        runfs.write_csv(out_dir / runfs.SWEEP_CSV_NAME, sw["rows"])
        summary["threshold_sweep"] = {k: v for k, v in sw.items() if k != "rows"}
        print_sweep(console, sw, contract)
    summary["written_to"] = str(out_dir)
    runfs.write_json(out_dir / runfs.SUMMARY_NAME, summary)
    print_summary(console, summary, title=f"{run_dir.name}: {checkpoint} epoch {info['epoch']}")
    return summary
