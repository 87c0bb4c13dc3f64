"""track: mlflow — a tiny fit read back from the local SQLite store; resume continues the same MLflow run;
a missing mlflow package is a one-line error before any run folder exists."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest

from medseg import runfolder as runfs
from medseg.commands.fit import fit
from medseg.config import config_from_dict
from medseg.training.tracking import CONTRACT_TAG, TRACKING_JSON, artifact_root, final_metrics, flatten
from tests.conftest import make_blob_folder, tiny_config, write_config


def _numeric_columns(rows: list[dict]) -> set[str]:
    """Columns with a number in some row (an empty text column reads back as all-NaN, so NaN does not count)."""
    numeric = {k for r in rows for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)}
    return numeric - {"epoch", "step"}


@pytest.mark.slow
def test_mlflow_run_mirrors_the_run_folder_and_resume_continues_it(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")  # no network from tests
    monkeypatch.chdir(tmp_path)  # anything MLflow wrote relative to the working directory would land here
    data = make_blob_folder(tmp_path / "data", n=12)
    out = tmp_path / "runs"
    cfg = config_from_dict(tiny_config(data, out, track="mlflow", optim__lr=0.0123, train__epochs=2))
    run_dir = fit(cfg, progress=False)

    saved = runfs.read_json(run_dir / TRACKING_JSON)
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    run = client.get_run(saved["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == run_dir.name
    assert client.get_experiment(run.info.experiment_id).name == cfg.name

    # params: the flattened resolved config
    params = run.data.params
    assert float(params["optim.lr"]) == 0.0123
    assert params["train.epochs"] == "2" and params["model.name"] == "unet" and params["model.channels"] == "[8, 16, 32]"
    assert float(params["loss.bce"]) == 1.0

    # per-epoch metrics: every numeric epochs.csv column, one value per epoch at step=epoch
    epochs = runfs.read_csv(run_dir / runfs.EPOCHS_CSV)
    assert [int(r["epoch"]) for r in epochs] == [0, 1]
    missing = _numeric_columns(epochs) - set(run.data.metrics)
    assert not missing, missing
    for column in ("val_dice", "train_loss", "lr"):
        history = sorted(client.get_metric_history(run.info.run_id, column), key=lambda m: m.step)
        assert [m.step for m in history] == [0, 1], column
        assert [m.value for m in history] == pytest.approx([float(r[column]) for r in epochs], rel=1e-12, abs=0)

    # final metrics and the contract they were computed under
    summary = runfs.read_json(run_dir / runfs.SUMMARY)
    assert run.data.metrics["final/dice"] == pytest.approx(summary["dice"], rel=1e-12)
    assert run.data.metrics["final/n_cases"] == summary["n_cases"] == 3
    assert run.data.tags[CONTRACT_TAG] == summary["contract_text"] == cfg.eval.contract.describe()

    # artifacts: the report and metrics files, stored beside the SQLite store
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.html", "report.md", "config.yaml", "fingerprint.json", "metrics"} <= top
    in_metrics = {a.path for a in client.list_artifacts(run.info.run_id, "metrics")}
    assert {"metrics/epochs.csv", "metrics/cases.csv", "metrics/summary.json"} <= in_metrics
    artifacts_dir = Path(urlparse(run.info.artifact_uri).path)
    assert artifacts_dir.is_relative_to(out / "mlartifacts")
    assert (artifacts_dir / "report.html").read_bytes() == (run_dir / "report.html").read_bytes()
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlartifacts").exists()

    # resume: the same MLflow run, no second run, params not duplicated, per-epoch history not repeated
    # a run killed before it finished (a finished run refuses to resume): its resume continues the MLflow run
    state = runfs.read_json(run_dir / runfs.STATE)
    runfs.write_json(run_dir / runfs.STATE, {**state, "finished": False})
    assert fit(None, resume=run_dir, progress=False) == run_dir
    assert runfs.read_json(run_dir / TRACKING_JSON)["run_id"] == run.info.run_id
    runs = client.search_runs([run.info.experiment_id])
    assert [r.info.run_id for r in runs] == [run.info.run_id]
    assert runs[0].info.status == "FINISHED" and runs[0].data.params == params
    assert len(client.get_metric_history(run.info.run_id, "val_dice")) == 2


def test_missing_mlflow_is_a_one_line_error_before_any_run_folder(tmp_path, monkeypatch, capsys):
    from medseg.cli import main

    data = make_blob_folder(tmp_path / "data", n=8)
    cfg_path = write_config(tmp_path / "c.yaml", tiny_config(data, tmp_path / "runs"))
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` now raises ImportError
    monkeypatch.setattr(sys, "argv", ["medseg", "fit", str(cfg_path), "--set", "track=mlflow", "--no-progress"])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "track" in err and "medseg[mlflow]" in err
    assert not (tmp_path / "runs").exists()


def test_final_metrics_and_artifact_root():
    summary = {"dice": 0.5, "n_cases": 4, "contract": {"threshold": 0.5}, "contract_text": "hard@0.50",
               "training_reported": True, "hd95": None, "per_volume": {"dice": 0.25}, "threshold_sweep": [{"t": 0.1}]}
    assert final_metrics(summary) == {"final/dice": 0.5, "final/n_cases": 4.0, "final/per_volume.dice": 0.25}
    assert flatten({"a": {"b": 1, "c": {}}, "d": [1]}) == {"a.b": 1, "a.c": {}, "d": [1]}
    assert artifact_root("sqlite:////x/y/mlflow.db") == "file:///x/y/mlartifacts"
    assert artifact_root("http://host:5000") is None and artifact_root("sqlite:///:memory:") is None
