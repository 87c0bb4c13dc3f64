"""CLI conventions: --version, completion, choices in --help, --json on stdout, doctor --fail-on."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys

import pytest

import medseg
from medseg import runfolder as runfs
from tests.conftest import make_blob_folder, tiny_config, write_config


def cli(*args) -> tuple[int, str, str]:
    from medseg import cli as medseg_cli

    out, err = io.StringIO(), io.StringIO()
    argv, sys.argv = sys.argv, ["medseg", *map(str, args)]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            medseg_cli.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 0
    finally:
        sys.argv = argv
    return code, out.getvalue(), err.getvalue()


def test_version_is_the_package_version():
    from importlib.metadata import version

    code, out, _ = cli("--version")
    assert code == 0 and out.strip() == f"medseg {medseg.__version__}" == f"medseg {version('medseg')}"


def test_shell_completion_script():
    proc = subprocess.run([sys.executable, "-m", "medseg.cli", "--show-completion", "bash"], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"})
    assert proc.returncode == 0 and "complete" in proc.stdout and "medseg" in proc.stdout.lower(), proc.stderr


@pytest.mark.parametrize("verb, choices", [
    ("evaluate", "val|test"), ("metrics", "one|nan|zero"), ("metrics", "per_image|global"), ("export", "onnx|torchscript"),
    ("doctor", "serious|warning|info"),
])
def test_choices_are_listed_in_help(verb, choices):
    code, out, _ = cli(verb, "--help")
    assert code == 0 and choices in out.replace(" ", "")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from medseg.commands.fit import fit
    from medseg.config import config_from_dict

    tmp = tmp_path_factory.mktemp("conv")
    data = make_blob_folder(tmp / "d", n=12)
    return fit(config_from_dict(tiny_config(data, tmp / "runs", train__epochs=2, schedule__warmup_epochs=0)), progress=False), data


@pytest.mark.slow
def test_json_results_are_one_document_on_stdout(run, tmp_path):
    run_dir, data = run
    docs = {}
    for name, args in {
        "evaluate": ("evaluate", run_dir, "--json"),
        "tune": ("tune", run_dir, "--force", "--json"),
        "predict": ("predict", run_dir, data / "images", tmp_path / "pred", "--json"),
        "doctor": ("doctor", run_dir, "--no-eval", "--json"),
        "compare": ("compare", run_dir, run_dir.parent / "t-copy", "--json", "--resamples", "200"),
        "export": ("export", run_dir, "--format", "torchscript", "--out", tmp_path / "exp", "--json"),
    }.items():
        if name == "compare":
            import shutil

            shutil.copytree(run_dir, run_dir.parent / "t-copy")
        code, out, err = cli(*args)
        assert code == 0, (name, err[-2000:])
        docs[name] = json.loads(out)  # the whole of stdout is one JSON document
    assert docs["evaluate"]["dice"] == runfs.read_json(sorted(run_dir.glob("evaluations/val*"))[-1] / runfs.SUMMARY_NAME)["dice"]
    assert docs["tune"]["chosen"] == runfs.read_json(run_dir / runfs.POSTPROCESS)["chosen"] and "rows" not in docs["tune"]
    assert docs["predict"]["n_images"] == 12 and docs["predict"]["output"] == str(tmp_path / "pred")
    assert isinstance(docs["doctor"], list) and all({"rank", "severity", "title"} <= set(f) for f in docs["doctor"])
    assert docs["compare"]["paired"]["pairs"][0]["mean_diff"] == 0.0
    assert docs["export"]["format"] == "torchscript"


@pytest.mark.slow
def test_fit_json(tmp_path):
    data = make_blob_folder(tmp_path / "d", n=8)
    path = write_config(tmp_path / "c.yaml", tiny_config(data, tmp_path / "runs", train__epochs=1, schedule__warmup_epochs=0))
    code, out, err = cli("fit", path, "--no-progress", "--json")
    assert code == 0, err[-2000:]
    doc = json.loads(out)
    assert doc["run"] == str(tmp_path / "runs" / "t") and doc["summary"]["contract_text"]


@pytest.mark.slow
def test_doctor_fail_on_gates_on_severity(run):
    from medseg.commands.doctor import failing
    from medseg.doctor import Finding

    run_dir, _ = run
    code, out, _ = cli("doctor", run_dir, "--no-eval", "--json")
    severities = {f["severity"] for f in json.loads(out)}
    for floor, at in (("serious", {"serious"}), ("warning", {"serious", "warning"}), ("info", {"serious", "warning", "info"})):
        code, _, err = cli("doctor", run_dir, "--no-eval", "--fail-on", floor)
        assert code == (1 if severities & at else 0), (floor, severities, err)
    made = [Finding(id=f"data.{s}", family="data", severity=s, confidence=1.0, impact=1.0, title=s, evidence="", why="", fix_key=None,
                    fix_value=None) for s in ("info", "warning")]
    assert [f.severity for f in failing(made, "warning")] == ["warning"] and failing(made, "serious") == []
