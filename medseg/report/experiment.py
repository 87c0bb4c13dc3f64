"""The experiment's report: out-of-fold metrics under the contract, the tuning, the TTA sets, each fold."""

from __future__ import annotations

import io
import math
from pathlib import Path

from medseg import runfolder as runfs
from medseg.report.build import write_report
from medseg.report.context import fmt
from medseg.report.model import Figure, Note, Report, Section, Table


def _tuning_curve(rows: list[dict], chosen: dict, candidate: dict) -> bytes:
    """Dice against the threshold for the area, largest-only and gate of the candidate rule, and the best at each threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    same = [r for r in rows if r["min_area"] == candidate["min_area"] and r["keep_largest"] == candidate["keep_largest"]
            and r["min_score"] == candidate["min_score"]]
    same.sort(key=lambda r: r["threshold"])
    ax.plot([r["threshold"] for r in same], [r["dice"] for r in same], "o-", label="the candidate's area, largest-only and gate")
    best = {}
    for r in rows:
        if math.isfinite(r["dice"]) and r["dice"] > best.get(r["threshold"], -1):
            best[r["threshold"]] = r["dice"]
    ts = sorted(best)
    ax.plot(ts, [best[t] for t in ts], "s--", alpha=0.7, label="best rule at each threshold")
    ax.axvline(chosen["threshold"], color="grey", lw=0.8)
    ax.set_xlabel("pixel threshold")
    ax.set_ylabel("out-of-fold Dice")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def build_experiment_report(experiment: Path, doc: dict, summary: dict, tuning: dict) -> Path:
    """Write report.html, report.md and report_assets/ into the experiment folder; returns report.html."""
    contract = summary["contract_text"]
    pp, honest = summary["postprocessed"], tuning["honest"]
    metrics = ("dice", "dice_nonempty", "lesion_recall", "fp_rate_empty", "hd95")
    result = Section("result", "Out-of-fold result", [
        Table(["", *metrics], [
            ["raw network", *(fmt(summary.get(k)) for k in metrics)],
            [f"rule chosen on all OOF: {pp['rule_text']}", *(fmt(pp.get(k)) for k in metrics)],
        ], f"{summary['n_cases']} cases, each predicted by the fold that did not train on it; metric contract: {contract}"),
        Note(f"Leave-one-fold-out (the rule chosen on k-1 folds, scored on the held-out fold): Dice {fmt(honest['tuned_dice'])} "
             f"against {fmt(honest['raw_dice'])} raw, gain {fmt(honest['gain'])} (95% CI {fmt(honest['ci_low'])} to "
             f"{fmt(honest['ci_high'])}). {tuning['reason']}."),
    ])
    tta = Section("tta", "Test-time augmentation", [
        Table(["transforms", "passes", "best tuned Dice", "gain over raw"],
              [["+".join(r["tta"]), str(r["n_transforms"]), fmt(r["best_dice"]), fmt(r["gain"])] for r in tuning.get("tta_sets", [])],
              tuning.get("tta_reason", "")),
    ])
    curve = Section("tuning", "Tuning curve", [
        Figure("tuning_curve", _tuning_curve(tuning["rows"], tuning["chosen"], tuning["candidate"]),
               f"Out-of-fold Dice of the post-processing candidates against the threshold ({contract})."),
    ])
    folds = Section("folds", "Folds", [
        Table(["fold", "run", "validation cases", "rule chosen without it", "raw on it", "that rule on it"],
              [[str(f["fold"]), runfs.fold_dir(experiment, f["fold"]).name, str(len(f["val"])), pf["rule_text"], fmt(pf["raw_dice"]),
                fmt(pf["tuned_dice"])] for f, pf in zip(doc["folds"], honest["per_fold"])],
              f"Each fold run has its own report in its folder; {len(doc['test'])} test cases were held out of every fold."),
    ])
    report = Report(title=f"medseg experiment: {experiment.name}", subtitle=f"{doc['k']} folds · {contract} · {experiment.resolve()}",
                    sections=[result, tta, curve, folds])
    write_report(experiment, report)
    return experiment / runfs.REPORT_HTML
