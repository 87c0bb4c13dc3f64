"""`medseg tune`: choose the run's post-processing on its validation cases.

Writes runs/NAME/postprocess.json (the chosen rule, the raw and best scores, the TTA sets tried
and every candidate) and postprocess.csv; `evaluate`, `predict` and the report apply the rule. See
`medseg.postprocess` for the search.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from rich.console import Console

from medseg import runfolder as runfs
from medseg.commands.console import print_tuning
from medseg.config import apply_overrides, config_from_dict, read_yaml
from medseg.errors import MedsegError
from medseg.inference import run_prob_sets
from medseg.metrics import sweep_cases
from medseg.postprocess import tune_over_tta


def tune_run(
    run_dir: Path, console: Optional[Console] = None, val=None, force: bool = False, progress: bool = True,
    overrides: Optional[list[str]] = None,
) -> dict:
    """Tune post-processing for a run on its validation cases with the best checkpoint.

    Args:
        run_dir: the run folder.
        console: where to print.
        val: validation arrays already in memory (fit passes them).
        force: replace an existing postprocess.json (otherwise refuse: runs are never overwritten silently).
        progress: show progress bars while loading data.
        overrides: `postprocess.KEY=VALUE` strings for this tuning (the saved config is unchanged).
    """
    console = console or Console(stderr=True)
    run_dir = runfs.open_run(run_dir)
    out = run_dir / runfs.POSTPROCESS
    if out.exists() and not force:
        raise MedsegError(f"{out}: already tuned (use --force to tune again and replace it)")
    cfg = runfs.load_run_config(run_dir)
    if overrides:
        cfg = config_from_dict(apply_overrides(read_yaml(run_dir / runfs.CONFIG), overrides), run_dir)
    state = runfs.load_state(run_dir)
    if val is None:
        val = runfs.load_split_part(run_dir, cfg, progress=progress)
    net, info = runfs.load_network(run_dir, cfg, state["in_channels"])
    contract = cfg.eval.contract
    pp = cfg.postprocess
    sets = pp.tta_sets()
    # every transform runs once; each TTA set averages its own (the first set is the plain prediction)
    by_set = run_prob_sets(net, val.images, cfg, state, sets)
    cases_m = None
    probs_by_set = []
    for names, probs in zip(sets, by_set):
        cases_p, cases_m = sweep_cases(probs, val.masks, val.meta, contract)
        probs_by_set.append((names, cases_p))
    result = tune_over_tta(probs_by_set, cases_m, contract, pp.thresholds, pp.min_area_fractions, pp.keep_largest,
                           pp.min_gain, min_scores=pp.min_scores)
    result["checkpoint"] = runfs.BEST_CKPT
    result["best_epoch"] = info["epoch"]
    result["contract_text"] = contract.describe()
    runfs.write_csv(run_dir / runfs.POSTPROCESS_CSV, result["rows"])
    runfs.write_json(out, {k: v for k, v in result.items() if k != "rows"})
    print_tuning(console, result)
    return result
