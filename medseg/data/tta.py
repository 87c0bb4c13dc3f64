"""The names of the test-time augmentations: the dihedral group of the square, applied in-plane.

Here, low in the layers, so the config can validate them and the post-processing rule can
record them; `medseg.inference` applies them (and maps each prediction back).
"""

from __future__ import annotations

from typing import Sequence

DIHEDRAL = ("identity", "hflip", "vflip", "rot90", "rot180", "rot270", "transpose", "antitranspose")
FLIP = ("identity", "hflip")  # what a TTA flag meant before the dihedral sets
# the sets `medseg tune` tries by default: none, flip (2 passes), the whole group (8 passes)
DEFAULT_TTA_SETS = (("identity",), FLIP, DIHEDRAL)


def check_tta_names(names: Sequence[str]) -> tuple[str, ...]:
    """The names as a tuple, each a member of `DIHEDRAL`; ValueError naming the first that is not."""
    out = tuple(dict.fromkeys(str(n) for n in names))
    for n in out:
        if n not in DIHEDRAL:
            raise ValueError(f"unknown TTA transform '{n}'; choose from {', '.join(DIHEDRAL)}")
    return out
