"""The run report: written by every fit, rebuilt by `medseg report`, self-contained, renders in Chromium."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg import runfolder as runfs
from medseg.commands.report import report_run
from medseg.config import config_from_dict
from medseg.report import build_report
from medseg.report.context import load_context
from medseg.report.predictions import pick_cases, predict_validation
from tests.conftest import make_blob_folder, tiny_config

CHROMIUM = Path("/usr/bin/chromium")
SECTION_IDS = ("result", "training", "validation", "cases", "batches", "doctor", "config", "data")
FIGURES = {"loss", "metrics", "lr", "threshold", "dice_hist", "lesion_recall", "overlays", "batches"}
METRIC_FIGURES = {"metrics", "threshold", "dice_hist", "lesion_recall", "overlays"}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> Path:
    """One real tiny run; its report is the one `fit` wrote. Tests that rebuild use a copy."""
    from medseg.commands.fit import fit

    root = tmp_path_factory.mktemp("report")
    make_blob_folder(root / "data", n=16, size=64)
    cfg = config_from_dict(tiny_config(root / "data", root / "runs"), root)
    return fit(cfg, progress=False)


@pytest.fixture
def run_copy(fitted, tmp_path) -> Path:
    dst = tmp_path / fitted.name
    shutil.copytree(fitted, dst)
    return dst


def _figures(html: str) -> dict[str, tuple[bytes, str]]:
    """{figure name: (decoded PNG, caption)} for every embedded figure."""
    found = re.findall(r'<figure id="fig-(\w+)"><img src="data:image/png;base64,([A-Za-z0-9+/=]+)"[^>]*><figcaption>(.*?)</figcaption>', html)
    return {name: (base64.b64decode(data), caption) for name, data, caption in found}


@pytest.mark.slow
def test_fit_writes_report_with_sections_and_embedded_images(fitted):
    html = (fitted / "report.html").read_text()
    md = (fitted / "report.md").read_text()
    for sid in SECTION_IDS:
        assert f'<section id="{sid}">' in html
    for title in ("## Result", "## Training curves", "## Best and worst validation cases", "## Realised batch composition",
                  "## Doctor's findings", "## Configuration and plan", "## Dataset fingerprint"):
        assert title in md
    figs = _figures(html)
    assert set(figs) == FIGURES
    assets = {p.stem: p.read_bytes() for p in (fitted / "report_assets").glob("*.png")}
    assert set(assets) == FIGURES
    for name, (png, _) in figs.items():
        assert png == assets[name], name  # the HTML embeds exactly the PNGs report.md links
        img = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float)
        assert img.shape[0] > 100 and img.shape[1] > 100 and img.std() > 5, name
    linked = re.findall(r"!\[[^\]]*\]\((report_assets/\w+\.png)\)", md)
    assert sorted(linked) == sorted(f"report_assets/{n}.png" for n in FIGURES)


def test_report_is_self_contained(fitted):
    html = (fitted / "report.html").read_text()
    refs = re.findall(r'\b(?:src|href)\s*=\s*["\']([^"\']*)["\']', html, flags=re.I)
    assert refs, "expected images and in-page links"
    assert all(r.startswith("data:image/png;base64,") or r.startswith("#") for r in refs), [r[:40] for r in refs if not r.startswith(("data:", "#"))]
    assert not re.search(r"(?:src|href)\s*=\s*[\"']?https?://", html, flags=re.I)
    assert "<script" not in html.lower() and "<link" not in html.lower() and "@import" not in html
    assert "http://" not in (fitted / "report.md").read_text() and "https://" not in (fitted / "report.md").read_text()


def test_every_metric_carries_the_contract(fitted):
    summary = runfs.read_json(fitted / runfs.SUMMARY)
    contract = summary["contract_text"]
    html = (fitted / "report.html").read_text()
    figs = _figures(html)
    for name in METRIC_FIGURES:
        assert contract in figs[name][1], name
    # every table caption of the result and validation sections names the contract
    for sid in ("result", "validation", "cases"):
        body = html.split(f'<section id="{sid}">', 1)[1].split("</section>", 1)[0]
        captions = re.findall(r'<div class="caption">(.*?)</div>', body)
        assert captions and all(contract in c for c in captions), sid
    # the headline shows summary.json's Dice
    result = html.split('<section id="result">', 1)[1].split("</section>", 1)[0]
    assert f"<td>{summary['dice']:.4g}</td>" in result


def test_report_sweep_agrees_with_evaluate(fitted):
    """The threshold curve the report computes, at the contract's threshold, is evaluate's Dice."""
    ctx = load_context(fitted)
    preds = predict_validation(fitted, ctx.cfg, ctx.state, keep=[r["case"] for r in ctx.cases])
    sweep = preds.sweep  # streamed over the chunks
    assert len(preds.sample_ids) == len(ctx.cases) == preds.n_images
    at_half = next(r for r in sweep["rows"] if abs(r["threshold"] - ctx.cfg.eval.contract.threshold) < 1e-9)
    assert at_half["dice"] == pytest.approx(ctx.summary["dice"], abs=1e-9)
    # independent per-case Dice at 0.5 for the cases the overlays show
    by_id = {r["case"]: r for r in ctx.cases}
    for i, sid in enumerate(preds.sample_ids):
        p, t = preds.probs[i] >= 0.5, preds.masks[i] > 0
        dice = 1.0 if not p.any() and not t.any() else 2 * (p & t).sum() / (p.sum() + t.sum())
        assert dice == pytest.approx(by_id[sid]["dice"], abs=1e-9)


def test_pick_cases():
    rows = [
        {"case": "a", "dice": 1.0, "truth_empty": "True"},
        {"case": "b", "dice": 0.9, "truth_empty": "False"},
        {"case": "c", "dice": 0.1, "truth_empty": "False"},
        {"case": "d", "dice": 0.0, "truth_empty": "True"},
        {"case": "e", "dice": float("nan"), "truth_empty": "True"},
        {"case": "f", "dice": 0.5, "truth_empty": "False"},
    ]
    best, worst = pick_cases(rows, per_side=2)
    assert [r["case"] for r in worst] == ["d", "c"]
    assert [r["case"] for r in best] == ["b", "f"]  # empty/empty "a" scores 1 but shows no lesion
    best, worst = pick_cases(rows[:2], per_side=3)
    assert len(best) == len(worst) == 1 and best[0]["case"] != worst[0]["case"]
    assert pick_cases([{"case": "x", "dice": float("nan")}]) == ([], [])


def test_cli_rewrites_report_and_uses_saved_sweep(run_copy, monkeypatch, capsys):
    from medseg.cli import main
    from medseg.metrics import threshold_sweep

    ctx = load_context(run_copy)
    preds = predict_validation(run_copy, ctx.cfg, ctx.state, keep=[r["case"] for r in ctx.cases], sweep=False)
    assert preds.sweep is None
    # a saved sweep with a different best threshold than the report would compute itself
    sweep = threshold_sweep(list(preds.probs), list(preds.masks), ctx.cfg.eval.contract, thresholds=[0.3, 0.5, 0.7])
    runfs.write_json(run_copy / "metrics/threshold_sweep.json", sweep)
    (run_copy / "report_assets" / "stale.png").write_bytes(b"old")
    runfs.write_json(run_copy / "plan.json", {"model": {"name": "unet", "channels": [8, 16]}, "batch_size": 12})
    monkeypatch.setattr(sys, "argv", ["medseg", "report", str(run_copy), "--no-predict", "--no-doctor"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code in (0, None)
    html = (run_copy / "report.html").read_text()
    figs = _figures(html)
    assert "overlays" not in figs and "threshold" in figs
    assert "metrics/threshold_sweep.json" in figs["threshold"][1]
    assert "No overlays: the checkpoint was not run" in html
    assert "doctor skipped" in html
    assert not (run_copy / "report_assets" / "stale.png").exists()
    assert "<td>model.channels</td><td>8, 16</td>" in html and "<td>batch_size</td><td>12</td>" in html
    assert "| model.name | unet |" in (run_copy / "report.md").read_text()
    validation = html.split('<section id="validation">', 1)[1].split("</section>", 1)[0]
    assert f"<td>{sweep['best_threshold']:.4g}</td>" in validation


def test_cli_rejects_non_run_folder(tmp_path, monkeypatch, capsys):
    from medseg.cli import main

    monkeypatch.setattr(sys, "argv", ["medseg", "report", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert "not a medseg run folder" in capsys.readouterr().err


@pytest.mark.slow
def test_doctor_findings_and_missing_doctor(run_copy, monkeypatch):
    class Finding:
        def to_dict(self):
            return {"id": "lr_high", "family": "optim", "severity": "warning", "confidence": 0.8,
                    "title": "Learning rate looks too high", "evidence": {"val_loss_rise": 0.3},
                    "why": "validation loss rises after warm-up", "fix_key": "optim.lr", "fix_value": 0.001}

    calls = []
    fake = types.ModuleType("medseg.doctor")
    fake.diagnose = lambda run_dir, evaluate=True, loaded=None: calls.append((Path(run_dir), evaluate)) or [Finding()]
    monkeypatch.setitem(sys.modules, "medseg.doctor", fake)
    report_run(run_copy, predict=False)
    html = (run_copy / "report.html").read_text()
    doctor = html.split('<section id="doctor">', 1)[1].split("</section>", 1)[0]
    assert calls == [(run_copy, True)]
    assert "Learning rate looks too high" in doctor and "optim.lr = 0.001" in doctor and "val_loss_rise: 0.3" in doctor
    assert "Learning rate looks too high" in (run_copy / "report.md").read_text()

    monkeypatch.setitem(sys.modules, "medseg.doctor", None)  # import fails like an absent package
    report_run(run_copy, predict=False)
    assert "doctor not available" in (run_copy / "report.html").read_text()


def test_report_of_an_unfinished_run_still_builds(run_copy):
    for name in (runfs.SUMMARY, runfs.EPOCHS_CSV, runfs.CASES_CSV, runfs.BEST_CKPT):
        (run_copy / name).unlink()
    build_report(run_copy)
    html = (run_copy / "report.html").read_text()
    assert "metrics/summary.json is missing" in html and "metrics/epochs.csv is missing" in html
    assert "could not run the checkpoint" in html and "no checkpoint" in html
    assert not _figures(html)
    assert '<section id="config">' in html and "unet, channels 8, 16, 32" in html


def test_report_failure_does_not_fail_fit(tmp_path, monkeypatch):
    import medseg.commands.report
    from medseg.commands.fit import fit

    def broken(*args, **kwargs):
        raise RuntimeError("report exploded")

    monkeypatch.setattr(medseg.commands.report, "build_report", broken)
    make_blob_folder(tmp_path / "data", n=8, size=32, seed=1)
    cfg = config_from_dict(tiny_config(tmp_path / "data", tmp_path / "runs", train__epochs=2,
                                       data__input_size=[32, 32]), tmp_path)
    run_dir = fit(cfg, progress=False)
    assert (run_dir / runfs.SUMMARY).is_file() and not (run_dir / "report.html").exists()
    assert "report not written: RuntimeError: report exploded" in (run_dir / "logs/train.log").read_text()


@pytest.mark.slow
def test_volume_run_report_shows_centre_slice_and_per_volume_dice(tmp_path, monkeypatch):
    import nrrd

    from medseg.commands.fit import fit
    from medseg.report import plots

    root = tmp_path / "vols"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        img = rng.normal(100, 10, (32, 32, 5)).astype(np.int16)
        lab = np.zeros(img.shape, np.uint8)
        lab[8:16, 10:18, 1:4] = 1
        img[lab == 1] += 80
        hdr = {"space directions": np.diag([0.7, 0.8, 3.0]), "space origin": np.zeros(3)}
        nrrd.write(str(root / f"v{i}_image.nrrd"), img, hdr)
        nrrd.write(str(root / f"v{i}_label.nrrd"), lab, hdr)
    shown = []
    real_overlays = plots.overlays
    monkeypatch.setattr(plots, "overlays", lambda cases, *a: shown.extend(cases) or real_overlays(cases, *a))
    cfg = config_from_dict(tiny_config(root, tmp_path / "runs", train__epochs=2, schedule__warmup_epochs=0,
                                       data={"source": "volumes", "root": str(root), "input_size": [32, 32]},
                                       split={"mode": "holdout", "val_fraction": 0.34}))
    run_dir = fit(cfg, progress=False)
    summary = runfs.read_json(run_dir / runfs.SUMMARY)
    html = (run_dir / "report.html").read_text()
    assert f"<td>{summary['per_volume']['dice']:.4g}</td>" in html.split('<section id="result">', 1)[1].split("</section>")[0]
    assert "overlays" in _figures(html)
    # 3 input channels are neighbouring slices, not colour: only the centre one is drawn
    assert shown and all(c.image.shape == (1, 32, 32) for c in shown)


def test_display_image_scales_by_percentiles():
    rng = np.random.default_rng(3)
    from medseg.report.plots import display_image

    grey = rng.normal(0, 1, (1, 20, 30))
    lo, hi = np.percentile(grey, [1, 99])
    np.testing.assert_allclose(display_image(grey), np.clip((grey[0] - lo) / (hi - lo), 0, 1))
    colour = rng.normal(0, 1, (3, 20, 30))
    assert display_image(colour).shape == (20, 30, 3)
    five = rng.normal(0, 1, (5, 20, 30))
    lo, hi = np.percentile(five[2], [1, 99])
    np.testing.assert_allclose(display_image(five), np.clip((five[2] - lo) / (hi - lo), 0, 1))


def _chromium(page: Path, workdir: Path, size: str) -> tuple[subprocess.CompletedProcess, Path]:
    shot = workdir / "shot.png"
    cmd = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={workdir / 'profile'}", "--enable-logging=stderr", "--v=0",
        f"--screenshot={shot}", f"--window-size={size}", page.resolve().as_uri(),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90), shot


def _page_errors(stderr: str) -> list[str]:
    # Chromium logs the page's console as "...:CONSOLE:<line>] "message", source: ..."
    return [l for l in stderr.splitlines() if ":CONSOLE" in l or "Uncaught" in l]


@pytest.mark.slow
def test_report_renders_in_headless_chromium(fitted, tmp_path):
    if not CHROMIUM.exists():
        # CI sets MEDSEG_REQUIRE_BROWSER=1: there a missing browser fails the run instead of skipping the render check
        if os.environ.get("MEDSEG_REQUIRE_BROWSER") == "1":
            pytest.fail("/usr/bin/chromium is absent but MEDSEG_REQUIRE_BROWSER=1: the report render test must run")
        pytest.skip("/usr/bin/chromium is absent (Debian package 'chromium')")
    # control: a page with a console error must be caught, or the check below proves nothing
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body>x<script>console.error("boom"); missingFn();</script></body></html>')
    (tmp_path / "control").mkdir()
    proc, _ = _chromium(bad, tmp_path / "control", "400,300")
    assert any("Uncaught" in l for l in _page_errors(proc.stderr)), proc.stderr[-2000:]

    (tmp_path / "report").mkdir()
    proc, shot = _chromium(fitted / "report.html", tmp_path / "report", "1280,2000")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _page_errors(proc.stderr) == []
    assert shot.is_file()
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (2000, 1280)
    assert pixels.std() > 20  # a blank or failed page is (nearly) one colour
    # the figures were laid out: plenty of non-white pixels below the headline
    assert (pixels[600:] < 200).mean() > 0.02
    shutil.copy(shot, fitted.parent / "report_screenshot.png")  # kept beside the run for a look
