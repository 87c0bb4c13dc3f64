import json

import pytest

from medseg.config import SplitConfig
from medseg.data.split import make_split
from medseg.errors import MedsegError

CASES = [f"c{i:02d}" for i in range(20)]


def _flat(split):
    return [c for part in split.values() for c in part]


def test_holdout_is_seeded_complete_and_disjoint():
    a = make_split(CASES, SplitConfig(val_fraction=0.2, test_fraction=0.1), seed=3)
    b = make_split(CASES, SplitConfig(val_fraction=0.2, test_fraction=0.1), seed=3)
    c = make_split(CASES, SplitConfig(val_fraction=0.2, test_fraction=0.1), seed=4)
    assert a == b and a != c
    assert sorted(_flat(a)) == CASES  # every case once, no leak
    assert (len(a["train"]), len(a["val"]), len(a["test"])) == (14, 4, 2)


def test_kfold_folds_partition_the_non_test_cases():
    vals = []
    for k in range(5):
        s = make_split(CASES, SplitConfig(mode="kfold", folds=5, fold=k), seed=0)
        assert not set(s["train"]) & set(s["val"])
        vals.extend(s["val"])
    assert sorted(vals) == CASES


def test_split_file_train_test_uses_test_as_val(tmp_path):
    p = tmp_path / "split.json"
    p.write_text(json.dumps({"train": CASES[:15], "test": CASES[15:]}))
    s = make_split(CASES, SplitConfig(mode="file", file=p), seed=0)
    assert s["val"] == CASES[15:] and s["test"] == []


def test_split_file_errors_name_the_file(tmp_path):
    p = tmp_path / "split.json"
    p.write_text(json.dumps({"train": CASES[:15], "val": CASES[14:]}))
    with pytest.raises(MedsegError, match="c14.*both"):
        make_split(CASES, SplitConfig(mode="file", file=p), seed=0)
    p.write_text(json.dumps({"train": ["nope"], "val": CASES}))
    with pytest.raises(MedsegError, match="split.json.*'nope'"):
        make_split(CASES, SplitConfig(mode="file", file=p), seed=0)
