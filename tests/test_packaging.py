"""Packaging: every import declared, one version, the license, and the wheel installing and running in a fresh venv."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import sysconfig
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _imported_top_names() -> set[str]:
    names = set()
    for path in (ROOT / "medseg").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n != "medseg" and n not in sys.stdlib_module_names}


def test_every_imported_library_is_declared():
    declared = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    for extra in PYPROJECT["project"]["optional-dependencies"].values():
        declared |= {_name(r) for r in extra}
    dists = packages_distributions()
    missing = {}
    for module in _imported_top_names():
        providers = {d.lower().replace("_", "-") for d in dists.get(module, [module])}
        if not providers & declared:
            missing[module] = sorted(providers)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_one_version_and_the_license():
    import medseg
    from importlib.metadata import metadata, version

    assert PYPROJECT["project"]["dynamic"] == ["version"] and "version" not in PYPROJECT["project"]
    assert version("medseg") == medseg.__version__
    assert PYPROJECT["project"]["license"] == "Apache-2.0" and metadata("medseg")["License-Expression"] == "Apache-2.0"
    assert "Apache License" in (ROOT / "LICENSE").read_text() and (ROOT / "medseg" / "py.typed").is_file()


@pytest.mark.slow
def test_the_wheel_installs_and_runs_in_a_fresh_venv(tmp_path):
    wheels = tmp_path / "dist"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(ROOT)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("medseg-*.whl")
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert "medseg/py.typed" in names and not any(n.startswith(("tests/", "bench/", "demo_data/")) for n in names)
    assert any(n.endswith("licenses/LICENSE") for n in names)
    fresh = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(fresh)], check=True)
    # the dependencies come from this environment (a .pth line; no torch download), medseg only from the wheel
    site = Path(subprocess.run([fresh / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    inst = subprocess.run([sys.executable, "-m", "pip", "--python", str(fresh / "bin" / "python"), "install", "--no-deps", "-q", str(wheel)],
                          capture_output=True, text=True)
    assert inst.returncode == 0, inst.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    where = subprocess.run([fresh / "bin" / "python", "-c", "import medseg; print(medseg.__file__)"], capture_output=True, text=True,
                           env=env, cwd=tmp_path)
    assert str(site) in where.stdout, where.stdout + where.stderr
    run = subprocess.run([fresh / "bin" / "medseg", "--help"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert run.returncode == 0 and "Usage: medseg" in run.stdout, run.stderr[-2000:]
