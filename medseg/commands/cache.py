"""`medseg cache`: prepare a dataset into the on-disk cache ahead of `fit` (or check that it is complete)."""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Optional

from rich.console import Console

from medseg import runfolder as runfs
from medseg.config import load_config
from medseg.data import load_data
from medseg.data.cache import DiskStore, ShardStore
from medseg.data.schema import DataConfig
from medseg.errors import MedsegError
from medseg.runtime import usable_cores


@dataclass
class CacheResult:
    """What `cache_command` did.

    Attributes:
        entry: the cache entry's folder.
        samples: samples the data gives (images, or volume slices).
        units: units in it (images, DICOMs, volumes).
        built: units prepared now; the rest were read back from an earlier build.
        reused: units read back.
        positive_samples: samples with foreground (0 when loaded without masks).
        bad: files skipped (data.skip_bad).
        disk_bytes: the entry's size on disk.
        seconds: wall time.
    """

    entry: Path
    samples: int
    units: int
    built: int
    reused: int
    positive_samples: int
    bad: int
    disk_bytes: int
    seconds: float

    def to_dict(self) -> dict:
        return {**self.__dict__, "entry": str(self.entry)}


def default_workers() -> int:
    """Builder processes when --workers is not given: the cores this process may use, at most 8 (reading is I/O too)."""
    return max(1, min(8, usable_cores()))


def _build_shard(data_json: str, with_masks: bool, shard: int, shards: int) -> int:
    """One parallel builder: prepare this shard's units (bad files are left to the final pass to report)."""
    data = DataConfig.model_validate_json(data_json).model_copy(update={"skip_bad": True})
    store = ShardStore(data.cache_dir, data, with_masks, shard, shards)
    try:
        load_data(data, with_masks=with_masks, progress=False, store=store)
    except MedsegError:
        pass  # e.g. no unit of this shard was usable: the final pass says what is wrong
    return store.built


def _parallel_build(data: DataConfig, with_masks: bool, workers: int, progress: bool, entry: Path) -> int:
    """Prepare the units in `workers` processes (the bar counts unit records as they land); how many they prepared."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    units = entry / "units"
    before = sum(1 for _ in units.glob("*.json"))
    # spawned, not forked: a fork of a process holding thread pools can hang (see training.datamodule)
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_build_shard, data.model_dump_json(), with_masks, r, workers) for r in range(workers)]
        if progress:
            with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), transient=True) as bar:
                task = bar.add_task("Preparing units", total=None)
                while not all(f.done() for f in futures):
                    n = sum(1 for _ in units.glob("*.json")) - before
                    bar.update(task, description=f"Preparing units in {workers} processes: {n} written")
                    time.sleep(0.5)
        return sum(f.result() for f in futures)


def cache_command(config: Path, overrides: list[str], cache_dir: Optional[Path] = None, with_masks: bool = True,
                  progress: bool = True, console: Optional[Console] = None, workers: Optional[int] = None) -> CacheResult:
    """Build (or complete) the cache entry of a config's data section.

    A build that was killed continues where it stopped; a unit whose source files changed is
    prepared again; a second call on an unchanged dataset reads every unit back and prepares
    nothing.

    Args:
        config: a run config YAML (its data section is used).
        overrides: --set KEY=VALUE strings.
        cache_dir: where the cache is (default: the config's data.cache_dir).
        with_masks: False caches the images alone (what `predict` reads).
        progress: progress bar.
        console: where the summary goes.
        workers: builder processes (default `default_workers`); 1 prepares in this process.
            Units are dealt out among them by name; a final pass in this process reads every
            unit back, so the result (and any bad file's one-line error) is the sequential one.

    Raises:
        MedsegError: no cache folder given, or the data cannot be read (one line naming the file).
    """
    cfg = load_config(config, overrides)
    data = cfg.data
    if cache_dir is not None:
        data = data.model_copy(update={"cache_dir": Path(cache_dir).expanduser().resolve()})
    if data.cache_dir is None:
        raise MedsegError("config error: data.cache_dir: not set; set it in the config or pass --dir")
    runfs.check_cache_dir(data.cache_dir)
    t0 = time.perf_counter()
    # the final pass checks and counts: it keeps no sample, so its memory does not grow with the set
    store = DiskStore(data.cache_dir, data, with_masks, keep_samples=False)
    workers = default_workers() if workers is None else int(workers)
    by_workers = _parallel_build(data, with_masks, workers, progress, store.entry) if workers > 1 else 0
    loaded = load_data(data, with_masks=with_masks, progress=progress, store=store)
    positive = loaded.samples.positive if with_masks else 0
    result = CacheResult(
        entry=store.entry, samples=len(loaded.samples), units=store.built + store.reused, built=store.built + by_workers,
        reused=store.reused - by_workers, positive_samples=positive, bad=len(loaded.bad), disk_bytes=store.disk_bytes(),
        seconds=time.perf_counter() - t0,
    )
    if console is not None:
        console.print(
            f"cache {result.entry}: {result.units} units ({result.built} prepared now, {result.reused} read back), "
            f"{result.samples} samples ({result.positive_samples} with foreground), {result.bad} bad files skipped, "
            f"{result.disk_bytes / 2**20:.1f} MiB on disk, {result.seconds:.1f} s"
        )
    return result
