"""The report's sections, each built from a `RunContext` into figures, tables and notes.

Plots come first and tables stay small: a reader should see how training went and where the
model fails before reading any setting. Every metric carries the metric contract text.
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable, Optional

from medseg.report import plots
from medseg.report.context import RunContext, fmt
from medseg.report.model import Figure, Note, Section, Table
from medseg.report.predictions import index_of, pick_cases

HEADLINE_OVERLAP = ("dice", "iou", "precision", "recall", "dice_nonempty", "soft_dice")
HEADLINE_DETECTION = ("fp_rate_empty", "lesion_recall", "lesion_precision", "hd95", "asd", "n_cases", "n_empty_truth", "n_empty_empty")
SIZE_BINS = ("small", "medium", "large")
PLAN_MAX_ROWS = 40


def contract_caption(ctx: RunContext) -> str:
    return f"metric contract: {ctx.contract_text}"


def _figure(name: str, png: Optional[bytes], caption: str, missing: str, blocks: list, wide: bool = False) -> None:
    blocks.append(Figure(name, png, caption, wide) if png else Note(missing))


# ---------------------------------------------------------------------------------------
# Results


def result_section(ctx: RunContext) -> Section:
    s = ctx.summary
    sec = Section("result", "Result")
    if not s:
        sec.blocks.append(Note("metrics/summary.json is missing: the run has not been evaluated (medseg evaluate RUN).", warn=True))
        return sec
    # one row per table, metric names as headers: the headline stays a glance, not a page
    epoch = f"best epoch {fmt(s.get('best_epoch'))}" if "epoch" not in s else f"last epoch {fmt(s.get('epoch'))} (train.checkpoint: last)"
    where = f"{epoch} on the {s.get('evaluated_on', 'validation split')}; {contract_caption(ctx)}"
    overlap = [(k, s[k]) for k in HEADLINE_OVERLAP if k in s]
    if isinstance(s.get("per_volume"), dict) and "dice" in s["per_volume"]:
        overlap.append(("dice per volume", s["per_volume"]["dice"]))
    detection = [(k, s[k]) for k in HEADLINE_DETECTION if k in s]
    for shown in (overlap, detection):
        if shown:
            sec.blocks.append(Table([k for k, _ in shown], [[fmt(v) for _, v in shown]], where))
    pp = s.get("postprocessed")
    if isinstance(pp, dict):
        shown = [(k, pp[k]) for k in HEADLINE_OVERLAP + HEADLINE_DETECTION if k in pp]
        sec.blocks.append(Table(
            [k for k, _ in shown], [[fmt(v) for _, v in shown]],
            f"post-processed: {pp.get('rule_text', '')}, which replaces the threshold (chosen by medseg tune on these validation "
            f"cases, so optimistic here; confirm with medseg evaluate RUN --split test); {contract_caption(ctx)}",
        ))
    tr = s.get("training_reported")
    if isinstance(tr, dict):
        if tr.get("match"):
            sec.blocks.append(Note(f"Recomputed Dice matches what training reported at epoch {tr['epoch']} (difference {tr['abs_diff']:.1e})."))
        else:
            sec.blocks.append(Note(
                f"Recomputed Dice {fmt(s.get('dice'))} DIFFERS from the {fmt(tr.get('dice'))} training reported "
                f"at epoch {tr.get('epoch')}: the numbers cannot be trusted until this is explained.", warn=True,
            ))
    return sec


def training_section(ctx: RunContext) -> Section:
    sec = Section("training", "Training curves")
    if not ctx.epochs:
        sec.blocks.append(Note("metrics/epochs.csv is missing or empty: no epoch finished.", warn=True))
        return sec
    _figure("loss", plots.loss_curves(ctx.epochs, ctx.best_epoch), "Train and validation loss per epoch; dashed: training loss terms.",
            "No loss values in metrics/epochs.csv.", sec.blocks)
    _figure("metrics", plots.metric_curves(ctx.epochs, ctx.contract_text, ctx.best_epoch),
            f"Validation metrics per epoch (soft Dice uses probabilities, no threshold); {contract_caption(ctx)}",
            "No validation metrics in metrics/epochs.csv.", sec.blocks)
    _figure("lr", plots.lr_curve(ctx.epochs), "Learning rate at the end of each epoch.", "No lr column in metrics/epochs.csv.", sec.blocks)
    nonfinite = sum(int(r["nonfinite_steps"]) for r in ctx.epochs if isinstance(r.get("nonfinite_steps"), float) and math.isfinite(r["nonfinite_steps"]))
    if nonfinite:
        sec.blocks.append(Note(f"{nonfinite} optimiser steps had a non-finite loss and were skipped.", warn=True))
    return sec


def validation_section(ctx: RunContext) -> Section:
    sec = Section("validation", "Validation: threshold, per-case Dice, lesion sizes")
    threshold = ctx.cfg.eval.contract.threshold
    tables = []  # after the figures, so the plots sit side by side
    if ctx.sweep:
        caption = f"Hard metrics at each threshold (from {ctx.sweep_source}); {contract_caption(ctx)} except the threshold."
        _figure("threshold", plots.threshold_curve(ctx.sweep, threshold), caption, "The threshold sweep has no rows.", sec.blocks)
        best = ctx.sweep.get("best_threshold")
        tables.append(Table(
            ["threshold sweep", "threshold", ctx.sweep.get("metric", "dice")],
            [["in use", f"{threshold:.2f}", fmt(_sweep_value(ctx.sweep, threshold))],
             ["best", fmt(best), fmt(ctx.sweep.get("best_value"))]],
            contract_caption(ctx),
        ))
        if ctx.sweep.get("warning"):
            tables.append(Note(f"Threshold sweep: {ctx.sweep['warning']}", warn=True))
    else:
        tables.append(Note(f"No threshold curve: {ctx.preds_error or 'no validation predictions'}."))
    _figure("dice_hist", plots.dice_histogram(ctx.cases, ctx.contract_text), f"Dice of each validation case at the best epoch; {contract_caption(ctx)}",
            "metrics/cases.csv is missing or has no Dice values.", sec.blocks)
    bins = lesion_bins(ctx)
    _figure("lesion_recall", plots.lesion_recall_bars(bins, ctx.contract_text),
            f"Share of truth lesions found, by lesion area in pixels at network input ({_bin_edges(ctx)}); {contract_caption(ctx)}",
            "metrics/summary.json has no lesion recall by size.", sec.blocks)
    sec.blocks += tables
    return sec


def _sweep_value(sweep: dict, threshold: float) -> Optional[float]:
    metric = sweep.get("metric", "dice")
    for r in sweep.get("rows", []):
        if abs(float(r["threshold"]) - threshold) < 1e-9:
            return r.get(metric)
    return None


def _bin_edges(ctx: RunContext) -> str:
    a, b = (list(ctx.cfg.eval.contract.lesion_size_bins) + [None, None])[:2]
    return f"small < {a:g} ≤ medium < {b:g} ≤ large" if a is not None and b is not None else "size bins per the contract"


def lesion_bins(ctx: RunContext) -> list[tuple[str, Optional[float], int]]:
    """(bin, recall or None, truth lesions) for each size bin the summary reports."""
    out = []
    for name in SIZE_BINS:
        key = f"lesion_recall_{name}"
        if key in ctx.summary:
            recall = ctx.summary[key]
            n = ctx.summary.get(f"n_lesions_truth_{name}")
            out.append((name, float(recall) if recall is not None else None, int(n) if n is not None else 0))
    return out


def cases_section(ctx: RunContext) -> Section:
    sec = Section("cases", "Best and worst validation cases")
    best, worst = pick_cases(ctx.cases)
    if not best and not worst:
        sec.blocks.append(Note("metrics/cases.csv is missing or has no Dice values."))
        return sec
    chosen = [("worst", r) for r in worst] + [("best", r) for r in best]
    rows = [[tag, str(r["case"]), fmt(r.get("dice")), fmt(r.get("n_lesions_truth")), fmt(r.get("n_lesions_found")), fmt(r.get("fp"))]
            for tag, r in chosen]
    if ctx.preds is None:
        sec.blocks.append(Note(f"No overlays: {ctx.preds_error or 'the checkpoint was not run'}."))
    else:
        cases = []
        for tag, r in chosen:
            i = index_of(ctx.preds, str(r["case"]))
            if i is not None:
                label = f"{tag}: {r['case']}\nDice {fmt(r.get('dice'), 3)}"
                image = ctx.preds.images[i]
                if ctx.volumetric:
                    # 2.5D: the channels are neighbouring slices and the mask belongs to the centre one
                    image = image[image.shape[0] // 2][None]
                cases.append(plots.OverlayCase(label, image, ctx.preds.masks[i], ctx.preds.probs[i]))
        _figure("overlays", plots.overlays(cases, ctx.cfg.eval.contract.threshold, ctx.contract_text),
                f"Image; truth (orange); predicted probability; prediction (cyan) with the truth outlined in red. {contract_caption(ctx)}",
                "None of these cases is among the validation images any more.", sec.blocks, wide=True)
    sec.blocks.append(Table(["", "case", "Dice", "truth lesions", "found", "false-positive px"], rows, contract_caption(ctx)))
    return sec


def batches_section(ctx: RunContext) -> Section:
    sec = Section("batches", "Realised batch composition")
    pos = ctx.state.get("pos_fraction_train")
    pos = float(pos) if isinstance(pos, (int, float)) else None
    _figure("batches", plots.batch_composition(ctx.epochs, pos),
            "What the sampler actually fed the network: share of images with a lesion in each batch, and share of lesion pixels.",
            "metrics/epochs.csv has no batch composition columns.", sec.blocks, wide=True)
    if pos is not None:
        sec.blocks.append(Note(f"Lesion pixels are {pos:.4%} of all training pixels."))
    return sec


# ---------------------------------------------------------------------------------------
# Doctor


def doctor_section(ctx: RunContext, findings: Optional[list[dict]], error: str = "") -> Section:
    sec = Section("doctor", "Doctor's findings")
    if findings is None:
        sec.blocks.append(Note(error or "doctor not available"))
        return sec
    if not findings:
        sec.blocks.append(Note("The doctor found nothing to flag."))
        return sec
    rows = []
    for f in findings:
        fix = f"{f.get('fix_key')} = {_cell(f.get('fix_value'))}" if f.get("fix_key") else "—"
        rows.append([str(f.get("severity", "")), str(f.get("title", "")), _cell(f.get("evidence")), str(f.get("why", "")), fix,
                     fmt(f.get("confidence"), 2)])
    classes = [f"sev-{f.get('severity', '')}" for f in findings]
    sec.blocks.append(Table(["severity", "finding", "evidence", "why", "suggested fix", "confidence"], rows, contract_caption(ctx), classes))
    return sec


def _cell(v: Any) -> str:
    if isinstance(v, (dict, list)):
        if isinstance(v, dict):
            return "; ".join(f"{k}: {fmt(x)}" for k, x in v.items())
        return json.dumps(v)
    return fmt(v)


# ---------------------------------------------------------------------------------------
# Settings and data


def config_section(ctx: RunContext) -> Section:
    c, st = ctx.cfg, ctx.state
    loss = ", ".join(f"{k} {fmt(v)}" if not isinstance(v, dict) else f"{k} ({fmt(v)})" for k, v in c.loss.items())
    opt = f"{c.optim.name}, lr {c.optim.lr:g}, weight decay {c.optim.weight_decay:g}" + (f", momentum {c.optim.momentum:g}" if c.optim.name == "sgd" else "")
    sch = c.schedule
    schedule = f"{sch.name}, warm-up {sch.warmup_epochs:g} epochs" + (f", floor {sch.min_lr_ratio:g}× peak" if sch.name in ("cosine", "poly") else "")
    aug = c.augment.preset + (f" (overrides: {fmt(c.augment.overrides)})" if c.augment.overrides else "")
    t = c.train
    run_epochs = len(ctx.epochs)
    early = f", early stopping patience {t.early_stopping.patience}" if t.early_stopping.patience else ""
    batch = f"{t.batch_size} × accumulate {t.accumulate} = {t.batch_size * t.accumulate} per optimiser step"
    if t.steps_per_epoch:
        batch += f", {t.steps_per_epoch} micro-batches per epoch"
    model = f"{c.model.name}, channels {fmt(c.model.channels)}, res units {c.model.res_units}, dropout {c.model.dropout:g}"
    if c.model.pretrained:
        model += f", pretrained from {c.model.pretrained}"
    split = c.split.mode + (f", fold {c.split.fold} of {c.split.folds}" if c.split.mode == "kfold" else
                            f", val {c.split.val_fraction:g}, test {c.split.test_fraction:g}" if c.split.mode == "holdout" else f", {c.split.file}")
    rows = [
        ["model", model],
        ["loss", loss],
        ["optimiser", opt],
        ["schedule", schedule],
        ["augmentation", aug],
        ["epochs", f"{t.epochs} max, {run_epochs} run, "
                   + (f"best {fmt(ctx.summary.get('best_epoch'))}" if t.checkpoint == "best" else "the last is the model (train.checkpoint: last)")
                   + early],
        ["batch", batch],
        ["precision", f"{st.get('precision', '—')} (config: {t.precision})"],
        ["monitor", t.monitor],
        ["data", f"{c.data.source} from {c.data.root}, input {c.data.input_size[0]}×{c.data.input_size[1]} ({c.data.resize_mode}), "
                 f"normalise {c.data.normalize.mode}"],
        ["split", split],
        ["metric contract", ctx.contract_text],
        ["seed", str(c.seed)],
        ["versions", f"medseg {st.get('medseg_version', '—')}, torch {st.get('torch_version', '—')}; {st.get('machine', '')}"],
    ]
    sec = Section("config", "Configuration and plan")
    sec.blocks.append(Table(["setting", "value"], rows, "Key settings from config.yaml (the full resolved config is in the run folder)."))
    if ctx.plan is None:
        sec.blocks.append(Note("No plan.json in the run folder."))
    else:
        flat = list(_flatten(ctx.plan))
        shown = [[k, fmt(v)] for k, v in flat[:PLAN_MAX_ROWS]]
        more = f" (first {PLAN_MAX_ROWS} of {len(flat)} entries)" if len(flat) > PLAN_MAX_ROWS else ""
        sec.blocks.append(Table(["plan", "value"], shown, f"plan.json{more}"))
    return sec


def _flatten(obj: Any, prefix: str = ""):
    if isinstance(obj, dict) and obj:
        for k, v in obj.items():
            yield from _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    else:
        yield prefix or "value", obj


def _quantiles(d: Any, pct: bool = False) -> str:
    if not isinstance(d, dict) or "q50" not in d:
        return fmt(d)
    f: Callable[[Any], str] = (lambda v: f"{v:.2%}" if isinstance(v, (int, float)) else fmt(v)) if pct else (lambda v: fmt(v, 3))
    return f"median {f(d['q50'])} (5–95%: {f(d.get('q05'))}–{f(d.get('q95'))})"


def data_section(ctx: RunContext) -> Section:
    sec = Section("data", "Dataset fingerprint")
    fp = ctx.fingerprint
    if not fp:
        sec.blocks.append(Note("fingerprint.json is missing."))
        return sec
    h, w = fp.get("orig_height") or {}, fp.get("orig_width") or {}
    sp = fp.get("spacing_row_col")
    spacing = f"{fmt(sp.get('q50'), 3)} × {fmt((sp.get('col') or {}).get('q50'), 3)} (median row × col)" if isinstance(sp, dict) else "—"
    rows = [
        ["source / modality", f"{fp.get('source', '—')} / {fp.get('modality', '—')}"],
        ["cases / images / volumes", f"{fmt(fp.get('n_cases'))} / {fmt(fp.get('n_images'))} / {fmt(fp.get('n_volumes'))}"],
        ["split sizes", fmt(fp.get("split_sizes"))],
        ["channels", fmt(fp.get("in_channels"))],
        ["original size (h × w)", f"{fmt(h.get('q50'))} × {fmt(w.get('q50'))} median, {fmt(h.get('q00'))}–{fmt(h.get('q100'))} × {fmt(w.get('q00'))}–{fmt(w.get('q100'))}"],
        ["network input", fmt(fp.get("input_size"))],
        ["pixel spacing", spacing],
        ["images without a lesion", f"{fp['empty_image_fraction']:.1%}" if isinstance(fp.get("empty_image_fraction"), (int, float)) else "—"],
        ["lesion pixels, images with a lesion", _quantiles(fp.get("foreground_fraction_positive"), pct=True)],
        ["lesion pixels, all images", f"{fp['foreground_fraction_all_pixels']:.3%}" if isinstance(fp.get("foreground_fraction_all_pixels"), (int, float)) else "—"],
        ["lesions (total / per image mean)", f"{fmt(fp.get('n_lesions'))} / {fmt((fp.get('lesions_per_image') or {}).get('mean'), 3)}"],
        ["lesion area at input (px)", _quantiles(fp.get("lesion_area_px_at_input"))],
        ["mask values", f"{fmt(fp.get('raw_mask_values'))}" + ("" if fp.get("mask_values_binary01", True) else " (not 0/1: > 0 is foreground)")],
        ["bad files skipped", fmt(fp.get("n_bad_files"))],
    ]
    sec.blocks.append(Table(["statistic", "value"], rows, "From fingerprint.json (all statistics in the file)."))
    return sec
