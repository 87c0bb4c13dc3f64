"""The `medseg` command line: one small function per verb, parsing only; each calls one command.

Commands are imported inside the verb functions so that `medseg --help` and the re-exec for
tcmalloc start fast (torch is not imported until a verb needs it).
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

from medseg.errors import MedsegError

app = typer.Typer(
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
    no_args_is_help=True,
    rich_markup_mode="rich",
    help="medseg: train, evaluate and explain segmentation models for tiny medical targets.",
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

SET_HELP = "Override a config key, e.g. --set train.epochs=5 (repeatable; values are YAML)."
JSON_HELP = "Print one machine-readable JSON result on stdout (the human output stays on stderr)."
DEVICE_HELP = "Where the network runs: auto (CUDA when a GPU is visible, else the CPU), cpu, cuda or cuda:N."


class Part(str, Enum):
    val = "val"
    test = "test"


class Checkpoint(str, Enum):
    best = "best"
    last = "last"


class EmptyPolicy(str, Enum):
    one = "one"
    nan = "nan"
    zero = "zero"


class Reduction(str, Enum):
    per_image = "per_image"
    global_ = "global"


class Kind(str, Enum):
    hard = "hard"
    soft = "soft"


class ExportFormat(str, Enum):
    onnx = "onnx"
    torchscript = "torchscript"


class Severity(str, Enum):
    serious = "serious"
    warning = "warning"
    info = "info"


def _print_json(result: Any) -> None:
    """The --json result: one JSON document on stdout, NaN written as null (strict JSON readers refuse NaN)."""
    from medseg.runfolder import jsonable

    typer.echo(json.dumps(jsonable(result), indent=1))


def _device_sets(device: Optional[str]) -> list[str]:
    """--device for a verb that trains or plans: the train.accelerator / train.devices overrides it means."""
    from medseg.runtime import fit_device_overrides

    return [f"train.{k}={json.dumps(v)}" for k, v in fit_device_overrides(device).items()]


def _device_scope(device: Optional[str]):
    from medseg.runtime import device_scope

    return device_scope(device)


def _version(value: bool) -> None:
    if value:
        import medseg

        typer.echo(f"medseg {medseg.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print medseg's version and exit."),
):
    """medseg: train, evaluate and explain segmentation models for tiny medical targets."""


@app.command()
def fit(
    config: Optional[Path] = typer.Argument(None, help="YAML config (data, split, model, loss, optim, schedule, augment, train, eval)."),
    set_: list[str] = typer.Option([], "--set", "-s", help=SET_HELP),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run (or experiment) in this folder from where it stopped."),
    folds: Optional[int] = typer.Option(None, "--folds", help="Train a K-fold experiment (patient-grouped folds, out-of-fold tuning) instead of one run."),
    fold: Optional[int] = typer.Option(None, "--fold", help="With --resume EXPERIMENT: train only this fold (run folds on several devices at once)."),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP + " Sets train.accelerator (and train.devices for cuda:N)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide progress bars."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """Train a model into a new run folder (runs/NAME), then evaluate its model checkpoint; or a K-fold experiment (--folds K)."""
    from medseg import runfolder as runfs
    from medseg.commands.fit import fit as do_fit
    from medseg.config import load_config

    if resume is None and config is None:
        raise MedsegError("fit: give a CONFIG file, or --resume runs/NAME")
    if resume is not None and (config is not None or set_ or folds is not None):
        raise MedsegError("fit --resume: the run's saved config is used; drop CONFIG, --set and --folds")
    if fold is not None and (resume is None or not runfs.is_experiment(resume)):
        raise MedsegError("fit --fold: only with --resume EXPERIMENT (a folder made by fit --folds)")
    from medseg.training.distributed import launch

    # read before training: Lightning's teardown removes WORLD_SIZE from a child's environment
    follower = launch().rank > 0
    sets = set_ + _device_sets(device)
    with _device_scope(device):
        if resume is not None and runfs.is_experiment(resume):
            from medseg.commands.experiment import resume_experiment

            run_dir = resume_experiment(resume, fold=fold, console=console, progress=not no_progress)
        elif folds is not None:
            from medseg.commands.experiment import fit_experiment

            run_dir = fit_experiment(load_config(config, sets), folds, console=console, progress=not no_progress)
        else:
            cfg = load_config(config, sets) if resume is None else None
            run_dir = do_fit(cfg, resume=resume, console=console, progress=not no_progress, device=device)
    if follower:
        return  # a DDP rank other than 0 trained its share; rank 0 reports
    console.print(f"[bold green]{'experiment' if runfs.is_experiment(run_dir) else 'run'} folder: {run_dir}")
    if json_out:
        _print_json({"run": str(run_dir), "summary": runfs.read_json(run_dir / runfs.SUMMARY)})


@app.command()
def evaluate(
    run: Path = typer.Argument(..., help="Run folder."),
    data: Optional[Path] = typer.Option(None, "--data", help="YAML with a data: section to evaluate on instead of the run's validation split."),
    sweep: bool = typer.Option(False, "--sweep", help="Also sweep the threshold 0.05..0.95 and report the best."),
    split: Part = typer.Option(Part.val, "--split", help="Which cases of the run's split.json to score (results go to runs/NAME/evaluations/<split>)."),
    checkpoint: Optional[Checkpoint] = typer.Option(
        None, "--checkpoint", help="Default: the run's model, the file its train.checkpoint names (what tune, predict and export "
        "use). best: the monitor's best epoch; last: the final epoch's weights. A file other than the run's model writes "
        "evaluations/<split>-best or -last."),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide progress bars."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """Recompute validation metrics from the run's model checkpoint (checked against what training reported).

    Raw numbers follow the metric contract; when the run was tuned (postprocess.json) the
    post-processed pipeline is scored beside them.
    """
    from medseg.commands.evaluate import evaluate_run

    from medseg import runfolder as runfs

    if split != Part.val and data is not None:
        raise MedsegError("evaluate: use either --data or --split test, not both")
    if runfs.is_experiment(run):
        from medseg.commands.experiment import evaluate_experiment

        if checkpoint is not None:
            raise MedsegError(f"{run}: --checkpoint scores one run; an experiment scores each member's model (its train.checkpoint)")
        with _device_scope(device):
            s = evaluate_experiment(run, data, part="test", console=console, progress=not no_progress)
        if json_out:
            _print_json(s)
        return
    with _device_scope(device):
        s = evaluate_run(run, data, sweep=sweep, console=console, progress=not no_progress, part=split.value,
                         checkpoint=checkpoint.value if checkpoint is not None else None)
    if json_out:
        _print_json(s)
    tr = s.get("training_reported")
    if tr and not tr["match"]:
        why = f"; the validation data changed since training ({s['data_changed']})" if s.get("data_changed") else ""
        raise MedsegError(f"{run}: recomputed dice {s['dice']:.6f} differs from training's {tr['dice']:.6f}{why}; "
                          f"the new figures are in {s['written_to']}, the run's own are unchanged")


@app.command()
def predict(
    paths: list[Path] = typer.Argument(..., metavar="RUN... INPUT OUTPUT", help="One or more run or experiment folders (an ensemble: "
                                       "their probabilities averaged), then the input (an image folder, a NIfTI/NRRD volume or "
                                       "folder of them, a DICOM folder) and a new output folder (must not exist or be empty)."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Binarisation threshold (default: the run's contract)."),
    tta: bool = typer.Option(False, "--tta", help="Average with horizontally flipped predictions."),
    raw: bool = typer.Option(False, "--raw", help="Ignore the run's tuned post-processing (postprocess.json): threshold only."),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """Write probability maps and binary masks at the input's own size and geometry.

    Masks use the run's tuned post-processing (threshold, small components removed) when
    `medseg tune` (or fit) wrote one; --threshold or --raw use a bare threshold instead.
    """
    from medseg.commands.predict import predict_run

    if len(paths) < 3:
        raise MedsegError("predict: give RUN [RUN ...] INPUT OUTPUT")
    *runs, input, output = paths
    with _device_scope(device):
        out = predict_run(runs if len(runs) > 1 else runs[0], input, output, threshold=threshold, tta=tta, console=console, raw=raw)
    console.print(f"[bold green]predictions: {out}")
    if json_out:
        _print_json({"output": str(out), **json.loads((out / "prediction.json").read_text())})


@app.command("config")
def config_cmd(
    reference: bool = typer.Option(False, "--reference", help="Print every key with type, default and meaning."),
    markdown: bool = typer.Option(False, "--markdown", help="With --reference: print the Markdown table (docs/CONFIG.md)."),
    check: Optional[Path] = typer.Option(None, "--check", help="Validate this config file and print it resolved."),
    set_: list[str] = typer.Option([], "--set", "-s", help=SET_HELP),
):
    """Show the config reference, or validate and resolve a config file."""
    from medseg.config import dump_config, load_config, reference_markdown, reference_rows

    if reference:
        if markdown:
            typer.echo(reference_markdown(), nl=False)
            return
        from medseg.commands.console import print_reference

        print_reference(Console(), reference_rows())
        return
    if check is not None or set_:
        typer.echo(dump_config(load_config(check, set_)), nl=False)
        return
    raise MedsegError("config: use --reference, or --check FILE")


@app.command()
def metrics(
    pred_dir: Path = typer.Argument(..., help="Folder of predicted masks or probability maps."),
    truth_dir: Path = typer.Argument(..., help="Folder of binary truth masks (matched by file stem)."),
    threshold: float = typer.Option(0.5, "--threshold", help="Probability threshold (hard metrics)."),
    empty: EmptyPolicy = typer.Option(EmptyPolicy.one, "--empty", help="What an empty prediction on an empty truth scores."),
    reduction: Reduction = typer.Option(Reduction.per_image, "--reduction", help="Mean over images, or pooled pixels (per-volume: give 3D files)."),
    kind: Kind = typer.Option(Kind.hard, "--kind", help="Threshold first (hard), or use the probabilities (soft)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for cases.csv and summary.json."),
):
    """Score a folder of predictions against a folder of truths under a stated metric contract."""
    from medseg.commands.metrics import metrics_command

    metrics_command(pred_dir, truth_dir, threshold=threshold, empty=empty.value, reduction=reduction.value, kind=kind.value, out=out,
                    console=Console())


@app.command()
def demo(
    output_dir: Path = typer.Option(Path("runs"), "--output-dir", help="Where the demo run folder goes."),
    minutes: float = typer.Option(3.0, "--minutes", help="Training budget in minutes (the plan sets epochs and batch size from it)."),
    data: Optional[Path] = typer.Option(None, "--data", help="The demo data folder (default: demo_data/busi of the repository)."),
    volumes: bool = typer.Option(False, "--volumes", help="Instead: the 2.5D CT/MR volume demo on the pyradiomics 3.0.1 volumes (downloaded)."),
    epochs: int = typer.Option(30, "--epochs", help="--volumes: training epochs."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="--volumes: cache folder for the downloaded data (default ~/.cache/medseg)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide progress bars."),
):
    """Train the default recipe on the BUSI ultrasound subset in the repository, score its held-out images, report, summarise.

    With --volumes: download the pyradiomics 3.0.1 CT/MR volumes and run the 2.5D pipeline end to end
    (three training volumes: a pipeline demonstration, not a useful model).
    """
    if volumes:
        from medseg.commands.demo_volumes import run_volume_demo

        run_volume_demo(output_dir=output_dir, epochs=epochs, cache=cache, console=console)
        return
    from medseg.commands.demo import run_demo

    run_demo(output_dir=output_dir, minutes=minutes, data=data, console=console, progress=not no_progress)


@app.command()
def models():
    """List the model names accepted by model.name, with their output stride."""
    from medseg.commands.models import list_models

    for line in list_models():
        typer.echo(line)


@app.command()
def compare(
    runs: list[Path] = typer.Argument(..., help="Two or more run folders; the first is the reference A."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the comparison as Markdown to this new file."),
    html: Optional[Path] = typer.Option(None, "--html", help="Also write a self-contained HTML page (inline CSS) to this new file."),
    json_path: Optional[Path] = typer.Option(None, "--json-file", help="Also write the full result as JSON to this new file."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
    alpha: float = typer.Option(0.05, "--alpha", help="Significance level: a run is 'better' only if p < alpha and the CI excludes 0."),
    resamples: int = typer.Option(10_000, "--resamples", help="Bootstrap resamples for the CI of the mean Dice difference."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed (same runs + seed give the same CI)."),
):
    """Compare runs: config differences, metrics with their contract, paired per-case Dice tests."""
    from medseg.commands.compare import check_new_files, compare_runs, write_reports
    from medseg.commands.console import print_comparison

    check_new_files(out, html, json_path)  # refuse before any work, never overwrite
    result = compare_runs(runs, alpha=alpha, resamples=resamples, seed=seed)
    print_comparison(console if json_out else Console(), result)
    for path in write_reports(result, markdown=out, html_path=html, json_path=json_path):
        console.print(f"[bold green]wrote {path}")
    if json_out:
        _print_json(result)


@app.command("augment-preview")
def augment_preview(
    config: Path = typer.Argument(..., help="YAML config; its data, split, seed and augment sections are used."),
    out: Path = typer.Option(Path("augment_preview.png"), "--out", help="New PNG file to write (never overwritten)."),
    n: int = typer.Option(8, "--n", help="Training images to show, those with foreground first (one row each)."),
    variants: int = typer.Option(5, "--variants", help="Augmented versions per image (columns after the original)."),
    set_: list[str] = typer.Option([], "--set", "-s", help=SET_HELP),
):
    """Draw training images beside augmented versions, mask outlines on, to check the augmentation."""
    from medseg.commands.augment_preview import write_augment_preview
    from medseg.config import load_config

    path = write_augment_preview(load_config(config, set_), out, n=n, variants=variants)
    console.print(f"[bold green]augmentation preview: {path}")


@app.command()
def report(
    run: Path = typer.Argument(..., help="Run folder."),
    no_predict: bool = typer.Option(False, "--no-predict", help="Do not run the checkpoint (no overlays; threshold curve only from metrics/threshold_sweep.json)."),
    no_doctor: bool = typer.Option(False, "--no-doctor", help="Leave out the doctor's findings."),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
):
    """(Re)write the run's report: report.html (self-contained), report.md and report_assets/ in the run folder."""
    from medseg.commands.report import report_run

    with _device_scope(device):
        report_run(run, console=console, predict=not no_predict, doctor=not no_doctor)


@app.command()
def doctor(
    run: Path = typer.Argument(..., help="Run folder to diagnose."),
    json_file: Optional[Path] = typer.Option(None, "--json-file", help="Also write the ranked findings to this new JSON file (a list of dicts)."),
    no_eval: bool = typer.Option(False, "--no-eval", help="Read only the run's files; do not reload the data and run the checkpoint on validation."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
    fail_on: Optional[Severity] = typer.Option(None, "--fail-on", help="Exit with code 1 when a finding of this severity or worse is found (for CI pipelines)."),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
):
    """Diagnose a run: ranked findings with the numbers measured, why they matter, the config key to change and a confidence."""
    from medseg.commands.doctor import doctor_command, failing

    with _device_scope(device):
        findings = doctor_command(run, json_out=json_file, evaluate=not no_eval, console=console if json_out else Console(), status=console)
    if json_out:
        _print_json([dict(rank=i, **f.to_dict()) for i, f in enumerate(findings, 1)])
    if fail_on is not None and failing(findings, fail_on.value):
        console.print(f"[bold red]doctor: findings at or above '{fail_on.value}' (--fail-on)")
        raise typer.Exit(1)


@app.command()
def cache(
    config: Path = typer.Argument(..., help="YAML config: its data section is prepared into the cache (data.cache_dir, or --dir)."),
    set_: list[str] = typer.Option([], "--set", "-s", help=SET_HELP),
    dir_: Optional[Path] = typer.Option(None, "--dir", help="The cache folder (overrides data.cache_dir); fit, evaluate, tune, predict, doctor and report read it when data.cache_dir names it."),
    no_masks: bool = typer.Option(False, "--no-masks", help="Cache the images alone, as predict reads them (an input folder without masks)."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Processes preparing units in parallel (default: the usable cores, at most 8; 1: this process alone)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide progress bars."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """Prepare a dataset once (read, normalise, resize) into the on-disk cache; a killed build continues, changed files are redone."""
    from medseg.commands.cache import cache_command

    result = cache_command(config, set_, cache_dir=dir_, with_masks=not no_masks, progress=not no_progress, console=console,
                           workers=workers)
    if json_out:
        _print_json(result.to_dict())


@app.command("plan")
def plan_cmd(
    config: Path = typer.Argument(..., help="YAML config: its data and split are fingerprinted, its unset keys planned."),
    set_: list[str] = typer.Option([], "--set", "-s", help=SET_HELP),
    out: Path = typer.Option(Path("plan"), "--out", help="Folder for fingerprint.json, plan.json and the planned config.yaml (existing files are never overwritten)."),
    no_measure: bool = typer.Option(False, "--no-measure", help="Estimate the step cost by a formula instead of timing training steps on this machine."),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP + " The device fit will train on: its memory and step cost."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide progress bars."),
):
    """Fingerprint the dataset and plan input size, batch size, sampler, loss, augmentation and epochs, with reasons."""
    from medseg.commands.plan import plan_command

    folder = plan_command(config, set_ + _device_sets(device), out, measure=False if no_measure else None, console=Console(),
                          progress=not no_progress)
    console.print(f"[bold green]plan: {folder}")


@app.command()
def tune(
    run: Path = typer.Argument(..., help="Run folder."),
    force: bool = typer.Option(False, "--force", help="Replace an existing postprocess.json."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override a postprocess.* key for this tuning, e.g. --set postprocess.min_gain=0.01."),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide progress bars."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """Tune post-processing (threshold, minimum component size, keep-largest) on the run's validation cases.

    Writes runs/NAME/postprocess.json and postprocess.csv; evaluate and predict then apply the
    rule. fit runs this itself when postprocess.tune is true (the default).
    """
    from medseg.commands.tune import tune_run

    from medseg import runfolder as runfs

    if any(not s.startswith("postprocess.") for s in set_):
        raise MedsegError("tune --set: only postprocess.* keys can be changed here")
    if runfs.is_experiment(run):
        from medseg.commands.experiment import tune_experiment

        if set_:
            raise MedsegError("tune --set: not for an experiment (its config.yaml holds the postprocess.* keys)")
        with _device_scope(device):
            result = tune_experiment(run, console=console, force=force)
    else:
        with _device_scope(device):
            result = tune_run(run, console=console, force=force, progress=not no_progress, overrides=set_)
    if json_out:
        _print_json({k: v for k, v in result.items() if k != "rows"})


@app.command()
def export(
    run: Path = typer.Argument(..., help="Run folder (its model checkpoint, per train.checkpoint, is exported)."),
    format: ExportFormat = typer.Option(ExportFormat.onnx, "--format", help="onnx (checked with onnxruntime; needs medseg[export]) or torchscript."),
    out: Optional[Path] = typer.Option(None, "--out", help="New (or empty) folder for the model and model.json (default runs/NAME/exports/FORMAT)."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """Export the run's network as a self-contained ONNX or TorchScript model with a sidecar JSON (preprocessing, tuned rule)."""
    from medseg.commands.export import SIDECAR, export_run

    folder = export_run(run, format.value, out, console=console)
    if json_out:
        _print_json({"folder": str(folder), **json.loads((folder / SIDECAR).read_text())})


# verbs that run a network: worth a faster allocator
_HEAVY_VERBS = {"fit", "tune", "evaluate", "predict", "demo", "plan", "report", "doctor", "export"}


def _preload_tcmalloc(argv: list[str]) -> None:
    """Re-execute once with tcmalloc preloaded for the verbs that run a network (see `runtime.preload_tcmalloc`)."""
    from medseg.runtime import preload_tcmalloc

    preload_tcmalloc(argv, _HEAVY_VERBS)


def entry() -> None:
    """The `medseg` console script: the fast allocator first, then the command line."""
    _preload_tcmalloc(sys.argv)
    main()


def _usage_error_type() -> type:
    # typer >= 0.28 carries its own copy of click, older typer uses click itself: either way BadParameter is a UsageError
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def main() -> None:
    usage_error = _usage_error_type()
    try:
        # prog_name: the usage says `medseg` also when re-executed as `python -m medseg.cli` for tcmalloc;
        # standalone_mode=False: a usage error reaches us, to be said in one line like every other bad input
        code = app(prog_name="medseg", standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)  # as click's standalone mode: always by SystemExit
    except usage_error as e:
        where = e.ctx.command_path if e.ctx is not None else "medseg"
        msg = " ".join(e.format_message().split())
        if not msg:  # no arguments at all: the help was shown, as click does
            sys.exit(2)
        console.print(f"[bold red]error:[/] {escape(where)}: {escape(msg)} (see {escape(where)} --help)", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Abort:
        console.print("[yellow]interrupted")
        sys.exit(130)
    except MedsegError as e:
        msg = " ".join(str(e).split())  # one line, always
        # escaped: a message may hold brackets (pip install 'medseg[mlflow]') that rich would read as markup
        console.print(f"[bold red]error:[/] {escape(msg)}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted")
        sys.exit(130)


if __name__ == "__main__":
    entry()
