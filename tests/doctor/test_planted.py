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
