"""Experiment tracking: TensorBoard by default, MLflow with the optional extra `medseg[mlflow]`.

With `track: mlflow` a fit is mirrored into one MLflow run:

- at the start: params (the flattened resolved config) and tags (the metric contract text,
  the run folder, the medseg version);
- every epoch: the numeric columns of metrics/epochs.csv at step=epoch (the engine hands its
  epoch row to every Lightning logger, so the MLflow logger receives it like TensorBoard does);
- at the end: summary.json's numeric values as ``final/<key>`` and the report, metrics files,
  config, plan and fingerprint as artifacts.

The store is `tracking.uri`, or by default ``sqlite:///<output_dir>/mlflow.db`` with artifacts in
``<output_dir>/mlartifacts``. The MLflow run id is kept in ``<run>/tracking.json``, so
``medseg fit --resume`` continues the same MLflow run.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Any, Optional

from rich.console import Console
from rich.markup import escape

import medseg
from medseg import runfolder as runfs
from medseg.config import Config
from medseg.errors import MedsegError

TRACKING_JSON = runfs.TRACKING
CONTRACT_TAG = "medseg.contract"
FINAL_PREFIX = "final/"
# run-folder files uploaded as artifacts at the end, at the same relative paths
ARTIFACT_FILES = (runfs.CONFIG, runfs.PLAN, runfs.FINGERPRINT, runfs.SPLIT, runfs.STATE, runfs.REPORT_HTML, runfs.REPORT_MD)
ARTIFACT_DIRS = (runfs.REPORT_ASSETS,)
INSTALL_HINT = "track: mlflow needs the optional extra: pip install 'medseg[mlflow]'"

log = logging.getLogger("medseg.tracking")


def require_backend(cfg: Config) -> None:
    """Fail with a one-line error, before any run folder exists, when the tracking backend is not installed.

    Args:
        cfg: the validated config (its `track` key is checked).
    """
    if cfg.track != "mlflow":
        return
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise MedsegError(INSTALL_HINT) from None


def tracking_uri(cfg: Config, run_dir: Path) -> str:
    """The MLflow store for this run: `tracking.uri`, else the SQLite file beside the run folders.

    The default derives from the run folder's parent (which is output_dir), not from
    cfg.output_dir, so a resumed run finds its store from any working directory.
    """
    if cfg.tracking.uri:
        return cfg.tracking.uri
    return f"sqlite:///{Path(run_dir).resolve().parent / 'mlflow.db'}"


def artifact_root(uri: str) -> Optional[str]:
    """Where a new experiment keeps artifacts: ``mlartifacts/`` beside a SQLite store; a server decides otherwise."""
    if not uri.startswith("sqlite:///"):
        return None
    db = uri[len("sqlite:///"):].split("?", 1)[0]
    if db in ("", ":memory:"):
        return None
    return (Path(db).resolve().parent / "mlartifacts").as_uri()


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {"a.b.c": leaf}; lists, empty dicts and other leaves are kept as they are."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_params(cfg: Config) -> dict[str, str]:
    """The resolved config as MLflow params: dotted keys, text values as they are, the rest as JSON (0.01, [8, 16], null)."""
    params = {}
    for key, value in flatten(cfg.model_dump(mode="json")).items():
        # user-named keys (loss terms, augment overrides) may hold characters MLflow refuses in a key
        safe_key = re.sub(r"[^\w\-. /]", "_", key)
        params[safe_key] = value if isinstance(value, str) else json.dumps(value)
    return params


def final_metrics(summary: dict) -> dict[str, float]:
    """summary.json's numeric values (nested dicts flattened, the contract itself left out) keyed final/<key>."""
    numbers = {}
    for key, value in flatten({k: v for k, v in summary.items() if k != "contract"}).items():
        # bools are ints to Python but flags, not measurements; null is a NaN written by run.write_json
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            numbers[FINAL_PREFIX + key] = float(value)
    return numbers


def make_loggers(cfg: Config, run_dir: Path, console: Optional[Console] = None) -> list:
    """The Lightning loggers for `cfg.track`; for MLflow this also opens (or, on resume, reopens) the MLflow run.

    Args:
        cfg: the resolved config (after the plan), whose values become the MLflow params.
        run_dir: the run folder; tracking.json there holds the MLflow run id.
        console: where to print notes.
    """
    if cfg.track == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        return [TensorBoardLogger(str(run_dir / runfs.LOGS), name="", version="tensorboard", default_hp_metric=False)]
    if cfg.track != "mlflow":
        return []
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank != 0:
        return []  # one MLflow run per fit: only the main process talks to the store
    require_backend(cfg)
    from lightning.pytorch.loggers import MLFlowLogger

    uri = tracking_uri(cfg, run_dir)
    try:
        run_id, experiment = _open_run(cfg, run_dir, uri, console or Console(stderr=True))
    except MedsegError:
        raise
    except Exception as e:  # noqa: BLE001 — a store that cannot be reached is a config problem, said in one line
        raise MedsegError(f"tracking.uri: MLflow store {uri} failed: {_one_line(e)}") from None
    return [MLFlowLogger(experiment_name=experiment, tracking_uri=uri, run_id=run_id)]


def finish(cfg: Config, run_dir: Path, console: Optional[Console] = None) -> None:
    """Log the final metrics and upload the report and metrics files to the run's MLflow run.

    Never raises: the run folder holds everything, so a store that fails now costs only the mirror.

    Args:
        cfg: the run's config.
        run_dir: the finished run folder (summary.json and the report written).
        console: where to print where the run was logged.
    """
    if cfg.track != "mlflow":
        return
    console = console or Console(stderr=True)
    uri = tracking_uri(cfg, run_dir)
    try:
        saved = runfs.read_json(run_dir / TRACKING_JSON)
        run_id = saved["run_id"]
        client = _client(uri)
        _log_final(client, run_id, run_dir)
        client.set_terminated(run_id, "FINISHED")
    except Exception as e:  # noqa: BLE001
        log.warning("mlflow: final upload failed", exc_info=True)
        console.print(f"[yellow]MLflow: final metrics/artifacts not logged ({escape(_one_line(e))}); the run folder {run_dir} has them")
        return
    console.print(f"MLflow: run {run_id} in experiment '{escape(saved.get('experiment', ''))}' at {escape(uri)} (view: mlflow ui --backend-store-uri {escape(uri)})")


def _open_run(cfg: Config, run_dir: Path, uri: str, console: Console) -> tuple[str, str]:
    """(run id, experiment name): the run recorded in tracking.json when it still exists, else a new one."""
    from mlflow.entities import Param, RunStatus

    client = _client(uri)
    path = run_dir / TRACKING_JSON
    run = None
    if path.is_file():
        saved = runfs.read_json(path)
        try:
            run = client.get_run(saved["run_id"])
        except Exception:  # noqa: BLE001 — gone from the store (deleted, store moved): log into a fresh run
            console.print(f"[yellow]MLflow run {saved.get('run_id')} from {path} is not in {uri}; starting a new MLflow run")
        else:
            client.update_run(run.info.run_id, status=RunStatus.to_string(RunStatus.RUNNING))
    if run is None:
        experiment_id = _experiment_id(client, cfg.tracking.experiment or cfg.name, uri)
        tags = {
            CONTRACT_TAG: cfg.eval.contract.describe(),
            "medseg.run_dir": str(Path(run_dir).resolve()),
            "medseg.version": medseg.__version__,
        }
        run = client.create_run(experiment_id, run_name=Path(run_dir).name, tags=tags)
    experiment = client.get_experiment(run.info.experiment_id).name
    runfs.write_json(path, {"backend": "mlflow", "tracking_uri": uri, "experiment": experiment,
                            "experiment_id": run.info.experiment_id, "run_id": run.info.run_id})
    # a resumed run already has its params (same saved config); MLflow refuses to change a logged param
    have = set(run.data.params)
    limit = _param_value_limit()
    params = [Param(k, v[:limit]) for k, v in config_params(cfg).items() if k not in have]
    for chunk in _chunks(params, 100):  # MLflow's per-request limit on params
        client.log_batch(run.info.run_id, params=chunk)
    return run.info.run_id, experiment


def _experiment_id(client, name: str, uri: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None and found.lifecycle_stage == "deleted":
        raise MedsegError(f"tracking.experiment: '{name}' is deleted in {uri}; restore it (mlflow experiments restore) or choose another name")
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_root(uri))
    except Exception:
        found = client.get_experiment_by_name(name)  # a concurrent fit created it first
        if found is None:
            raise
        return found.experiment_id


def _log_final(client, run_id: str, run_dir: Path) -> None:
    from mlflow.entities import Metric

    summary_path = run_dir / runfs.SUMMARY
    if summary_path.is_file():
        summary = runfs.read_json(summary_path)
        # final numbers belong to the model checkpoint, so they sit at its epoch on the curves (best, or last)
        epoch = summary.get("best_epoch", summary.get("epoch"))
        step = epoch if isinstance(epoch, int) else 0
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in final_metrics(summary).items()]
        for chunk in _chunks(metrics, 1000):  # MLflow's per-request limit on metrics
            client.log_batch(run_id, metrics=chunk)
        if summary.get("contract_text"):
            # the text the numbers were computed under (evaluate may differ from the config's at start)
            client.set_tag(run_id, CONTRACT_TAG, summary["contract_text"])
    for name in ARTIFACT_FILES:
        if (run_dir / name).is_file():
            client.log_artifact(run_id, str(run_dir / name))
    metric_files = sorted(p for p in (run_dir / runfs.METRICS).glob("*") if p.suffix in (".csv", ".json") and p.is_file())
    for p in metric_files:
        client.log_artifact(run_id, str(p), artifact_path=runfs.METRICS)
    for name in ARTIFACT_DIRS:
        if (run_dir / name).is_dir():
            client.log_artifacts(run_id, str(run_dir / name), artifact_path=name)


def _client(uri: str):
    # a new SQLite store announces its schema migration on stderr; that is MLflow's business, not the user's
    for noisy in ("mlflow.store.db.utils", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _param_value_limit() -> int:
    try:
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        return int(MAX_PARAM_VAL_LENGTH)
    except ImportError:
        return 500  # older MLflow's limit


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _one_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__
