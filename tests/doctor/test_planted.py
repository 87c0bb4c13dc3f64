"""Proof by planted faults: each tiny run carries one deliberate fault; the doctor must rank it first."""

from __future__ import annotations

import pytest

from bench.planted_faults import FAULTS

pytestmark = pytest.mark.slow  # every test here reads the 13-training planted-fault fixture


def _table(results) -> str:
    return "\n".join(f"{r['fault']:24} rank {r['rank']}  expected {r['expected']:34} top {r['top']}" for r in results)


def test_planted_cause_ranked_first_in_at_least_nine_of_ten(planted):
    results = planted["results"]
    assert len(results) == len(FAULTS) >= 10
    first = sum(r["rank"] == 1 for r in results)
    assert first >= 0.9 * len(results), _table(results)


def test_every_planted_cause_is_found(planted):
    missing = [r["fault"] for r in planted["results"] if r["rank"] is None]
    assert not missing, _table(planted["results"])


def test_most_faults_come_from_real_training(planted):
    assert sum(not f.simulated for f in FAULTS) >= len(FAULTS) / 2


def test_healthy_run_has_no_serious_finding(planted):
    from medseg.doctor import verdict

    _, findings = planted["healthy"]
    assert [f.id for f in findings if f.severity == "serious"] == []
    assert verdict(findings).startswith("no serious findings")


def test_fault_runs_have_their_planted_evidence(planted):
    """The planted evidence is in the run folders, not only in the doctor's reading of them."""
    from pathlib import Path

    from medseg import runfolder as runfs

    runs = {r["fault"]: Path(r["run_dir"]) for r in planted["results"]}
    overflow = runfs.read_csv(runs["fp16_focal_overflow"] / runfs.EPOCHS_CSV)
    bad = [r for r in overflow if r["nonfinite_steps"] > 0]
    # the patched focal term overflows from its 7th call: within the first epoch, and every step after it
    assert bad[0]["epoch"] == 0 and bad[0]["nonfinite_terms"] == "focal"
    first = int(bad[0]["first_nonfinite_step"])
    assert 0 <= first <= 6 and bad[0]["nonfinite_steps"] == bad[0]["step"] - first
    masks = runfs.read_csv(runs["masks_0_255_in_loss"] / runfs.EPOCHS_CSV)
    assert max(r["batch_pos_pixel_share_mean"] for r in masks) > 1.0
    assert runfs.read_json(runs["masks_0_255_in_loss"] / runfs.FINGERPRINT)["raw_mask_values"] == [0, 255]
    zero = runfs.read_csv(runs["sampler_share_0"] / runfs.EPOCHS_CSV)
    assert all(r["batch_pos_image_share_mean"] == 0.0 for r in zero)


def test_rank_beyond_baseline_sets_aside_the_unfaulted_runs_own_findings():
    from bench.planted_faults import add_baseline_ranks, rank_beyond_baseline

    ids = ["data.duplicates", "optimisation.lr_too_low", "errors.fp_on_empty"]
    assert rank_beyond_baseline(ids, "optimisation.lr_too_low", {"data.duplicates"}) == 1
    assert rank_beyond_baseline(ids, "optimisation.lr_too_low", set()) == 2
    # a planted cause that the baseline also shows keeps its place
    assert rank_beyond_baseline(ids, "data.duplicates", {"data.duplicates"}) == 1
    assert rank_beyond_baseline(ids, "missing", set()) is None
    results = [
        {"fault": "healthy", "findings": ["data.duplicates", "data.mask_255"], "severities": ["serious", "info"]},
        {"fault": "lr", "expected": "optimisation.lr_too_low", "findings": ids + ["data.mask_255"]},
    ]
    add_baseline_ranks(results)
    assert results[1]["rank_beyond_baseline"] == 1 and results[1]["baseline"] == ["data.duplicates"]


def test_planted_faults_keep_patient_groups_on_grouped_data(tmp_path):
    """On data with a cases.csv (BUSI v2) the healthy run and every derived folder split by patient."""
    import csv
    import json

    from bench.planted_faults import base_config, duplicated_into_train, read_groups, shifted_val
    from medseg.config import config_from_dict
    from medseg.data import load_data
    from medseg.data.split import make_split
    from tests.conftest import make_blob_folder

    src = make_blob_folder(tmp_path / "src", n=12, size=32)
    with open(src / "cases.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case", "class", "patient"])
        for i in range(12):
            w.writerow([f"case{i:03d}", "x", f"p{i // 2}"])  # two images per patient
    base = base_config(src, tmp_path / "runs", input_size=32)
    assert base["data"]["cases_csv"] == str(src / "cases.csv") and base["data"]["group_column"] == "patient"
    cfg = config_from_dict(base, src)
    loaded = load_data(cfg.data)
    split = make_split([s.case_id for s in loaded.samples], cfg.split, cfg.seed)
    assert not set(split["train"]) & set(split["val"]) and set(split["train"]) | set(split["val"]) <= {f"p{i}" for i in range(6)}

    twins = read_groups(duplicated_into_train(src, tmp_path / "twins"))
    copies = {k: v for k, v in twins.items() if k.startswith("copy_")}
    assert copies and all(v == "copy_" + twins[k[len("copy_"):]] for k, v in copies.items())

    shifted = shifted_val(src, tmp_path / "shifted")
    doc = json.loads((shifted / "split_file.json").read_text())
    assert doc["val"] == ["p1", "p5"] and sorted(doc["train"] + doc["val"]) == [f"p{i}" for i in range(6)]
    from PIL import Image
    import numpy as np

    for stem, patient in read_groups(shifted).items():
        a = np.asarray(Image.open(shifted / "images" / f"{stem}.png"), dtype=float)
        b = np.asarray(Image.open(src / "images" / f"{stem}.png"), dtype=float)
        assert (a.mean() < 0.6 * b.mean()) == (patient in doc["val"])
