"""`medseg tune`: choose the run's post-processing on its validation cases.

Writes runs/NAME/postprocess.json (the chosen rule, the raw and best scores, the TTA sets tried
and every candidate) and postprocess.csv; `evaluate`, `predict` and the report apply the rule. See
`medseg.postprocess` for the search.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
from rich.console import Console

from medseg import runfolder as runfs
from medseg.commands.console import print_tuning
from medseg.config import apply_overrides, config_from_dict, read_yaml
from medseg.data.arrays import take
from medseg.data.sources.base import progress_items
from medseg.errors import MedsegError
from medseg.inference import run_prob_sets
from medseg.metrics.validation import case_chunks
from medseg.postprocess import TTARuleSearch


def tune_run(
    run_dir: Path, console: Optional[Console] = None, val=None, force: bool = False, progress: bool = True,
    overrides: Optional[list[str]] = None,
) -> dict:
    """Tune post-processing for a run on its validation cases with its model (``train.checkpoint``: best or last epoch).

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
    search = TTARuleSearch(sets, contract, pp.thresholds, pp.min_area_fractions, pp.keep_largest, pp.min_scores)
    # a chunk of whole cases at a time (one volume, or a few eval batches of images): memory holds that
    # chunk's probabilities under each TTA set, never the part's (LiTS: ~1.6 GB per set at 256²)
    for idx in progress_items(case_chunks(val.meta, cfg.eval.batch_size), "Tuning post-processing", progress):
        # every transform runs once; each TTA set averages its own (the first set is the plain prediction)
        probs_by_set = run_prob_sets(net, take(val.images, idx), cfg, state, sets)
        search.add_chunk(probs_by_set, np.asarray(val.masks[idx]), [val.meta[i] for i in idx])
        # dropped before the next chunk: the name would keep this volume's sets alive while the next volume's are
        # made, two volumes at once (the default tune's +22% from 10 to 131 LiTS volumes, BENCHMARKS §9c)
        del probs_by_set
    result = search.result(pp.min_gain)
    result.update(runfs.checkpoint_record(info))
    result["contract_text"] = contract.describe()
    runfs.write_csv(run_dir / runfs.POSTPROCESS_CSV, result["rows"])
    runfs.write_json(out, {k: v for k, v in result.items() if k != "rows"})
    print_tuning(console, result)
    return result
