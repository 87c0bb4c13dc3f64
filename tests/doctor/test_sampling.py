"""Sampling checks: realised positive share per batch against the data and the sampler target."""

from __future__ import annotations

import pytest

from medseg.doctor import sampling as S
from tests.doctor.conftest import make_evidence


def _epochs(shares, targets=None):
    return [{"epoch": i, "batch_pos_image_share_mean": s, **({"sampler_target_pos_share": targets[i]} if targets else {})}
            for i, s in enumerate(shares)]


def test_zero_positive_target_on_data_with_positives_is_serious():
    ev = make_evidence(epochs=_epochs([0.0, 0.0, 0.0], [0.0, 0.0, 0.0]), fingerprint={"empty_image_fraction": 0.25},
                       config={"train": {"batch_size": 4}, "sampler": {"positive_share": 0.0}})
    [f] = S.check(ev)
    assert f.id == "sampling.few_positives" and f.severity == "serious"
    assert f.numbers["data_share"] == 0.75 and f.numbers["positives_per_batch"] == 0.0
    assert (f.fix_key, f.fix_value) == ("sampler.positive_share", 0.5)


def test_one_percent_positive_data_in_natural_order():
    # 3% of images positive, batches of 8: 0.24 positives per batch on average
    ev = make_evidence(epochs=_epochs([0.02, 0.04, 0.03]), fingerprint={"empty_image_fraction": 0.97}, config={"train": {"batch_size": 8}})
    [f] = S.check(ev)
    assert f.severity == "serious" and f.numbers["positives_per_batch"] == pytest.approx(0.03 * 8)


def test_realised_share_off_target():
    ev = make_evidence(epochs=_epochs([0.2, 0.25], [0.5, 0.5]), fingerprint={"empty_image_fraction": 0.5},
                       config={"train": {"batch_size": 8}, "sampler": {"positive_share": 0.5, "crop_size": [64, 64]}})
    [f] = S.check(ev)
    assert f.id == "sampling.off_target" and f.numbers["realised_share"] == pytest.approx(0.225)
    assert f.fix_key == "sampler.foreground_crop_share"


def test_fewer_positives_than_the_data_without_target():
    ev = make_evidence(epochs=_epochs([0.3, 0.3]), fingerprint={"empty_image_fraction": 0.2}, config={"train": {"batch_size": 8}})
    [f] = S.check(ev)
    assert f.id == "sampling.below_data" and f.numbers["data_share"] == pytest.approx(0.8)


def test_balanced_batches_give_no_finding():
    ev = make_evidence(epochs=_epochs([0.7, 0.75]), fingerprint={"empty_image_fraction": 0.25}, config={"train": {"batch_size": 4}})
    assert S.check(ev) == []
