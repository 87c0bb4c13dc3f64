"""`medseg demo`: the flow end to end on a small synthetic copy of the demo's layout, and the shipped BUSI subset's integrity."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from medseg import runfolder as runfs
from medseg.commands.demo import DEMO_DATA, find_demo_data, run_demo
from medseg.errors import MedsegError
from tests.conftest import make_blob_folder

MAX_DEMO_BYTES = 15 * 2**20


def _demo_folder(root: Path) -> Path:
    make_blob_folder(root, n=16, size=64)
    cases = sorted(p.stem for p in (root / "images").iterdir())
    (root / "split.json").write_text(json.dumps({"train": cases[:10], "val": cases[10:13], "test": cases[13:]}))
    return root


@pytest.mark.slow
def test_demo_trains_scores_the_held_out_images_predicts_and_summarises(tmp_path):
    data = _demo_folder(tmp_path / "demo_data")
    run = run_demo(output_dir=tmp_path / "runs", minutes=0.05, data=data, progress=False)
    cfg = runfs.load_run_config(run)
    assert cfg.model.name == "flexunet-resnet34" and cfg.train.budget_minutes == 0.05  # the default recipe, planned
    test = runfs.read_json(run / runfs.EVALUATIONS / "test" / runfs.SUMMARY_NAME)
    assert test["n_cases"] == 3 and test["evaluated_on"] == "test split"
    masks = sorted(p.name for p in (run / "predictions" / "test" / "masks").iterdir())
    assert masks == [f"{c}.png" for c in json.loads((data / "split.json").read_text())["test"]]
    summary = (run / "demo_summary.md").read_text()
    final = (test.get("postprocessed") or test)["dice"]
    assert f"Dice {final:.3f} with the tuned post-processing" in summary and "The doctor's top findings" in summary
    assert (run / runfs.REPORT_HTML).is_file()


def test_missing_demo_data_is_one_line(tmp_path):
    with pytest.raises(MedsegError, match="no demo data") as err:
        find_demo_data(tmp_path / "nowhere")
    assert "\n" not in str(err.value)


@pytest.mark.skipif(not DEMO_DATA.is_dir(), reason="the BUSI subset ships with the repository, not with the package")
def test_shipped_busi_subset_is_complete_small_and_split_by_patient():
    split = json.loads((DEMO_DATA / "split.json").read_text())
    with open(DEMO_DATA / "cases.csv", newline="") as f:
        patient = {r["case"]: r["patient"] for r in csv.DictReader(f)}
    parts = {k: split[k] for k in ("train", "val", "test")}
    listed = [c for ids in parts.values() for c in ids]
    assert len(listed) == len(set(listed)) == len(patient)
    for c in listed:
        assert (DEMO_DATA / "images" / f"{c}.png").is_file() and (DEMO_DATA / "masks" / f"{c}.png").is_file()
    groups = {k: {patient[c] for c in ids} for k, ids in parts.items()}
    assert not (groups["train"] & groups["val"]) and not (groups["train"] & groups["test"]) and not (groups["val"] & groups["test"])
    assert sum(p.stat().st_size for p in DEMO_DATA.rglob("*") if p.is_file()) <= MAX_DEMO_BYTES
    assert "Al-Dhabyani" in (DEMO_DATA / "README.md").read_text()
