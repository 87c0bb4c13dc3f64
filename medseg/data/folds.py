"""k folds of the cases for an experiment: patient-grouped, stratified on empty vs non-empty cases.

The split unit is the case id (the patient from `data.cases_csv`, the volume, the image), so
no patient lies in two folds; cases with foreground and empty cases are dealt out separately,
so each fold holds about the same share of empty cases (an all-normal fold would tune the
empty-image gate on nothing else).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from medseg.errors import MedsegError


def make_folds(case_ids: Sequence[str], positive: Sequence[bool], k: int, seed: int) -> list[list[str]]:
    """The cases of each of k folds (sorted), every case in exactly one.

    Args:
        case_ids: one entry per sample (repeats: a case with several images or slices).
        positive: whether each sample's mask has foreground (a case is positive if any sample is).
        k: number of folds (>= 2).
        seed: the permutation seed (the same seed, the same folds on any machine).
    """
    if k < 2:
        raise MedsegError(f"--folds: needs at least 2 folds, got {k}")
    has_fg: dict[str, bool] = {}
    for c, p in zip(case_ids, positive):
        has_fg[c] = has_fg.get(c, False) or bool(p)
    cases = sorted(has_fg)
    if len(cases) < k:
        raise MedsegError(f"--folds: {k} folds need at least {k} cases (patients), the data has {len(cases)}")
    rng = np.random.RandomState(seed)
    folds: list[list[str]] = [[] for _ in range(k)]
    start = 0
    for stratum in ([c for c in cases if has_fg[c]], [c for c in cases if not has_fg[c]]):
        order = [stratum[i] for i in rng.permutation(len(stratum))]
        # deal round-robin, continuing where the previous stratum stopped so fold sizes stay within one
        for j, c in enumerate(order):
            folds[(start + j) % k].append(c)
        start = (start + len(order)) % k
    return [sorted(f) for f in folds]
