"""The runtime decisions: precision (bf16 by default only where the CPU computes bf16 in hardware)."""

import pytest

from medseg import runtime
from medseg.errors import MedsegError


@pytest.mark.parametrize("native, expect", [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_on_cpu_follows_native_bf16(monkeypatch, native, expect):
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native)
    assert runtime.resolve_precision("auto", "cpu") == expect
    assert runtime.resolve_precision("32", "cpu") == "32-true"
    assert runtime.resolve_precision("bf16", "cpu") == "bf16-mixed"


def test_fp16_needs_a_gpu():
    with pytest.raises(MedsegError, match="train.precision"):
        runtime.resolve_precision("16", "cpu")
