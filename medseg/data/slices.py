"""2.5D samples back to their volumes: which sample indices form each volume, in slice order."""

from __future__ import annotations

from typing import Sequence


def slices_by_volume(meta: Sequence[dict]) -> dict[str, list[int]]:
    """{volume: sample indices sorted by slice}, volumes in name order.

    Args:
        meta: per-sample dicts with `volume` and `slice` (as the volume source writes them).
    """
    by_vol: dict[str, list[int]] = {}
    for i, m in enumerate(meta):
        by_vol.setdefault(m["volume"], []).append(i)
    return {v: sorted(idx, key=lambda i: meta[i]["slice"]) for v, idx in sorted(by_vol.items())}
