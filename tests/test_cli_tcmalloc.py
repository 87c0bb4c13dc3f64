"""The CLI re-executes itself once with tcmalloc preloaded for the verbs that run a network."""

from __future__ import annotations

import sys

import pytest

from medseg import cli, runtime


@pytest.fixture
def fake_exec(monkeypatch, tmp_path):
    lib = tmp_path / "libtcmalloc_minimal.so.4"
    lib.write_bytes(b"")
    monkeypatch.setattr(runtime, "_TCMALLOC_PATHS", (str(tmp_path / "absent.so"), str(lib)))
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.delenv("MEDSEG_TCMALLOC", raising=False)
    calls = []
    monkeypatch.setattr(runtime.os, "execve", lambda path, argv, env: calls.append((path, argv, env)))
    return lib, calls


def test_heavy_verb_reexecs_with_the_library_preloaded(fake_exec, monkeypatch):
    lib, calls = fake_exec
    monkeypatch.setenv("LD_PRELOAD", "/other/lib.so")
    cli._preload_tcmalloc(["medseg", "fit", "cfg.yaml", "--set", "train.epochs=2"])
    (path, argv, env), = calls
    assert path == sys.executable and argv[1:3] == ["-m", "medseg.cli"] and argv[3:] == ["fit", "cfg.yaml", "--set", "train.epochs=2"]
    assert env["LD_PRELOAD"] == f"{lib} /other/lib.so" and env["MEDSEG_TCMALLOC"] == "on"


@pytest.mark.parametrize("argv,env", [
    (["medseg", "compare", "a", "b"], {}),  # no network: not worth a re-exec
    (["medseg", "fit", "c.yaml"], {"MEDSEG_TCMALLOC": "off"}),  # the user opted out
    (["medseg", "fit", "c.yaml"], {"LD_PRELOAD": "/x/libtcmalloc.so"}),  # already preloaded: no loop
    (["medseg"], {}),
])
def test_no_reexec(fake_exec, monkeypatch, argv, env):
    _, calls = fake_exec
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    cli._preload_tcmalloc(argv)
    assert calls == []


def test_no_library_no_reexec(fake_exec, monkeypatch, tmp_path):
    _, calls = fake_exec
    monkeypatch.setattr(runtime, "_TCMALLOC_PATHS", (str(tmp_path / "absent.so"),))
    cli._preload_tcmalloc(["medseg", "fit", "c.yaml"])
    assert calls == []
