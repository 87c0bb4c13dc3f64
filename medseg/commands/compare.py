"""Compare run folders honestly: what changed, what was measured, and whether it is real.

`medseg compare runs/A runs/B [...]` replaces the hand-made "V3.0 / V3.1 / V3.4" table with
three parts computed from the run folders alone:

- config differences: only the dotted keys whose values differ (name/output_dir ignored);
- metrics from metrics/summary.json, shown with the metric contract they were computed under;
- paired per-case Dice tests on the same validation cases: mean difference (B − A), a seeded
  percentile-bootstrap 95% CI, a two-sided Wilcoxon signed-rank p-value and a verdict.

Runs evaluated on different cases, or under different metric contracts, are refused: their
numbers are not comparable, and a table would pretend they are.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from medseg import runfolder as runfs
from medseg.config import read_yaml
from medseg.errors import MedsegError
from medseg.metrics.paired import CI_LEVEL, DEFAULT_ALPHA, DEFAULT_RESAMPLES, paired_comparison
from medseg.report.comparison import IGNORED_CONFIG_KEYS, METRIC_KEYS, MODEL_KEYS, to_html, to_markdown

PAIRED_METRIC = "dice"
# Up to this many runs every pair is compared; beyond, each run is compared with the first
# (the number of pairs, and so of chances for a false "better", grows quadratically).
ALL_PAIRS_MAX_RUNS = 4
ABSENT = "(absent)"


@dataclass
class _Run:
    label: str
    path: Path
    config: dict  # flattened dotted keys -> value
    summary: dict
    case_ids: dict  # case -> case_id (patient/volume), for the independence note
    scores: dict  # paired unit key (case or volume) -> Dice
    unit: str  # "image" or "volume"


# ---------------------------------------------------------------------------------------
# Reading runs


def flatten_config(node: Any, prefix: str = "") -> dict:
    """Nested mappings -> {"section.key": value}; lists and scalars are leaf values.

    Args:
        node: the parsed YAML (a dict at the top level).
        prefix: dotted key of `node` (empty at the top).
    """
    if isinstance(node, dict) and node:
        out: dict = {}
        for key, value in node.items():
            out.update(flatten_config(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: node}


def load_run(path: Path) -> _Run:
    """Read what compare needs from one run folder; a clear MedsegError if it is not one."""
    path = Path(path)
    if not path.is_dir():
        raise MedsegError(f"{path}: no such run folder")
    runfs.open_run(path)
    cases_csv = path / runfs.CASES_CSV
    if not cases_csv.is_file():
        raise MedsegError(f"{path}: no {runfs.CASES_CSV} (has the run been evaluated? try: medseg evaluate {path})")
    summary = runfs.read_json(path / runfs.SUMMARY)
    if not isinstance(summary, dict) or not isinstance(summary.get("contract"), dict):
        raise MedsegError(f"{path / runfs.SUMMARY}: no metric contract (re-run: medseg evaluate {path})")
    raw = read_yaml(path / runfs.CONFIG)
    config = {k: v for k, v in flatten_config(raw).items() if k not in IGNORED_CONFIG_KEYS}
    scores, case_ids = runfs.read_case_scores(cases_csv, "case", PAIRED_METRIC)
    unit = "image"
    volumes_csv = path / runfs.VOLUMES_CSV
    # Under a per-volume contract the reported Dice is a mean over volumes, and slices of one
    # volume are not independent: pair volumes, so the test matches the number in the table.
    if summary["contract"].get("reduction") == "per_volume" and volumes_csv.is_file():
        scores, _ = runfs.read_case_scores(volumes_csv, "volume", PAIRED_METRIC)
        unit = "volume"
    return _Run(label=str(path), path=path, config=config, summary=summary, case_ids=case_ids, scores=scores, unit=unit)


# ---------------------------------------------------------------------------------------
# Refusals: results that cannot be compared


def _contract_of(run: _Run) -> dict:
    return {**run.summary["contract"], "metrics_version": run.summary.get("metrics_version")}


def check_same_contract(runs: Sequence[_Run]) -> None:
    """Raise naming the differing contract fields (metrics_version included) of the first mismatch."""
    ref = _contract_of(runs[0])
    for run in runs[1:]:
        other = _contract_of(run)
        diffs = [f"{k} ({ref.get(k, ABSENT)} vs {other.get(k, ABSENT)})" for k in sorted(set(ref) | set(other)) if ref.get(k, ABSENT) != other.get(k, ABSENT)]
        if diffs:
            raise MedsegError(
                f"{run.label}: metric contract differs from {runs[0].label} in {', '.join(diffs)}; "
                "numbers under different contracts are not comparable (re-evaluate under one contract)"
            )


def check_same_cases(runs: Sequence[_Run]) -> None:
    """Raise naming the run and how many validation cases differ from the first run's."""
    ref = set(runs[0].case_ids)
    for run in runs[1:]:
        mine = set(run.case_ids)
        only_here, only_ref = sorted(mine - ref), sorted(ref - mine)
        if only_here or only_ref:
            example = (only_here or only_ref)[0]
            raise MedsegError(
                f"{run.label}: evaluated on different cases than {runs[0].label} "
                f"({len(only_here)} of its {len(mine)} cases are not in {runs[0].label}, {len(only_ref)} of "
                f"{runs[0].label}'s {len(ref)} are missing, e.g. '{example}'); compare runs validated on the same split"
            )
    units = {r.unit for r in runs}
    if len(units) > 1:
        missing = next(r.label for r in runs if r.unit == "image")
        raise MedsegError(f"{missing}: no {runfs.VOLUMES_CSV} while the other runs pair per volume (re-run: medseg evaluate {missing})")
    for run in runs[1:]:
        if set(run.scores) != set(runs[0].scores):  # volumes follow from cases, but check what is paired
            raise MedsegError(f"{run.label}: its {runfs.VOLUMES_CSV} lists other volumes than {runs[0].label}'s")


# ---------------------------------------------------------------------------------------
# The comparison


def config_diff(runs: Sequence[_Run]) -> list[dict]:
    """[{key, values: [one per run]}] for the dotted keys whose values are not all equal."""
    keys = sorted(set().union(*(r.config for r in runs)))
    out = []
    for key in keys:
        values = [r.config.get(key, ABSENT) for r in runs]
        if any(v != values[0] for v in values[1:]):
            out.append({"key": key, "values": values})
    return out


def _pairs(n_runs: int) -> tuple[str, list[tuple[int, int]]]:
    if n_runs <= ALL_PAIRS_MAX_RUNS:
        return "all pairs", list(itertools.combinations(range(n_runs), 2))
    return "each vs the first", [(0, j) for j in range(1, n_runs)]


def _notes(runs: Sequence[_Run], unit: str) -> list[str]:
    notes = []
    reduction = runs[0].summary["contract"].get("reduction")
    if reduction == "global":
        notes.append("the table's Dice is pooled over all pixels (global); the paired test uses per-image Dice, so its means differ from the table")
    if reduction == "per_volume" and unit == "image":
        notes.append(f"no {runfs.VOLUMES_CSV}: the paired test uses per-image Dice while the table's Dice is per volume")
    n_pairs = len(_pairs(len(runs))[1])
    if n_pairs > 1:
        notes.append(
            f"{n_pairs} comparisons, each at alpha without correction for multiple comparisons: "
            "a 'better' verdict can appear by chance more often than alpha"
        )
    if unit == "image":
        n_groups = len(set(runs[0].case_ids.values()))
        if n_groups < len(runs[0].case_ids):
            notes.append(
                f"the {len(runs[0].case_ids)} images come from {n_groups} cases (case_id); the test treats images as independent, "
                "so its CI and p-value may be too optimistic"
            )
    return notes


def compare_runs(
    run_dirs: Sequence[Path],
    alpha: float = DEFAULT_ALPHA,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict:
    """Compare run folders; the JSON-serialisable result the CLI prints and writes.

    Args:
        run_dirs: two or more run folders; the first is the reference A.
        alpha: significance level of the verdicts.
        resamples: bootstrap resamples for the CI of the mean difference.
        seed: bootstrap seed (each pair uses it, so results are reproducible).

    Returns:
        {runs, contract, contract_text, metrics_version, config_diff, metrics, paired, notes};
        paired = {metric, unit, alpha, ci_level, resamples, seed, mode, pairs: [...]}, each pair
        with a, b, n, n_dropped_nan, mean_a, mean_b, mean_diff (B − A), ci_low, ci_high,
        p_value, verdict, better.

    Raises:
        MedsegError: fewer than two runs, a folder given twice, a folder that is not an
        evaluated run, different validation cases, or different metric contracts.
    """
    if len(run_dirs) < 2:
        raise MedsegError("compare: give at least two run folders")
    if not 0.0 < alpha < 1.0:
        raise MedsegError(f"compare --alpha: must be between 0 and 1 (got {alpha})")
    if resamples < 100:
        raise MedsegError(f"compare --resamples: at least 100 for a usable CI (got {resamples})")
    seen: dict = {}
    for d in run_dirs:
        resolved = Path(d).resolve()
        if resolved in seen:
            raise MedsegError(f"compare: {d} is given twice")
        seen[resolved] = d
    runs = [load_run(Path(d)) for d in run_dirs]
    names = [r.path.name for r in runs]
    if len(set(names)) == len(names):
        # folder names are unique here: short labels keep the tables readable (paths go in "paths")
        for r, n in zip(runs, names):
            r.label = n
    check_same_contract(runs)
    check_same_cases(runs)
    mode, pairs = _pairs(len(runs))
    unit = runs[0].unit
    ref = runs[0].summary
    return {
        "runs": [r.label for r in runs],
        "paths": [str(r.path) for r in runs],
        "contract": ref["contract"],
        "contract_text": ref.get("contract_text", ""),
        "metrics_version": ref.get("metrics_version"),
        "config_diff": config_diff(runs),
        "metrics": [{"run": r.label, **{k: r.summary.get(k) for k in METRIC_KEYS + MODEL_KEYS}} for r in runs],
        "paired": {
            "metric": PAIRED_METRIC,
            "unit": unit,
            "alpha": alpha,
            "ci_level": CI_LEVEL,
            "resamples": resamples,
            "seed": seed,
            "mode": mode,
            "pairs": [paired_comparison(runs[i].label, runs[i].scores, runs[j].label, runs[j].scores, alpha, resamples, seed)
                      for i, j in pairs],
        },
        "notes": _notes(runs, unit),
    }


def check_new_files(*paths: Optional[Path]) -> None:
    """Refuse before any work if an output file exists (nothing is ever overwritten)."""
    given = [Path(p) for p in paths if p is not None]
    for p in given:
        if p.exists():
            raise MedsegError(f"{p}: already exists (nothing is overwritten; choose a new file name)")
    if len({p.resolve() for p in given}) < len(given):
        raise MedsegError("compare: --out, --html and --json-file must name different files")


def write_reports(result: dict, markdown: Optional[Path] = None, html_path: Optional[Path] = None, json_path: Optional[Path] = None) -> list[Path]:
    """Write the requested files (each must not exist yet); returns the paths written."""
    check_new_files(markdown, html_path, json_path)
    written = []
    for path, text in ((markdown, lambda: to_markdown(result)), (html_path, lambda: to_html(result))):
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            with open(path, "x") as f:  # "x": fail rather than overwrite, even if created meanwhile
                f.write(text())
            written.append(Path(path))
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        runfs.write_json(Path(json_path), result)
        written.append(Path(json_path))
    return written
