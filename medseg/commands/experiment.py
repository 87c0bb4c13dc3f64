"""k-fold experiments: `medseg fit CONFIG --folds K`, out-of-fold tuning, fold ensembles.

An experiment is a folder of k ordinary run folders (fold-0 ... fold-K-1), one per fold of the
training cases (patient-grouped, stratified on empty vs non-empty cases; the config's test
cases stay out of every fold), trained one after another from the same planned config. After
each fold, the fold's model predicts the fold's own validation cases, which it never trained
on: the out-of-fold (OOF) predictions, stored for every TTA set the tuning tries. `medseg tune
EXPERIMENT` chooses the post-processing on all OOF predictions, and keeps it only when a
leave-one-fold-out check (choose on k-1 folds, score on the held-out fold) shows a gain whose
bootstrap CI excludes zero: a rule that only fits the cases it was chosen on is not kept.
"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime, timezone
from itertools import groupby
from pathlib import Path
from typing import Optional

import numpy as np
from rich.console import Console
from rich.table import Table

import medseg
from medseg import runfolder as runfs
from medseg.commands.evaluate import other_data_arrays
from medseg.commands.fit import fit
from medseg.commands.console import print_plan, print_tuning
from medseg.config import Config, config_from_dict, dump_config, read_yaml
from medseg.data import load_data
from medseg.data.arrays import stack_part
from medseg.data.folds import make_folds
from medseg.data.split import make_split
from medseg.errors import MedsegError
from medseg.inference import run_prob_sets
from medseg.metrics import sweep_cases
from medseg.metrics.paired import bootstrap_mean_ci
from medseg.metrics.validation import (PostprocessedScorer, ValidationScorer, case_chunks, has_volumes, score_postprocessed,
                                       score_validation)
from medseg.planning import plan_run
from medseg.postprocess import PostProcess, TTARuleSearch, case_dice
from medseg.training import distributed

EXPERIMENT_VERSION = 1


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _fold_config(cfg: Config, experiment: Path, fold: int) -> Config:
    raw = cfg.model_dump(mode="json")
    raw.update(name=f"fold-{fold}", output_dir=str(experiment))
    raw["split"] = {"mode": "file", "file": str(experiment / runfs.SPLITS / f"fold-{fold}.json")}
    raw["plan"] = {**raw["plan"], "enabled": False}  # planned once for the experiment: every fold trains the same recipe
    raw["postprocess"] = {**raw["postprocess"], "tune": False}  # tuned on the out-of-fold predictions instead
    return config_from_dict(raw, experiment)


def _write_doc(experiment: Path, doc: dict) -> None:
    runfs.write_json(experiment / runfs.EXPERIMENT, doc)


def fit_experiment(cfg: Config, folds: int, console: Optional[Console] = None, progress: bool = True) -> Path:
    """Create an experiment folder and train its k folds; returns the experiment folder.

    Args:
        cfg: the validated config (its test cases stay out of the folds).
        folds: k.
        console: where to print.
        progress: show progress bars.
    """
    console = console or Console(stderr=True)
    runfs.check_output_dir(cfg.output_dir)
    _one_process(cfg)
    loaded = load_data(cfg.data, with_masks=True, progress=progress)
    base = make_split([s.case_id for s in loaded.samples], cfg.split, cfg.seed)
    pool = set(base["train"]) | set(base["val"])
    samples = [s for s in loaded.samples if s.case_id in pool]
    fold_cases = make_folds([s.case_id for s in samples], [bool(s.mask.any()) for s in samples], folds, cfg.seed)
    if cfg.plan.enabled:
        first = {"train": sorted(pool - set(fold_cases[0])), "val": fold_cases[0], "test": base["test"]}
        planned = plan_run(cfg, loaded, first, progress=progress)
        cfg, loaded = planned.config, planned.loaded
        print_plan(console, planned.plan, title=f"plan for the {folds}-fold experiment (fold 0's training cases)")
    experiment = runfs.create_run(cfg.output_dir, cfg.name, subfolders=(runfs.METRICS, runfs.SPLITS))
    (experiment / runfs.CONFIG).write_text(dump_config(cfg))
    for i, val in enumerate(fold_cases):
        train = sorted(pool - set(val))
        runfs.write_json(experiment / runfs.SPLITS / f"fold-{i}.json", {"train": train, "val": val, "test": base["test"]})
    doc = {
        "experiment_version": EXPERIMENT_VERSION, "medseg_version": medseg.__version__, "k": folds, "seed": cfg.seed,
        "created": _now(), "test": base["test"],
        "folds": [{"fold": i, "run": runfs.fold_dir(experiment, i).name, "val": val, "status": "pending"} for i, val in enumerate(fold_cases)],
        "tta_sets": [list(s) for s in cfg.postprocess.tta_sets()],
    }
    _write_doc(experiment, doc)
    console.print(f"[bold]experiment {experiment}[/]: {folds} folds of {len(pool)} cases "
                  f"({', '.join(str(len(f)) for f in fold_cases)}), {len(base['test'])} test cases held out")
    return _run_folds(experiment, cfg, doc, loaded, console, progress, None)


def resume_experiment(experiment: Path, fold: Optional[int] = None, console: Optional[Console] = None, progress: bool = True) -> Path:
    """Continue a killed experiment at the fold and step where it stopped (or run one fold, for several devices)."""
    console = console or Console(stderr=True)
    experiment, doc = runfs.open_experiment(experiment)
    cfg = config_from_dict(read_yaml(experiment / runfs.CONFIG), experiment)
    if fold is not None and not 0 <= fold < doc["k"]:
        raise MedsegError(f"--fold: {fold} is not a fold of {experiment} (0..{doc['k'] - 1})")
    _one_process(cfg)
    loaded = load_data(cfg.data, with_masks=True, progress=progress)
    known = {s.case_id for s in loaded.samples}
    for f in doc["folds"]:
        missing = sorted(set(f["val"]) - known)
        if missing:
            raise MedsegError(f"{experiment / runfs.EXPERIMENT}: fold {f['fold']}'s case '{missing[0]}' is not in the data any more; "
                              "the data changed since the experiment started")
    return _run_folds(experiment, cfg, doc, loaded, console, progress, fold)


def _one_process(cfg: Config) -> None:
    """Folds train one process each: several devices run several folds at once (`fit --resume EXP --fold I`), not DDP."""
    if distributed.world_size(cfg) > 1:
        raise MedsegError("fit --folds: an experiment trains each fold in one process; to use several devices run one fold per "
                          "device (medseg fit --resume EXPERIMENT --fold I, with CUDA_VISIBLE_DEVICES=I), without torchrun "
                          "and with train.devices: 1")


def _run_folds(experiment: Path, cfg: Config, doc: dict, loaded, console: Console, progress: bool, only: Optional[int]) -> Path:
    sets = [tuple(s) for s in doc["tta_sets"]]
    for entry in doc["folds"]:
        i = entry["fold"]
        if only is not None and i != only or entry["status"] == "done":
            continue
        run = runfs.fold_dir(experiment, i)
        console.print(f"[bold]fold {i} of {doc['k']}[/] ({len(entry['val'])} validation cases)")
        if run.exists() and runfs.is_finished(run):
            pass  # trained; only its out-of-fold predictions are missing
        elif run.exists():
            fit(resume=run, console=console, progress=progress, loaded=loaded)
        else:
            fit(_fold_config(cfg, experiment, i), console=console, progress=progress, loaded=loaded)
        _save_fold_oof(experiment, i, entry["val"], loaded, sets)
        entry["status"] = "done"
        entry["finished"] = _now()
        _write_doc(experiment, doc)
    if all(f["status"] == "done" for f in doc["folds"]):
        tune_experiment(experiment, console=console, loaded=loaded, force=True)
    else:
        left = [f["fold"] for f in doc["folds"] if f["status"] != "done"]
        console.print(f"[yellow]folds {left} not trained yet: medseg fit --resume {experiment} (then the out-of-fold tuning runs)")
    return experiment


def _save_fold_oof(experiment: Path, fold: int, val_cases: list[str], loaded, sets) -> None:
    run = runfs.fold_dir(experiment, fold)
    cfg = runfs.load_run_config(run)
    state = runfs.load_state(run)
    part = stack_part(loaded, val_cases)
    net, _ = runfs.load_network(run, cfg, state["in_channels"])
    ids = [m["sample_id"] for m in part.meta]
    for names, probs in zip(sets, run_prob_sets(net, part.images, cfg, state, sets)):
        runfs.save_oof(experiment, fold, names, ids, probs)


# ---------------------------------------------------------------------------------------
# Out-of-fold tuning
#
# The stored OOF probabilities (float16, one file per fold and TTA set) stay on disk and are walked
# a chunk of whole cases at a time, in three passes: every case is scored once under every candidate
# rule, into its own fold's search (the search on all folds and the one without each fold are merges of
# those); each fold is scored with the rule chosen without it; the OOF metrics score the plain
# prediction and the rule finally chosen (which needs the second pass's verdict).


class _OOFCases:
    """An experiment's out-of-fold predictions, opened and checked, walked a chunk of whole cases at a time.

    Args:
        experiment: the experiment folder.
        loaded: the data (`load_data`, with masks): the truths and meta of the OOF samples.
        folds: the folds, in experiment order.
        sets: the TTA sets (transform names); the first is the plain prediction.
        contract: the metric contract (per-volume contracts make volumes the cases).
        batch_size: eval.batch_size (images per chunk: `metrics.validation.case_chunks`).
    """

    def __init__(self, experiment: Path, loaded, folds: list[int], sets: list[tuple], contract, batch_size: int):
        plain = runfs.open_oof(experiment, sets[0], folds)
        by_id = {s.sample_id: s for s in loaded.samples}
        missing = [i for i in plain.ids if i not in by_id]
        if missing:
            raise MedsegError(f"{experiment / runfs.OOF}: sample '{missing[0]}' is not in the data any more")
        self.probs = [plain]
        for names in sets[1:]:
            got = runfs.open_oof(experiment, names, folds)
            if got.ids != plain.ids:
                raise MedsegError(f"{experiment / runfs.OOF / runfs.tta_key(names)}: its samples differ from the plain predictions'")
            self.probs.append(got)
        self.loaded, self.sets, self.folds, self.batch_size = loaded, list(sets), list(folds), batch_size
        self.ids = plain.ids
        self.fold_of = dict(zip(plain.ids, plain.folds))
        self._row_fold = plain.folds
        self.samples = [by_id[i] for i in plain.ids]
        self.volume_cases = contract.reduction == "per_volume" and has_volumes([s.meta for s in self.samples])

    def read(self, names, rows: list[int]) -> np.ndarray:
        """(len(rows), H, W) float32 probabilities of these rows under a TTA set (a rule's: see `_rule_set`)."""
        return self.probs[self.sets.index(tuple(names))].rows(rows)

    def chunks(self):
        """(fold, rows, part) per chunk of whole cases: an image chunk never spans two folds (a volume is one case's).

        Chunks come in the order `sweep_cases` lists the cases of all rows (volumes by name, images by
        row); `part` is `stack_part` of just the chunk's samples: their meta and (uint8) masks.
        """
        for idx in case_chunks([s.meta for s in self.samples], self.batch_size):
            for fold, rows in groupby(idx, key=self._row_fold.__getitem__):
                rows = list(rows)
                chosen = [self.samples[i] for i in rows]
                # stack_part on a view of just these samples: their meta and masks, nothing else of the data stacked or read
                part = stack_part(replace(self.loaded, samples=chosen), sorted({s.case_id for s in chosen}))
                yield fold, rows, part


def _rule_set(rule: PostProcess, sets: list[tuple]) -> tuple:
    """The TTA set whose probabilities a rule reads (the plain set when it names none of them)."""
    names = tuple(rule.tta) or ("identity",)
    return names if names in sets else sets[0]


def _in_row_order(items: list, rows: list[int]) -> list:
    """Per-image items listed as the chunks visited their rows, put back in row order (folds one after another).

    The whole-array scorers listed images in row order; volumes come in name order either way, so
    only image lists of volume data move.
    """
    return [items[j] for j in np.argsort(np.asarray(rows), kind="stable")]


def _fold_searches(cfg: Config, oof: _OOFCases) -> dict[int, TTARuleSearch]:
    """Pass 1: each fold's post-processing search, each case scored once under every candidate rule and TTA set."""
    pp, contract = cfg.postprocess, cfg.eval.contract
    searches = {k: TTARuleSearch(oof.sets, contract, pp.thresholds, pp.min_area_fractions, pp.keep_largest, pp.min_scores)
                for k in oof.folds}
    for k, rows, part in oof.chunks():
        searches[k].add_chunk([oof.read(names, rows) for names in oof.sets], np.asarray(part.masks), part.meta)
    return searches


def _leave_one_fold_out(cfg: Config, oof: _OOFCases, rules: dict[int, PostProcess]) -> tuple[dict, dict]:
    """Pass 2: per fold, per-case Dice of the raw prediction and of the rule chosen without that fold.

    Args:
        cfg: the experiment's config.
        oof: the out-of-fold predictions.
        rules: fold -> the rule chosen on the other folds.

    Returns:
        ({fold: raw Dice per case}, {fold: tuned Dice per case}), each fold's cases as `sweep_cases` lists them.
    """
    contract = cfg.eval.contract
    raw, tuned, case_rows = ({k: [] for k in oof.folds} for _ in range(3))
    for k, rows, part in oof.chunks():
        masks, rule = np.asarray(part.masks), rules[k]
        plain = oof.read(oof.sets[0], rows)
        plain_cases, truths = sweep_cases(plain, masks, part.meta, contract)
        names = _rule_set(rule, oof.sets)
        rule_cases = plain_cases if names == oof.sets[0] else sweep_cases(oof.read(names, rows), masks, part.meta, contract)[0]
        raw[k] += [case_dice(p >= contract.threshold, t, contract) for p, t in zip(plain_cases, truths)]
        tuned[k] += [case_dice(rule.apply(p), t, contract) for p, t in zip(rule_cases, truths)]
        case_rows[k] += rows
        del plain, plain_cases, rule_cases, masks, truths  # before the next chunk is read: not two chunks at once
    if not oof.volume_cases:  # the cases are images: the bootstrap's order is the fold's row order
        raw = {k: _in_row_order(v, case_rows[k]) for k, v in raw.items()}
        tuned = {k: _in_row_order(v, case_rows[k]) for k, v in tuned.items()}
    return raw, tuned


def tune_experiment(experiment: Path, console: Optional[Console] = None, loaded=None, force: bool = False) -> dict:
    """Choose the post-processing on the out-of-fold predictions; keep it only if it wins out of sample.

    Writes postprocess.json / postprocess.csv, the out-of-fold metrics (metrics/cases.csv,
    metrics/summary.json: what `compare` reads) and the experiment's report. The OOF
    probabilities are read a chunk of whole cases at a time, never whole.

    Args:
        experiment: the experiment folder (every fold done).
        console: where to print.
        loaded: the data in memory, if the caller has it.
        force: replace an existing postprocess.json.
    """
    console = console or Console(stderr=True)
    experiment, doc = runfs.open_experiment(experiment)
    if (experiment / runfs.POSTPROCESS).exists() and not force:
        raise MedsegError(f"{experiment / runfs.POSTPROCESS}: already tuned (use --force to tune again and replace it)")
    pending = [f["fold"] for f in doc["folds"] if f["status"] != "done"]
    if pending:
        raise MedsegError(f"{experiment}: folds {pending} are not done; medseg fit --resume {experiment}")
    cfg = config_from_dict(read_yaml(experiment / runfs.CONFIG), experiment)
    contract, pp = cfg.eval.contract, cfg.postprocess
    if loaded is None:
        loaded = load_data(cfg.data, with_masks=True, progress=False)
    sets = [tuple(s) for s in doc["tta_sets"]]
    all_folds = [f["fold"] for f in doc["folds"]]
    oof = _OOFCases(experiment, loaded, all_folds, sets, contract, cfg.eval.batch_size)
    searches = _fold_searches(cfg, oof)
    full = TTARuleSearch.merged(searches.values()).result(pp.min_gain, "out-of-fold")

    # leave-one-fold-out: a rule chosen without fold k (the other folds' searches merged), scored on fold k,
    # against the raw prediction there
    rules = {}
    for k in all_folds:
        without_k = TTARuleSearch.merged([s for j, s in searches.items() if j != k])
        rules[k] = PostProcess.from_json(without_k.result(pp.min_gain, "out-of-fold")["chosen"])
    raw_by_fold, tuned_by_fold = _leave_one_fold_out(cfg, oof, rules)
    honest_raw, honest_tuned, per_fold = [], [], []
    for k in all_folds:
        raw_d, tuned_d = raw_by_fold[k], tuned_by_fold[k]
        honest_raw += raw_d
        honest_tuned += tuned_d
        per_fold.append({"fold": k, "rule": rules[k].to_json(), "rule_text": rules[k].describe(),
                         "raw_dice": float(np.nanmean(raw_d)), "tuned_dice": float(np.nanmean(tuned_d)), "n_cases": len(raw_d)})
    honest = {**keep_decision(full["gain"], honest_raw, honest_tuned, pp.min_gain, cfg.seed), "per_fold": per_fold}
    gain, low, high = honest["gain"], honest["ci_low"], honest["ci_high"]
    if honest["keep"]:
        chosen = PostProcess.from_json(full["chosen"])
        reason = (f"{chosen.describe()}: chosen on {len(oof.ids)} out-of-fold cases; leave-one-fold-out gain {gain:+.4f} "
                  f"(95% CI {low:+.4f} to {high:+.4f}) over raw")
    else:
        chosen = PostProcess(float(contract.threshold))
        reason = (f"raw prediction kept: the rule chosen without each fold gained {gain:+.4f} on it "
                  f"(95% CI {low:+.4f} to {high:+.4f}), not a gain that excludes 0 by at least min_gain "
                  f"{pp.min_gain:g}")
    result = {**full, "chosen": chosen.to_json(), "reason": reason, "candidate": full["chosen"], "candidate_reason": full["reason"],
              "honest": honest, "where": "out-of-fold", "contract_text": contract.describe(), "n_folds": len(all_folds)}
    runfs.write_csv(experiment / runfs.POSTPROCESS_CSV, full["rows"])
    runfs.write_json(experiment / runfs.POSTPROCESS, {k: v for k, v in result.items() if k != "rows"})
    summary = _write_oof_metrics(experiment, cfg, oof, chosen, honest)
    print_tuning(console, result)
    _print_oof(console, summary, honest)
    try:
        from medseg.report.experiment import build_experiment_report

        path = build_experiment_report(experiment, doc, summary, result)
        console.print(f"[bold green]report: {path}")
    except Exception as e:  # noqa: BLE001 — the report is derived; never fail the tuning over it
        console.print(f"[yellow]experiment report not written ({type(e).__name__}: {e})")
    return result


def keep_decision(full_gain: float, raw: list[float], tuned: list[float], min_gain: float, seed: int = 0) -> dict:
    """Keep the tuned rule? Only if it gained on all OOF cases and, out of sample, by at least min_gain with a CI above 0.

    Args:
        full_gain: the candidate's gain over raw on all out-of-fold cases (where it was chosen).
        raw / tuned: per-case Dice on each held-out fold of the raw prediction and of the rule chosen without that fold.
        min_gain: `postprocess.min_gain`.
        seed: the bootstrap seed.
    """
    a, b = np.array(raw, float), np.array(tuned, float)
    both = ~(np.isnan(a) | np.isnan(b))
    diffs = b[both] - a[both]
    low, high = bootstrap_mean_ci(diffs, seed=seed)
    gain = float(diffs.mean()) if diffs.size else math.nan
    keep = bool(full_gain >= min_gain and math.isfinite(low) and low > 0 and gain >= min_gain)
    return {"raw_dice": float(np.nanmean(a)) if a.size else math.nan, "tuned_dice": float(np.nanmean(b)) if b.size else math.nan,
            "gain": gain, "ci_low": low, "ci_high": high, "n_cases": int(diffs.size), "keep": keep}


def _write_oof_metrics(experiment: Path, cfg: Config, oof: _OOFCases, rule: PostProcess, honest: dict) -> dict:
    """Pass 3: score the plain OOF prediction and `rule` on it; write metrics/cases.csv, volumes.csv, summary.json.

    Args:
        experiment: the experiment folder.
        cfg: its config.
        oof: the out-of-fold predictions.
        rule: the rule the tuning chose (raw when the leave-one-fold-out check did not keep the candidate).
        honest: the leave-one-fold-out result.
    """
    contract = cfg.eval.contract
    scorer = ValidationScorer(contract, surface=True)
    pp_scorer = PostprocessedScorer(contract, rule.apply)
    names = _rule_set(rule, oof.sets)
    visited: list[int] = []
    for _, rows, part in oof.chunks():
        masks = np.asarray(part.masks)
        plain = oof.read(oof.sets[0], rows)
        scorer.add(plain, masks, part.meta)
        pp_scorer.add(plain if names == oof.sets[0] else oof.read(names, rows), masks, part.meta)
        visited += rows
        del plain, masks  # before the next chunk is read: not two chunks at once
    scores = scorer.result()
    rows = [{**r, "fold": oof.fold_of.get(r["case"])} for r in _in_row_order(scores.image_rows, visited)]
    summary = {**scores.summary, "evaluated_on": "out-of-fold predictions (each case by the fold that did not train on it)",
               "n_folds": len(set(oof.fold_of.values())), "soft_dice": scores.soft_dice}
    if scores.volume_summary is not None:
        summary["per_volume"] = {**scores.volume_summary, "rows": scores.volume_rows}
        runfs.write_csv(experiment / runfs.VOLUMES_CSV, scores.volume_rows)
    pp_summary, pp_rows = pp_scorer.result()
    if not oof.volume_cases:  # one row per image: numbered in row order, as the whole-array scorer numbered them
        pp_rows = [{**r, "case_index": j} for j, r in enumerate(_in_row_order(pp_rows, visited))]
    summary["postprocessed"] = {**pp_summary, "rule": rule.to_json(), "rule_text": rule.describe(),
                                "note": "the rule chosen on these same out-of-fold cases; the honest estimate is `leave_one_fold_out`"}
    summary["leave_one_fold_out"] = {k: v for k, v in honest.items() if k != "per_fold"}
    runfs.write_csv(experiment / runfs.CASES_CSV, rows)
    runfs.write_csv(experiment / runfs.METRICS / runfs.CASES_PP_NAME, pp_rows)
    runfs.write_json(experiment / runfs.SUMMARY, summary)
    return summary


def _print_oof(console: Console, summary: dict, honest: dict) -> None:
    t = Table(title=f"out-of-fold ({summary['n_cases']} cases, {summary['contract_text']})")
    for c in ("", "Dice", "lesion recall", "FP rate on empty"):
        t.add_column(c, justify="right")
    pp = summary["postprocessed"]
    fmt = lambda v: "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"  # noqa: E731
    t.add_row("raw network", fmt(summary["dice"]), fmt(summary.get("lesion_recall")), fmt(summary.get("fp_rate_empty")))
    t.add_row("rule chosen on all OOF", fmt(pp["dice"]), fmt(pp.get("lesion_recall")), fmt(pp.get("fp_rate_empty")))
    t.add_row("leave-one-fold-out", fmt(honest["tuned_dice"]), "", "")
    console.print(t)


# ---------------------------------------------------------------------------------------
# Ensembles


def expand_members(paths: list[Path]) -> tuple[list[Path], Optional[Path]]:
    """Run folders of an ensemble: an experiment stands for its folds; the rule comes from one experiment or one run."""
    runs: list[Path] = []
    rule_from: Optional[Path] = None
    for p in paths:
        p = Path(p)
        if runfs.is_experiment(p):
            p, doc = runfs.open_experiment(p)
            pending = [f["fold"] for f in doc["folds"] if f["status"] != "done"]
            if pending:
                raise MedsegError(f"{p}: folds {pending} are not trained (medseg fit --resume {p})")
            runs += [runfs.fold_dir(p, f["fold"]) for f in doc["folds"]]
        else:
            runs.append(runfs.open_run(p))
    if len(paths) == 1:
        rule_from = Path(paths[0])
    return runs, rule_from


def ensemble_members(paths: list[Path]):
    """(runs, nets, the first run's config and state, the rule folder) of an ensemble, checked to read the same inputs."""
    runs, rule_from = expand_members(paths)
    nets, first = [], None
    for run in runs:
        cfg, state = runfs.load_run_config(run), runfs.load_state(run)
        if first is None:
            first = (run, cfg, state)
        else:
            r0, c0, s0 = first
            same = (s0["in_channels"] == state["in_channels"] and tuple(c0.data.input_size) == tuple(cfg.data.input_size)
                    and c0.data.normalize == cfg.data.normalize and c0.data.resize_mode == cfg.data.resize_mode
                    and c0.data.target_spacing == cfg.data.target_spacing and c0.data.context_slices == cfg.data.context_slices)
            if not same:
                raise MedsegError(f"{run}: reads its inputs differently from {r0} (channels, input size, normalisation, resize "
                                  "or context slices): their probabilities cannot be averaged")
        nets.append(runfs.load_network(run, cfg, state["in_channels"])[0])
    return runs, nets, first[1], first[2], rule_from


def evaluate_experiment(experiment: Path, data_config: Optional[Path] = None, part: str = "test",
                        console: Optional[Console] = None, progress: bool = True) -> dict:
    """Each fold and the fold ensemble on the test cases (or another dataset), side by side, with paired statistics.

    Results go to EXPERIMENT/evaluations/<test|data stem>[-N]/summary.json and cases.csv.
    """
    from medseg.metrics.paired import paired_comparison

    console = console or Console(stderr=True)
    experiment, doc = runfs.open_experiment(experiment)
    runs, nets, cfg, state, _ = ensemble_members([experiment])
    contract = cfg.eval.contract
    if data_config is not None:
        part_arrays = other_data_arrays(cfg, data_config, state["in_channels"], progress)
        name = Path(data_config).stem
    else:
        if part != "test" or not doc["test"]:
            raise MedsegError(f"{experiment}: no test cases to evaluate (its config's split held none out); use --data")
        loaded = load_data(cfg.data, with_masks=True, progress=progress)
        part_arrays = stack_part(loaded, doc["test"])
        name = "test"
    if len(part_arrays.images) == 0:
        raise MedsegError(f"{experiment}: none of the cases to evaluate is in the data")
    rule = runfs.load_postprocess(experiment) or PostProcess(contract.threshold)
    results, per_case = [], {}
    for run, net in zip(runs, nets):
        probs = _member_probs(net, part_arrays.images, cfg, state)
        s = score_validation(probs, part_arrays.masks, part_arrays.meta, contract, soft=False)
        results.append({"model": run.name, **{k: s.summary.get(k) for k in ("dice", "iou", "lesion_recall", "fp_rate_empty", "n_cases")}})
        per_case[run.name] = _unit_scores(s)
    ens = _member_probs(nets, part_arrays.images, cfg, state)
    s = score_validation(ens, part_arrays.masks, part_arrays.meta, contract, surface=True, soft=False)
    results.append({"model": "ensemble", **{k: s.summary.get(k) for k in ("dice", "iou", "lesion_recall", "fp_rate_empty", "n_cases")}})
    per_case["ensemble"] = _unit_scores(s)
    rule_probs = _member_probs(nets, part_arrays.images, cfg, state, tta=rule.tta) if rule.tta else ens
    pp_summary, pp_rows = score_postprocessed(rule_probs, part_arrays.masks, part_arrays.meta, contract, rule.apply)
    results.append({"model": f"ensemble + {rule.describe()}", **{k: pp_summary.get(k) for k in ("dice", "iou", "lesion_recall", "fp_rate_empty", "n_cases")}})
    paired = [paired_comparison(r, per_case[r], "ensemble", per_case["ensemble"], resamples=5000, seed=0) for r in per_case if r != "ensemble"]
    out_dir = runfs.create_evaluation(experiment, name)
    summary = {"evaluated_on": str(data_config) if data_config else "test split", "contract": contract.model_dump(mode="json"),
               "contract_text": contract.describe(), "models": results, "paired_vs_ensemble": paired,
               "ensemble": s.summary, "ensemble_postprocessed": {**pp_summary, "rule": rule.to_json(), "rule_text": rule.describe()}}
    runfs.write_csv(out_dir / runfs.CASES_NAME, s.image_rows)
    runfs.write_csv(out_dir / runfs.CASES_PP_NAME, pp_rows)
    runfs.write_json(out_dir / runfs.SUMMARY_NAME, summary)
    t = Table(title=f"{experiment.name}: folds and their ensemble on {summary['evaluated_on']}", caption=f"metric contract: {contract.describe()}")
    for c in ("model", "Dice", "lesion recall", "FP rate on empty", "vs ensemble (B − A, 95% CI, p)"):
        t.add_column(c, justify="right")
    pairs = {p["a"]: p for p in paired}
    fmt = lambda v: "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"  # noqa: E731
    for r in results:
        p = pairs.get(r["model"])
        vs = f"{p['mean_diff']:+.4f} [{p['ci_low']:+.4f}, {p['ci_high']:+.4f}] p={p['p_value']:.2g}" if p else ""
        t.add_row(r["model"], fmt(r["dice"]), fmt(r.get("lesion_recall")), fmt(r.get("fp_rate_empty")), vs)
    console.print(t)
    summary["written_to"] = str(out_dir)
    return summary


def _unit_scores(scores) -> dict:
    """Per-case Dice of the paired unit: volumes under a per-volume contract, else images."""
    if scores.volume_rows and scores.summary is scores.volume_summary:
        return {r["volume"]: r["dice"] for r in scores.volume_rows}
    return {r["case"]: r["dice"] for r in scores.image_rows}


def _member_probs(nets, images, cfg, state, tta=()):
    from medseg.inference import run_probs

    return run_probs(nets, images, cfg, state, tta=tta)

