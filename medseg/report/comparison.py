"""`medseg compare`'s result as a report: the same tables for the console, Markdown and HTML."""

from __future__ import annotations

import json
import math
from typing import Any

from medseg.metrics.paired import A_BETTER, B_BETTER
from medseg.report.html import render_html
from medseg.report.markdown import render_markdown
from medseg.report.model import Note, Report, Section, Table

# Metrics shown in the table, in this order (all from metrics/summary.json).
METRIC_KEYS = ("dice", "iou", "dice_nonempty", "fp_rate_empty", "lesion_recall", "hd95", "n_cases")
# Which weights each run's figures come from: summary.json holds ``best_epoch`` (best.ckpt) or ``epoch`` (last.ckpt).
MODEL_KEYS = ("best_epoch", "epoch")
# Config keys that differ between any two runs by construction and say nothing about the method.
IGNORED_CONFIG_KEYS = ("name", "output_dir")
VERDICT_CLASS = {B_BETTER: "b-better", A_BETTER: "a-better"}


def _fmt_value(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def _fmt_metric(key: str, v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if key == "n_cases":
        return str(int(v))
    if key in ("hd95",):
        return f"{v:.2f}"
    return f"{v:.4f}"


def model_label(m: dict) -> str:
    """'best 12' or 'last 35' (train.checkpoint: last), from a run's summary keys; '—' where neither is recorded."""
    if m.get("epoch") is not None:
        return f"last {int(m['epoch'])}"
    if m.get("best_epoch") is not None:
        return f"best {int(m['best_epoch'])}"
    return "—"


def _fmt_p(p: float) -> str:
    if p is None or math.isnan(p):
        return "—"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _fmt_signed(x: float) -> str:
    return "—" if x is None or math.isnan(x) else f"{x:+.4f}"


def comparison_sections(result: dict) -> list[Section]:
    """Config differences, metrics with their contract, the paired tests and the notes, as report sections."""
    labels = result["runs"]
    diff_rows = [[d["key"], *(_fmt_value(v) for v in d["values"])] for d in result["config_diff"]]
    ignored = ", ".join(IGNORED_CONFIG_KEYS)
    paired = result["paired"]
    pct = f"{paired['ci_level']:.0%}"
    pair_rows, pair_classes = [], []
    for p in paired["pairs"]:
        pair_rows.append([
            p["a"], p["b"], str(p["n"]), str(p["n_dropped_nan"]), _fmt_metric("dice", p["mean_a"]), _fmt_metric("dice", p["mean_b"]),
            _fmt_signed(p["mean_diff"]), f"[{_fmt_signed(p['ci_low'])}, {_fmt_signed(p['ci_high'])}]", _fmt_p(p["p_value"]),
            p["verdict"] + (f" ({p['better']})" if p["better"] else ""),
        ])
        pair_classes.append(VERDICT_CLASS.get(p["verdict"], ""))
    sections = [
        Section("config", "config differences", [Table(
            ["key", *labels], diff_rows,
            f"only keys that differ (ignoring {ignored})" if diff_rows else f"configs are identical (ignoring {ignored})",
        )]),
        Section("metrics", "metrics", [Table(
            ["run", *METRIC_KEYS, "model (epoch)"],
            [[m["run"], *(_fmt_metric(k, m[k]) for k in METRIC_KEYS), model_label(m)] for m in result["metrics"]],
            f"metric contract: {result['contract_text']} (metrics version {result['metrics_version']}); "
            "model: the best epoch's weights or the last epoch's (train.checkpoint)",
        )]),
        Section("paired", f"paired per-{paired['unit']} {paired['metric']} ({paired['mode']})", [Table(
            ["A", "B", "n", "dropped (NaN)", "mean A", "mean B", "mean B − A", f"{pct} CI", "Wilcoxon p", "verdict"], pair_rows,
            f"B − A on the same {paired['unit']}s, NaN pairs dropped; {pct} percentile bootstrap CI "
            f"({paired['resamples']} resamples, seed {paired['seed']}); two-sided Wilcoxon signed-rank; "
            f"'better' only if the CI excludes 0 and p < {paired['alpha']:g} (alpha). "
            f"Metric contract: {result['contract_text']}",
            row_classes=pair_classes,
        )]),
    ]
    if result["notes"]:
        sections.append(Section("notes", "notes", [Note(n, warn=True) for n in result["notes"]]))
    return sections


def comparison_report(result: dict) -> Report:
    runs = ", ".join(result["runs"])
    return Report(title=f"medseg compare: {runs}", subtitle=" · ".join(result.get("paths") or result["runs"]),
                  sections=comparison_sections(result))


def to_markdown(result: dict) -> str:
    """The comparison as a Markdown document (pipe tables)."""
    return render_markdown(comparison_report(result))


def to_html(result: dict) -> str:
    """The comparison as one self-contained HTML page (the report's inline CSS, no external resources)."""
    return render_html(comparison_report(result))
