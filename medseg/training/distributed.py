"""Several processes, one run: who leads, how the followers find the run, and Lightning's collectives for the callbacks.

Lightning is the engine: it launches the processes (its own launcher for `train.devices > 1`,
or `torchrun` / `srun` from outside), makes the process group and does every collective
(`LightningModule.all_gather`, `Strategy.broadcast`). What medseg adds is the run folder's
single writer:

* the **leader** (global rank 0) does everything a single-process fit does before training:
  reads the data, plans (the step-cost measurement runs once, on one device), creates the run
  folder and writes config, plan, split and state; then it announces the folder;
* a **follower** (every other rank) writes nothing: it waits for the announcement, reads the
  run's resolved config and split.json, checks that it sees the same data (data_hashes.json),
  trains its share of every batch and exits after training; the leader alone tunes,
  evaluates and reports.

The announcement is an environment variable for the processes Lightning's launcher starts
(they inherit the leader's environment at `trainer.fit`), and a small file under
`<output_dir>/.medseg-ddp/` for processes started by torchrun or srun (every rank starts at
once, on every node: multi-node training needs `output_dir` on a shared file system). Once
the process group exists, every rank checks that it trains the run rank 0 announced.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from medseg.errors import MedsegError

RUN_DIR_ENV = "MEDSEG_DDP_RUN_DIR"
WAIT_ENV = "MEDSEG_DDP_WAIT_S"  # how long a follower waits for the leader to plan and create the run (default 1 h)
HANDOFF_DIR = ".medseg-ddp"
_STARTED = time.time()
# a handoff file older than this before this process started belongs to an earlier job (processes of one
# job start within seconds of each other, once torchrun's or srun's rendezvous is complete)
_STALE_S = 300.0


@dataclass(frozen=True)
class Launch:
    """How this process was started.

    Attributes:
        rank: global rank (0: the leader).
        world: number of processes (1: no DDP).
        local_world: processes on this node (the Trainer's `devices`).
        nodes: number of nodes (the Trainer's `num_nodes`).
        launcher: 'torchrun' or 'slurm' (every process started from outside), 'lightning' (started by the
            leader through Lightning's launcher), or None (a single process, or the leader before it launched).
        key: names the job for the handoff file (None without an outside launcher).
    """

    rank: int = 0
    world: int = 1
    local_world: int = 1
    nodes: int = 1
    launcher: Optional[str] = None
    key: Optional[str] = None

    @property
    def external(self) -> bool:
        """The processes were started from outside (torchrun, srun, or by hand on each node)."""
        return self.launcher in ("torchrun", "slurm")


def launch() -> Launch:
    """This process's rank and world as Lightning will see them (the same cluster environments, in Lightning's order)."""
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    env = os.environ
    if SLURMEnvironment.detect() and int(env.get("SLURM_NTASKS", "1") or 1) > 1:
        try:
            s = SLURMEnvironment()
        except RuntimeError as e:  # Lightning's check of the srun variables (e.g. --ntasks without --ntasks-per-node)
            raise MedsegError(f"SLURM: {e}") from None
        nodes = int(env.get("SLURM_NNODES", "1") or 1)
        return Launch(s.global_rank(), s.world_size(), max(1, s.world_size() // nodes), nodes, "slurm",
                      f"slurm-{env.get('SLURM_JOB_ID', '0')}-{env.get('SLURM_STEP_ID', '0')}")
    if TorchElasticEnvironment.detect():
        world, local = int(env["WORLD_SIZE"]), int(env.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"]))
        key = f"torchrun-{env.get('MASTER_ADDR', '')}-{env.get('MASTER_PORT', '')}-{env.get('TORCHELASTIC_RUN_ID', '')}"
        return Launch(int(env["RANK"]), world, local, max(1, world // max(1, local)), "torchrun", key)
    if RUN_DIR_ENV in env and "LOCAL_RANK" in env and "WORLD_SIZE" in env:
        # a process of Lightning's own launcher (one node): the leader started it, with the run folder in its
        # environment; the leader itself has LOCAL_RANK 0 once it launched them
        return Launch(int(env["LOCAL_RANK"]), int(env["WORLD_SIZE"]), int(env["WORLD_SIZE"]), 1, "lightning")
    return Launch()


def world_size(cfg, started: Optional[Launch] = None) -> int:
    """Processes the fit will train with: the outside launcher's world, else train.devices × train.num_nodes."""
    started = started or launch()
    if started.external:
        return started.world
    if cfg.train.num_nodes > 1:
        raise MedsegError("config error: train.num_nodes: more than one node needs an outside launcher: start every node "
                          "with torchrun (--nnodes, --node-rank, --rdzv-endpoint) or srun (README: several GPUs)")
    devices = cfg.train.devices
    if isinstance(devices, list):
        n = len(devices)
    elif devices == "auto":
        from medseg.runtime import training_device

        if training_device(cfg) == "gpu":
            import torch

            n = torch.cuda.device_count()
        else:
            n = 1
    else:
        n = int(devices)
    return n * cfg.train.num_nodes


def trainer_devices(cfg, started: Optional[Launch] = None) -> dict:
    """The Trainer's devices, num_nodes and strategy: the outside launcher's when there is one, else the config's."""
    started = started or launch()
    if started.external:
        devices, nodes = started.local_world, started.nodes
    else:
        devices, nodes = cfg.train.devices, cfg.train.num_nodes
    world = world_size(cfg, started)
    return {"devices": devices, "num_nodes": nodes, "strategy": "ddp" if world > 1 else "auto"}


def check_batch_split(cfg, world: int) -> None:
    """Every process takes an equal share of each batch: the batch size must divide by the number of processes."""
    if world > 1 and cfg.train.batch_size % world:
        raise MedsegError(
            f"config error: train.batch_size: {cfg.train.batch_size} images per batch do not split evenly over {world} "
            f"processes; use a multiple of {world} (each process takes batch_size / {world})"
        )


def _handoff_path(output_dir: Path, key: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)
    return Path(output_dir) / HANDOFF_DIR / f"{safe}.json"


def announce_run(run_dir: Path, output_dir: Path, started: Optional[Launch] = None) -> Optional[Path]:
    """Leader: tell the followers which run folder they train (environment for Lightning's children, a file for the rest)."""
    started = started or launch()
    os.environ[RUN_DIR_ENV] = str(Path(run_dir).resolve())
    if not (started.external and started.key):
        return None
    path = _handoff_path(output_dir, started.key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"run_dir": str(Path(run_dir).resolve()), "world": started.world, "written": time.time()}))
    os.replace(tmp, path)
    return path


def retire_handoff(path: Optional[Path]) -> None:
    """Leader, after training: the announcement has done its work (a stale one would mislead a later job or fit)."""
    os.environ.pop(RUN_DIR_ENV, None)
    if path is not None:
        try:
            path.unlink()
            path.parent.rmdir()  # only when no other job's file is left
        except OSError:
            pass


def wait_for_run(output_dir: Path, started: Optional[Launch] = None, poll_s: float = 0.5) -> Path:
    """Follower: the run folder the leader announced (waits while the leader reads the data and plans)."""
    started = started or launch()
    if os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV])
    if not started.key:
        raise MedsegError(f"DDP: rank {started.rank} was not told the run folder ({RUN_DIR_ENV}); start all ranks with torchrun or srun")
    path = _handoff_path(output_dir, started.key)
    timeout = float(os.environ.get(WAIT_ENV, 3600))
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            info = json.loads(path.read_text())
            if float(info.get("written", 0)) >= _STARTED - _STALE_S and int(info.get("world", 0)) == started.world:
                return Path(info["run_dir"])
        except (OSError, ValueError, KeyError):
            pass  # not written yet, or being replaced
        time.sleep(poll_s)
    raise MedsegError(f"DDP: rank {started.rank} waited {timeout:.0f} s for rank 0 to create the run ({path}); "
                      f"is output_dir on a file system every node shares? ({WAIT_ENV} sets the wait)")


# ---------------------------------------------------------------------------------------
# Sharding and gathering inside the fit (Lightning's collectives)


def gather_objects(obj: Any) -> list:
    """The object every rank passes, from each rank in rank order (torch.distributed's all_gather_object; picklable objects only).

    The objects are the ranks' own in-process results (validation rows), never data from disk.
    """
    import torch.distributed as dist

    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_numbers(pl_module, values: np.ndarray) -> np.ndarray:
    """The same-shaped float64 array from every rank, stacked: (world, ...) (one process: (1, ...))."""
    import torch

    t = torch.as_tensor(np.asarray(values, np.float64), device=pl_module.device)
    if pl_module.trainer.world_size == 1:
        return t[None].cpu().numpy()
    return pl_module.all_gather(t).cpu().numpy()
