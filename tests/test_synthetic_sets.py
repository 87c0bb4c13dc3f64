"""bench/synthetic_sets.py: the real-size synthetic sets load through medseg's own sources, deterministically."""

from __future__ import annotations

import numpy as np

from bench.synthetic_sets import lits_case, write_lits, write_siim
from medseg.data import load_data
from medseg.data.schema import DataConfig


def test_lits_like_volumes_load_as_2_5d_with_lesions_and_resume(tmp_path):
    out = tmp_path / "lits"
    write_lits(out, 3, side=64, slices=(12, 20))
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    write_lits(out, 3, side=64, slices=(12, 20))  # a rerun skips what is written
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    d = load_data(DataConfig(source="volumes", root=out, input_size=(32, 32)))
    assert d.modality == "ct" and d.in_channels == 3 and sorted(d.volumes) == ["case000", "case001", "case002"]
    assert all(12 <= v["shape"][2] <= 20 for v in d.volumes.values())
    vol, lab = lits_case(1, side=64, slices=(12, 20))
    assert vol.dtype == np.int16 and vol.min() == -1000 and lab.dtype == np.uint8
    np.testing.assert_array_equal(vol, lits_case(1, side=64, slices=(12, 20))[0])  # a function of (seed, index)
    assert any(lits_case(i, side=128, slices=(30, 40))[1].any() for i in range(6))  # some volumes hold lesions


def test_siim_like_images_round_trip_through_the_siim_source(tmp_path):
    csv = write_siim(tmp_path / "siim", 8, side=64)
    d = load_data(DataConfig(source="siim", root=tmp_path / "siim" / "dicom", rle_csv=csv, input_size=(32, 32)))
    assert len(d.samples) == 8 and d.modality == "xray"
    assert sum(bool(np.asarray(s.mask).any()) for s in d.samples) == sum("-1" not in row for row in csv.read_text().splitlines()[1:])
