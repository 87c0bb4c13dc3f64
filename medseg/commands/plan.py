"""`medseg plan`: fingerprint the dataset and plan the keys a config leaves unset, with reasons, into a folder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from rich.console import Console

from medseg import runfolder as runfs
from medseg.commands.console import print_plan
from medseg.config import dump_config, load_config
from medseg.data import load_data
from medseg.data.split import make_split
from medseg.errors import MedsegError
from medseg.planning import plan_run

PLAN_OUTPUTS = (runfs.PLAN, runfs.FINGERPRINT, runfs.CONFIG)


def plan_command(config: Path, overrides: list[str], out: Path, measure: Optional[bool] = None,
                 console: Optional[Console] = None, progress: bool = True) -> Path:
    """`medseg plan`: write fingerprint.json, plan.json and the planned config.yaml into `out`.

    Args:
        config: the YAML config.
        overrides: --set KEY=VALUE strings.
        out: output folder; refused if it already holds any of the outputs.
        measure: time steps (None: the config's plan.measure).
        console: where the table goes.
        progress: progress bar while reading the data.
    """
    out = Path(out)
    runfs.check_output_dir(out, key="--out")
    taken = [name for name in PLAN_OUTPUTS if (out / name).exists()]
    if taken:
        raise MedsegError(f"--out {out}: already holds {', '.join(taken)} (nothing is overwritten)")
    cfg = load_config(config, overrides)
    loaded = load_data(cfg.data, with_masks=True, progress=progress)
    split = make_split([s.case_id for s in loaded.samples], cfg.split, cfg.seed)
    planned = plan_run(cfg, loaded, split, measure=measure, progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    runfs.write_json(out / runfs.FINGERPRINT, planned.fingerprint)
    runfs.write_json(out / runfs.PLAN, planned.plan.to_json())
    (out / runfs.CONFIG).write_text(dump_config(planned.config))
    console = console or Console()
    note = "" if cfg.plan.enabled else " (plan.enabled is false: fit will not apply it)"
    print_plan(console, planned.plan, title=f"plan for {config}{note}")
    return out
