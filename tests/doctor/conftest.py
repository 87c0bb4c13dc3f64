"""Synthetic data for the doctor's tests: small bright lesions in noise, a share of images empty."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def make_lesion_folder(
    root: Path, n: int = 24, size: int = 32, radius: tuple[int, int] = (3, 5), contrast: float = 90.0,
    noise: float = 12.0, empty_every: int = 4, seed: int = 0,
) -> Path:
    """images/ + masks/ PNGs (masks 0/1): one disk lesion per image, every empty_every-th image empty.

    Args:
        root: folder to create.
        n: number of images.
        size: image side in pixels.
        radius: lesion radius range in pixels (inclusive).
        contrast: lesion brightness above the background (grey levels).
        noise: background noise standard deviation.
        empty_every: every k-th image has no lesion.
        seed: random seed.
    """
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        img = rng.normal(80, noise, (size, size))
        mask = np.zeros((size, size), np.uint8)
        if i % empty_every != 0:
            r = int(rng.integers(radius[0], radius[1] + 1))
            cy, cx = rng.integers(r + 1, size - r - 1, size=2)
            mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)
            img = img + contrast * mask
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / "images" / f"case{i:03d}.png")
        Image.fromarray(mask).save(root / "masks" / f"case{i:03d}.png")
    return root


# ---------------------------------------------------------------------------------------
# Planted-fault runs, trained once per test session (tests/doctor/test_planted.py, test_cli.py)

import contextlib  # noqa: E402

import pytest  # noqa: E402

PLANTED_EPOCHS, PLANTED_STEPS = 8, 12


@contextlib.contextmanager
def fast_training():
    """One torch thread (tiny tensors: threads only add overhead) and no report after each fit."""
    import torch

    import medseg.commands.report

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        # the report (plots, predictions, its own doctor run) is tested elsewhere and would triple the time
        mp.setattr(medseg.commands.report, "build_report", lambda *a, **k: None)
        try:
            yield
        finally:
            torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def planted(tmp_path_factory):
    """{'healthy': (run_dir, findings), 'results': run_faults rows} on a 24-image 32x32 lesion set."""
    from bench import planted_faults as pf

    work = tmp_path_factory.mktemp("planted")
    data = make_lesion_folder(work / "data", n=24, size=32)
    base = pf.base_config(data, work / "runs", input_size=32, epochs=PLANTED_EPOCHS, batch_size=4, channels=[8, 16, 32], lr=0.05)
    base["train"]["steps_per_epoch"] = PLANTED_STEPS
    with fast_training():
        healthy = pf.healthy(base)
        results = pf.run_faults(base, work)
    return {"healthy": healthy, "results": results, "base": base, "work": work}


def make_evidence(epochs=None, fingerprint=None, summary=None, config=None, state=None, split=None, cases=None, eval=None, run_dir=None):
    """A RunEvidence built in memory: schema defaults under `config` (nested dict), files as given."""
    from pathlib import Path as _Path

    from medseg.config import Config
    from medseg.doctor.evidence import RunEvidence
    from medseg.runfolder import deep_merge as _deep_merge

    raw = _deep_merge(Config().model_dump(mode="json"), config or {})
    return RunEvidence(
        run_dir=_Path(run_dir or "runs/x"), raw_config=raw, cfg=None, config_error=None,
        fingerprint=fingerprint or {}, split=split or {}, state=state or {}, summary=summary or {},
        epochs=epochs or [], cases=cases or [], eval=eval,
    )
