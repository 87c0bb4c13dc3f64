"""DDP: the launch, handoff and gather pieces on their own, then two real CPU processes (gloo).

The unit tests check how a process learns its rank (torchrun, srun, Lightning's launcher), how
followers find the leader's run folder, and that validation rows come back in sample order from
shards. The slow tests start two processes through Lightning's launcher with `medseg fit`,
checked against a single-process fit of the same config and seed:
* each epoch the two ranks together draw exactly the images one process draws (the audit's
  digest of the sorted indices over all ranks), with the same batch composition;
* every validation image is scored once (rank 0 checks the shards cover every image exactly
  once, and the row counts the images scored);
* the run folder has the same files, written once (one train.log, no handoff left, no second
  run folder from the other rank);
* the metrics are those of the single-process run within a stated tolerance: with a loss that
  is a mean over images (BCE) the averaged DDP gradient is the single-process gradient, so only
  the floating-point order of the sums differs;
* killing both ranks mid-epoch and resuming continues where the run stopped and ends where the
  uninterrupted DDP run ends;
* the same fit started by torchrun (both ranks at once, the run folder handed over through
  `output_dir/.medseg-ddp/`) trains exactly what Lightning's launcher trains.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from medseg import runfolder as runfs
from medseg.training import distributed
from tests.conftest import make_blob_folder, tiny_config, write_config

# the single-process and DDP runs take the same steps on the same images; what differs is the
# summation order inside gloo's all-reduce and the convolutions' batch splits
LOSS_RTOL = 1e-3  # measured: 1.1e-4 train, 2.6e-4 val (bench/ddp_agreement.py)
DICE_ATOL = 0.01  # measured: 1.3e-3 (3 epochs, seed 0)



def _fit(*args: str, env: dict | None = None, timeout: float = 900, torchrun: bool = False) -> subprocess.CompletedProcess:
    """`medseg fit ...` in its own session, so that every process it starts can be found and cleaned up."""
    full = {**os.environ, "MEDSEG_TCMALLOC": "off", "OMP_NUM_THREADS": "1", **(env or {})}
    full.pop(distributed.RUN_DIR_ENV, None)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"] if torchrun else [sys.executable]
    proc = subprocess.Popen([*launcher, "-m", "medseg.cli", "fit", *args, "--no-progress"], env=full, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        survivors = _wait_group_gone(proc.pid)
        if survivors:
            os.killpg(proc.pid, signal.SIGKILL)
    res = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    res.survivors = survivors  # type: ignore[attr-defined]
    return res


def _wait_group_gone(pgid: int, grace_s: float = 20.0) -> bool:
    """True when a process of the group is still alive after the grace period."""
    deadline = time.time() + grace_s
    while time.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.2)
    return True


def _files(run: Path) -> set[str]:
    out = set()
    for p in run.rglob("*"):
        if p.is_file():
            rel = p.relative_to(run).as_posix()
            # TensorBoard names its event file after host, pid and time
            out.add("logs/tensorboard/events.out.tfevents.*" if "events.out.tfevents" in rel else rel)
    return out


# ---------------------------------------------------------------------------------------
# launch, handoff, sharding (no processes started)

_LAUNCH_VARS = ("SLURM_NTASKS", "SLURM_NTASKS_PER_NODE", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NNODES", "SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_JOB_NAME",
                "SLURM_NODEID", "TORCHELASTIC_RUN_ID", "RANK", "GROUP_RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "WORLD_SIZE",
                "MASTER_ADDR", "MASTER_PORT", distributed.RUN_DIR_ENV)


@pytest.fixture
def clean_env(monkeypatch):
    for k in _LAUNCH_VARS:
        monkeypatch.delenv(k, raising=False)
    return monkeypatch


def test_a_plain_process_is_rank_0_of_1(clean_env):
    assert distributed.launch() == distributed.Launch()


def test_torchrun_ranks_nodes_and_job_key_come_from_its_environment(clean_env):
    env = {"TORCHELASTIC_RUN_ID": "job7", "RANK": "3", "GROUP_RANK": "1", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
           "WORLD_SIZE": "4", "MASTER_ADDR": "node0", "MASTER_PORT": "29500"}
    for k, v in env.items():
        clean_env.setenv(k, v)
    got = distributed.launch()
    assert (got.rank, got.world, got.local_world, got.nodes, got.launcher, got.external) == (3, 4, 2, 2, "torchrun", True)
    assert "node0" in got.key and "29500" in got.key and "job7" in got.key


def test_srun_ranks_come_from_slurm(clean_env):
    env = {"SLURM_NTASKS": "8", "SLURM_NTASKS_PER_NODE": "4", "SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_NNODES": "2", "SLURM_NODEID": "1",
           "SLURM_JOB_ID": "991", "SLURM_STEP_ID": "0", "SLURM_JOB_NAME": "medseg"}
    for k, v in env.items():
        clean_env.setenv(k, v)
    got = distributed.launch()
    assert (got.rank, got.world, got.local_world, got.nodes, got.launcher) == (5, 8, 4, 2, "slurm")
    assert got.key == "slurm-991-0"
    clean_env.delenv("SLURM_NTASKS_PER_NODE")  # `--ntasks` alone: Lightning's hint, as one line
    from medseg.errors import MedsegError

    with pytest.raises(MedsegError, match="ntasks-per-node"):
        distributed.launch()


def test_a_child_of_lightnings_launcher_knows_its_rank_and_run(clean_env, tmp_path):
    for k, v in {"LOCAL_RANK": "1", "WORLD_SIZE": "2", distributed.RUN_DIR_ENV: str(tmp_path)}.items():
        clean_env.setenv(k, v)
    got = distributed.launch()
    assert (got.rank, got.world, got.launcher, got.external) == (1, 2, "lightning", False)
    assert distributed.wait_for_run(tmp_path / "unused", got) == tmp_path


def _cfg(tmp_path, **train):
    from medseg.config import config_from_dict

    return config_from_dict(tiny_config(tmp_path, tmp_path / "runs", train={"accelerator": "cpu", **train}))


def test_world_size_and_batch_split(clean_env, tmp_path):
    from medseg.errors import MedsegError

    assert distributed.world_size(_cfg(tmp_path, devices=2)) == 2
    assert distributed.world_size(_cfg(tmp_path, devices=[0, 1, 2])) == 3
    assert distributed.world_size(_cfg(tmp_path, devices="auto")) == 1  # CPU: one process
    assert distributed.trainer_devices(_cfg(tmp_path, devices=1))["strategy"] == "auto"
    with pytest.raises(MedsegError, match="train.num_nodes"):
        distributed.world_size(_cfg(tmp_path, devices=2, num_nodes=2))
    torchrun = distributed.Launch(rank=0, world=8, local_world=4, nodes=2, launcher="torchrun", key="k")
    assert distributed.world_size(_cfg(tmp_path, devices=1), torchrun) == 8  # the launcher's world wins
    assert distributed.trainer_devices(_cfg(tmp_path, devices=1), torchrun) == {"devices": 4, "num_nodes": 2, "strategy": "ddp"}
    distributed.check_batch_split(_cfg(tmp_path, batch_size=6), 3)
    with pytest.raises(MedsegError, match=r"train.batch_size: 6 .* 4 processes; use a multiple of 4"):
        distributed.check_batch_split(_cfg(tmp_path, batch_size=6), 4)


def test_followers_started_by_torchrun_find_the_run_the_leader_announced(clean_env, tmp_path):
    leader = distributed.Launch(rank=0, world=2, local_world=2, launcher="torchrun", key="torchrun-host-29500-x")
    follower = distributed.Launch(rank=1, world=2, local_world=2, launcher="torchrun", key="torchrun-host-29500-x")
    run = tmp_path / "runs" / "r1"
    path = distributed.announce_run(run, tmp_path / "runs", leader)
    clean_env.delenv(distributed.RUN_DIR_ENV)  # the follower is another process: it has only the file
    assert path is not None and path.parent.name == distributed.HANDOFF_DIR
    assert distributed.wait_for_run(tmp_path / "runs", follower, poll_s=0.01) == run.resolve()
    distributed.retire_handoff(path)
    assert not path.parent.exists()


@pytest.mark.parametrize("why", ["stale", "other world"])
def test_a_follower_ignores_a_handoff_from_another_job_and_says_where_it_waited(clean_env, tmp_path, why):
    import json

    from medseg.errors import MedsegError

    follower = distributed.Launch(rank=1, world=2, local_world=2, launcher="torchrun", key="k")
    path = tmp_path / distributed.HANDOFF_DIR / "k.json"
    path.parent.mkdir()
    written = time.time() - 3 * 3600 if why == "stale" else time.time()
    path.write_text(json.dumps({"run_dir": str(tmp_path / "old"), "world": 2 if why == "stale" else 4, "written": written}))
    clean_env.setenv(distributed.WAIT_ENV, "0.2")
    with pytest.raises(MedsegError, match="shares"):
        distributed.wait_for_run(tmp_path, follower, poll_s=0.05)


# ---------------------------------------------------------------------------------------
# two real processes


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    data = make_blob_folder(root / "data", n=40, size=32, empty_every=3)
    cfg = tiny_config(data, root / "runs", model={"name": "unet", "channels": [4, 8], "res_units": 0},
                      data={"source": "images", "root": str(data), "input_size": [32, 32]},
                      loss={"bce": 1.0}, train={"epochs": 3, "batch_size": 4, "accelerator": "cpu", "devices": 2},
                      sampler={"positive_share": 0.5}, postprocess={"tune": False})
    path = write_config(root / "cfg.yaml", cfg)
    single = _fit(str(path), "--set", "name=single", "--set", "train.devices=1")
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = _fit(str(path), "--set", "name=ddp")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    # micro-batches of 2 per rank, 7 per epoch (30 training images // 4): step 9 is inside the second epoch
    killed = _fit(str(path), "--set", "name=killed", env={"MEDSEG_KILL_AT_STEP": "9"})
    resumed = _fit("--resume", str(root / "runs" / "killed"))
    # torchrun starts both ranks at once (train.devices is then ignored): the follower finds the run through
    # the handoff file in output_dir
    torchrun = _fit(str(path), "--set", "name=torchrun", "--set", "train.devices=1", torchrun=True)
    return {"root": root, "single": single, "ddp": ddp, "killed": killed, "resumed": resumed, "torchrun": torchrun}


def _epochs(run: Path) -> list[dict]:
    return runfs.read_csv(run / runfs.EPOCHS_CSV)


@pytest.mark.slow
def test_two_ranks_draw_exactly_the_single_process_images_with_the_same_composition(runs):
    root = runs["root"] / "runs"
    single, ddp = _epochs(root / "single"), _epochs(root / "ddp")
    assert len(single) == len(ddp) == 3
    for s, d in zip(single, ddp):
        assert s["processes"] == 1 and d["processes"] == 2
        assert d["train_draw_digest"] == s["train_draw_digest"]  # the union of the ranks' draws, as a multiset
        for k in ("batch_pos_image_share_mean", "batch_pos_image_share_min", "batch_pos_pixel_share_mean"):
            assert d[k] == pytest.approx(s[k], abs=1e-9), k
    digests = {r["train_draw_digest"] for r in single}
    assert len(digests) == 3  # the digest tells epochs apart: it is not a constant


@pytest.mark.slow
def test_every_validation_image_is_scored_once_and_the_metrics_match_one_process(runs):
    root = runs["root"] / "runs"
    n_val = runfs.load_state(root / "ddp")["n_val_images"]
    single, ddp = _epochs(root / "single"), _epochs(root / "ddp")
    for s, d in zip(single, ddp):
        assert d["val_images"] == s["val_images"] == n_val
        assert d["train_loss"] == pytest.approx(s["train_loss"], rel=LOSS_RTOL)
        assert d["val_loss"] == pytest.approx(s["val_loss"], rel=LOSS_RTOL)
        assert abs(d["val_dice"] - s["val_dice"]) <= DICE_ATOL
    a = runfs.read_json(root / "single" / runfs.SUMMARY)
    b = runfs.read_json(root / "ddp" / runfs.SUMMARY)
    assert abs(a["dice"] - b["dice"]) <= DICE_ATOL
    # evaluate recomputes, from the checkpoint, the number DDP training reported
    assert runfs.load_state(root / "ddp")["processes"] == 2


@pytest.mark.slow
def test_the_ddp_run_folder_is_the_single_process_one_written_once(runs):
    root = runs["root"] / "runs"
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["ddp", "killed", "single", "torchrun"]  # rank 1 made no run
    assert not (root / distributed.HANDOFF_DIR).exists()
    assert _files(root / "ddp") == _files(root / "single")
    log = (root / "ddp" / runfs.TRAIN_LOG).read_text()
    assert log.count("training finished") == 1 and "DDP: 2 processes" in log
    # rank 1 prints nothing of its own: the console says what a single process says, once
    one, two = runs["single"].stderr, runs["ddp"].stderr
    assert two.count("run folder:") == one.count("run folder:") >= 1
    assert two.count("mask values seen") == one.count("mask values seen") == 1


@pytest.mark.slow
def test_killing_both_ranks_mid_epoch_then_resuming_ends_where_the_uninterrupted_run_ends(runs):
    killed, resumed = runs["killed"], runs["resumed"]
    assert killed.returncode == 137, killed.stderr[-2000:]
    assert not killed.survivors  # the kill took both ranks
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    root = runs["root"] / "runs"
    a, b = _epochs(root / "ddp"), _epochs(root / "killed")
    assert [r["epoch"] for r in b] == [0, 1, 2]
    for x, y in zip(a, b):
        assert y["train_draw_digest"] == x["train_draw_digest"]
        assert y["train_loss"] == pytest.approx(x["train_loss"], rel=1e-5)
        assert y["val_dice"] == pytest.approx(x["val_dice"], abs=1e-6)
    assert runfs.read_json(root / "killed" / runfs.STATE)["finished"] is True
    assert np.isfinite(runfs.read_json(root / "killed" / runfs.SUMMARY)["dice"])


@pytest.mark.slow
def test_torchrun_trains_the_run_lightnings_launcher_trains(runs):
    res = runs["torchrun"]
    assert res.returncode == 0 and not res.survivors, res.stderr[-3000:]
    root = runs["root"] / "runs"
    assert not (root / distributed.HANDOFF_DIR).exists()  # the leader retired its handoff file
    assert "DDP: 2 processes (torchrun)" in (root / "torchrun" / runfs.TRAIN_LOG).read_text()
    assert _files(root / "torchrun") == _files(root / "ddp")
    for x, y in zip(_epochs(root / "ddp"), _epochs(root / "torchrun")):
        assert y["processes"] == 2 and y["train_draw_digest"] == x["train_draw_digest"]
        assert y["train_loss"] == pytest.approx(x["train_loss"], rel=1e-5)
        assert y["val_dice"] == pytest.approx(x["val_dice"], abs=1e-6)
