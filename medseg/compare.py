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

import csv
import html
import itertools
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from rich.console import Console
from rich.table import Table

from medseg import run as runfs
from medseg.config import read_yaml
from medseg.errors import MedsegError

# Config keys that differ between any two runs by construction and say nothing about the method.
IGNORED_CONFIG_KEYS = ("name", "output_dir")
# Metrics shown in the table, in this order (all from metrics/summary.json).
METRIC_KEYS = ("dice", "iou", "dice_nonempty", "fp_rate_empty", "lesion_recall", "hd95", "best_epoch", "n_cases")
PAIRED_METRIC = "dice"
DEFAULT_ALPHA = 0.05
DEFAULT_RESAMPLES = 10_000
CI_LEVEL = 0.95
# Up to this many runs every pair is compared; beyond, each run is compared with the first
# (the number of pairs, and so of chances for a false "better", grows quadratically).
ALL_PAIRS_MAX_RUNS = 4
ABSENT = "(absent)"

B_BETTER, A_BETTER, NO_DIFFERENCE, NOT_TESTABLE = "B better", "A better", "no detectable difference", "not testable"


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


def _read_scores(path: Path, key: str) -> tuple[dict, dict]:
    """{key value: Dice} and {key value: case_id} from a per-case CSV, keys kept as strings.

    runfs.read_csv would turn a case named "001" into 1.0, so the key column is read raw.
    """
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        if key not in fields or PAIRED_METRIC not in fields:
            raise MedsegError(f"{path}: needs columns '{key}' and '{PAIRED_METRIC}' (has: {', '.join(fields) or 'none'})")
        scores: dict = {}
        case_ids: dict = {}
        for row in reader:
            name = row[key]
            if name in scores:
                raise MedsegError(f"{path}: {key} '{name}' appears twice")
            text = (row[PAIRED_METRIC] or "").strip()
            try:
                scores[name] = float(text) if text else float("nan")  # write_csv writes NaN as ""
            except ValueError:
                raise MedsegError(f"{path}: {key} '{name}': {PAIRED_METRIC} '{text}' is not a number") from None
            case_ids[name] = row.get("case_id") or name
    if not scores:
        raise MedsegError(f"{path}: no rows")
    return scores, case_ids


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
    scores, case_ids = _read_scores(cases_csv, "case")
    unit = "image"
    volumes_csv = path / runfs.VOLUMES_CSV
    # Under a per-volume contract the reported Dice is a mean over volumes, and slices of one
    # volume are not independent: pair volumes, so the test matches the number in the table.
    if summary["contract"].get("reduction") == "per_volume" and volumes_csv.is_file():
        scores, _ = _read_scores(volumes_csv, "volume")
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
# Statistics


def bootstrap_mean_ci(diffs: np.ndarray, resamples: int = DEFAULT_RESAMPLES, seed: int = 0, level: float = CI_LEVEL) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean of `diffs`.

    Resampling indices are drawn as one (resamples, n) stream from default_rng(seed), in
    chunks so memory stays bounded for large n (chunking does not change the draws).

    Args:
        diffs: paired differences (no NaN).
        resamples: bootstrap resamples.
        seed: seed of numpy's default_rng; the same inputs always give the same interval.
        level: coverage, e.g. 0.95.
    """
    d = np.asarray(diffs, dtype=float)
    n = d.size
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 4_000_000 // n)
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        means[start:stop] = d[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def wilcoxon_p(diffs: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value; 1.0 when every difference is zero, NaN for n=0."""
    from scipy.stats import wilcoxon

    d = np.asarray(diffs, dtype=float)
    if d.size == 0:
        return float("nan")
    if not np.any(d != 0):
        return 1.0  # identical scores: scipy would raise, but "no difference at all" is the answer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-n / ties notes; the p-value is still what we report
        return float(wilcoxon(d, alternative="two-sided").pvalue)


def verdict(ci_low: float, ci_high: float, p_value: float, alpha: float) -> str:
    """The plain verdict: a run is better only when the CI excludes 0 AND p < alpha.

    Returns "B better", "A better", "no detectable difference", or "not testable" (no pairs).
    """
    if any(math.isnan(x) for x in (ci_low, ci_high, p_value)):
        return NOT_TESTABLE
    if p_value < alpha and ci_low > 0:
        return B_BETTER
    if p_value < alpha and ci_high < 0:
        return A_BETTER
    return NO_DIFFERENCE


def paired_comparison(a: _Run, b: _Run, alpha: float, resamples: int, seed: int) -> dict:
    """Paired per-case Dice of B vs A on their shared cases (rows matched by case / volume)."""
    keys = sorted(a.scores)
    da = np.array([a.scores[k] for k in keys], dtype=float)
    db = np.array([b.scores[k] for k in keys], dtype=float)
    keep = ~(np.isnan(da) | np.isnan(db))
    diffs = db[keep] - da[keep]
    ci_low, ci_high = bootstrap_mean_ci(diffs, resamples, seed)
    p = wilcoxon_p(diffs)
    v = verdict(ci_low, ci_high, p, alpha)
    return {
        "a": a.label,
        "b": b.label,
        "n": int(diffs.size),
        "n_dropped_nan": int((~keep).sum()),
        "mean_a": float(da[keep].mean()) if diffs.size else float("nan"),
        "mean_b": float(db[keep].mean()) if diffs.size else float("nan"),
        "mean_diff": float(diffs.mean()) if diffs.size else float("nan"),
        "ci_low": ci_low,
        "ci_high": ci_high,
        "p_value": p,
        "verdict": v,
        "better": b.label if v == B_BETTER else a.label if v == A_BETTER else None,
    }


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
        "metrics": [{"run": r.label, **{k: r.summary.get(k) for k in METRIC_KEYS}} for r in runs],
        "paired": {
            "metric": PAIRED_METRIC,
            "unit": unit,
            "alpha": alpha,
            "ci_level": CI_LEVEL,
            "resamples": resamples,
            "seed": seed,
            "mode": mode,
            "pairs": [paired_comparison(runs[i], runs[j], alpha, resamples, seed) for i, j in pairs],
        },
        "notes": _notes(runs, unit),
    }


# ---------------------------------------------------------------------------------------
# Presentation: one set of rows, three renderings (console, Markdown, HTML)


def _fmt_value(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def _fmt_metric(key: str, v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if key in ("best_epoch", "n_cases"):
        return str(int(v))
    if key in ("hd95",):
        return f"{v:.2f}"
    return f"{v:.4f}"


def _fmt_p(p: float) -> str:
    if p is None or math.isnan(p):
        return "—"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _fmt_signed(x: float) -> str:
    return "—" if x is None or math.isnan(x) else f"{x:+.4f}"


def _tables(result: dict) -> list[dict]:
    """The three tables as {title, caption, header, rows} (plain strings), shared by every renderer."""
    labels = result["runs"]
    diff_rows = [[d["key"], *(_fmt_value(v) for v in d["values"])] for d in result["config_diff"]]
    ignored = ", ".join(IGNORED_CONFIG_KEYS)
    paired = result["paired"]
    pct = f"{paired['ci_level']:.0%}"
    pair_rows = [
        [
            p["a"], p["b"], str(p["n"]), str(p["n_dropped_nan"]), _fmt_metric("dice", p["mean_a"]), _fmt_metric("dice", p["mean_b"]),
            _fmt_signed(p["mean_diff"]), f"[{_fmt_signed(p['ci_low'])}, {_fmt_signed(p['ci_high'])}]", _fmt_p(p["p_value"]),
            p["verdict"] + (f" ({p['better']})" if p["better"] else ""),
        ]
        for p in paired["pairs"]
    ]
    return [
        {
            "title": "config differences",
            "caption": f"only keys that differ (ignoring {ignored})" if diff_rows else f"configs are identical (ignoring {ignored})",
            "header": ["key", *labels],
            "rows": diff_rows,
        },
        {
            "title": "metrics",
            "caption": f"metric contract: {result['contract_text']} (metrics version {result['metrics_version']})",
            "header": ["run", *METRIC_KEYS],
            "rows": [[m["run"], *(_fmt_metric(k, m[k]) for k in METRIC_KEYS)] for m in result["metrics"]],
        },
        {
            "title": f"paired per-{paired['unit']} {paired['metric']} ({paired['mode']})",
            "caption": (
                f"B − A on the same {paired['unit']}s, NaN pairs dropped; {pct} percentile bootstrap CI "
                f"({paired['resamples']} resamples, seed {paired['seed']}); two-sided Wilcoxon signed-rank; "
                f"'better' only if the CI excludes 0 and p < {paired['alpha']:g} (alpha). "
                f"Metric contract: {result['contract_text']}"
            ),
            "header": ["A", "B", "n", "dropped (NaN)", "mean A", "mean B", "mean B − A", f"{pct} CI", "Wilcoxon p", "verdict"],
            "rows": pair_rows,
        },
    ]


def print_comparison(console: Console, result: dict) -> None:
    """Print the comparison as rich tables, then the notes."""
    for t in _tables(result):
        table = Table(title=t["title"], caption=t["caption"])
        for col in t["header"]:
            table.add_column(col, overflow="fold")
        for row in t["rows"]:
            table.add_row(*row, style=_row_style(row[-1]) if t["title"].startswith("paired") else None)
        console.print(table)
    for note in result["notes"]:
        console.print(f"[yellow]note:[/] {note}", highlight=False)


def _row_style(verdict_text: str) -> Optional[str]:
    return "green" if verdict_text.startswith(B_BETTER) else "red" if verdict_text.startswith(A_BETTER) else None


def to_markdown(result: dict) -> str:
    """The comparison as a Markdown document (pipe tables)."""
    cell = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = [f"# medseg compare: {', '.join(result['runs'])}", ""]
    for t in _tables(result):
        lines += [f"## {t['title']}", "", t["caption"], ""]
        if t["rows"]:
            lines.append("| " + " | ".join(cell(h) for h in t["header"]) + " |")
            lines.append("|" + "---|" * len(t["header"]))
            lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in t["rows"]]
            lines.append("")
    if result["notes"]:
        lines += ["## notes", ""] + [f"- {n}" for n in result["notes"]] + [""]
    return "\n".join(lines)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 0.3em}
th,td{border:1px solid #ccc;padding:0.3em 0.6em;text-align:right}
th:first-child,td:first-child{text-align:left}
th{background:#f2f2f2}
caption{caption-side:bottom;text-align:left;color:#555;font-size:0.9em;padding-top:0.3em}
tr.b-better td{background:#e6f4ea} tr.a-better td{background:#fde8e8}
.note{color:#8a5a00}
"""


def to_html(result: dict) -> str:
    """The comparison as one self-contained HTML page (inline CSS, no external resources)."""
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>medseg compare: {e(', '.join(result['runs']))}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>medseg compare: {e(', '.join(result['runs']))}</h1>",
    ]
    for t in _tables(result):
        parts.append(f"<h2>{e(t['title'])}</h2>")
        parts.append(f"<table><caption>{e(t['caption'])}</caption>")
        parts.append("<tr>" + "".join(f"<th>{e(h)}</th>" for h in t["header"]) + "</tr>")
        for row in t["rows"]:
            style = _row_style(row[-1]) if t["title"].startswith("paired") else None
            cls = {"green": ' class="b-better"', "red": ' class="a-better"'}.get(style or "", "")
            parts.append(f"<tr{cls}>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>")
        parts.append("</table>")
    if result["notes"]:
        parts.append("<h2>notes</h2><ul>" + "".join(f'<li class="note">{e(n)}</li>' for n in result["notes"]) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def check_new_files(*paths: Optional[Path]) -> None:
    """Refuse before any work if an output file exists (nothing is ever overwritten)."""
    given = [Path(p) for p in paths if p is not None]
    for p in given:
        if p.exists():
            raise MedsegError(f"{p}: already exists (nothing is overwritten; choose a new file name)")
    if len({p.resolve() for p in given}) < len(given):
        raise MedsegError("compare: --out, --html and --json must name different files")


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
