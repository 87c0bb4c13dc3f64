"""Finding: validation, ranking, JSON form."""

from __future__ import annotations

import json
import math

import pytest

from medseg.doctor.finding import Finding, rank


def _f(id, severity, confidence, impact, **kw):
    return Finding(id=id, family="data", severity=severity, confidence=confidence, impact=impact, title=id,
                   evidence="", why="", fix_key=None, fix_value=None, **kw)


def test_rank_orders_by_severity_then_confidence_times_impact():
    fs = [_f("a", "info", 1.0, 1.0), _f("b", "warning", 0.9, 0.5), _f("c", "serious", 0.5, 0.5),
          _f("d", "warning", 0.5, 1.0), _f("e", "serious", 0.9, 0.9)]
    # warnings b (0.45) and d (0.5): d first
    assert [f.id for f in rank(fs)] == ["e", "c", "d", "b", "a"]


def test_confidence_and_impact_are_clipped_to_unit_interval():
    f = _f("a", "info", 1.7, float("nan"))
    assert (f.confidence, f.impact) == (1.0, 0.0)


@pytest.mark.parametrize("severity,family", [("fatal", "data"), ("info", "plumbing")])
def test_unknown_severity_or_family_rejected(severity, family):
    with pytest.raises(ValueError):
        Finding(id="x", family=family, severity=severity, confidence=1, impact=1, title="", evidence="", why="", fix_key=None, fix_value=None)


def test_to_dict_has_the_contract_keys_and_is_strict_json():
    import numpy as np

    f = _f("data.x", "serious", 0.91234, 0.5, numbers={"a": float("nan"), "b": np.float32(2.5), "c": [float("inf"), 1]})
    d = f.to_dict()
    assert {"id", "family", "severity", "confidence", "title", "evidence", "why", "fix_key", "fix_value"} <= set(d)
    assert d["confidence"] == 0.912 and d["numbers"] == {"a": None, "b": 2.5, "c": [None, 1]}
    json.dumps(d, allow_nan=False)  # raises on NaN/inf
    assert math.isclose(f.score, 0.91234 * 0.5)
