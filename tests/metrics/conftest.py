"""Random blob cases for the metric tests."""

from __future__ import annotations

import numpy as np
import pytest


def blobs(rng: np.random.Generator, shape: tuple[int, ...], n: int, max_radius: float) -> np.ndarray:
    """Union of `n` random balls (2D discs or 3D spheres) inside `shape`."""
    grid = np.indices(shape)
    mask = np.zeros(shape, dtype=bool)
    for _ in range(n):
        centre = [rng.uniform(0, s) for s in shape]
        r = rng.uniform(1.0, max_radius)
        d2 = sum((g - c) ** 2 for g, c in zip(grid, centre))
        mask |= d2 <= r * r
    return mask


def make_cases(seed: int, count: int, shape: tuple[int, ...], max_radius: float = 6.0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(prediction mask, truth mask) pairs: the prediction shares some blobs with the truth,
    misses some and adds false ones; a few cases have an empty truth and/or prediction."""
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(count):
        truth = blobs(rng, shape, int(rng.integers(1, 4)), max_radius)
        shifted = np.roll(truth, tuple(int(v) for v in rng.integers(-2, 3, size=len(shape))), axis=tuple(range(len(shape))))
        pred = shifted & (rng.random(shape) > 0.1) | blobs(rng, shape, int(rng.integers(0, 2)), max_radius / 2)
        if i % 7 == 3:
            truth = np.zeros(shape, dtype=bool)
        if i % 7 == 5:
            pred = np.zeros(shape, dtype=bool)
        if i % 7 == 6:
            truth = np.zeros(shape, dtype=bool)
            pred = np.zeros(shape, dtype=bool)
        cases.append((pred, truth))
    return cases


@pytest.fixture(scope="session")
def cases_2d():
    """20 random 2D cases (48 x 64), including empty truths/predictions."""
    return make_cases(0, 20, (48, 64))


@pytest.fixture(scope="session")
def cases_3d():
    """6 random 3D cases (12 x 20 x 24)."""
    return make_cases(1, 6, (12, 20, 24), max_radius=4.0)


@pytest.fixture(scope="session")
def prob_cases():
    """12 random 2D cases with probability maps whose best threshold is not 0.5."""
    rng = np.random.default_rng(7)
    out = []
    for pred, truth in make_cases(2, 12, (40, 40)):
        noise = rng.random(pred.shape)
        prob = np.where(pred, 0.35 + 0.6 * noise, 0.45 * noise**3)
        out.append((prob, truth))
    return out
