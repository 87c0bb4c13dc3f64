"""Nothing from disk is trusted: shared run folders and weights run no code, finished runs never change,
and every bad value or damaged file is one line naming it, exit code 2, nothing created or changed.

Each case reproduces one reported failure (the issue's numbering in the test names).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medseg import runfolder as runfs
from medseg.commands.fit import fit
from medseg.config import config_from_dict
from tests.conftest import make_blob_folder, tiny_config, write_config

RUN_FILES = (runfs.CONFIG, runfs.SPLIT, runfs.STATE, runfs.BEST_CKPT, runfs.LAST_CKPT, runfs.SUMMARY, runfs.CASES_CSV,
             runfs.EPOCHS_CSV, runfs.FINGERPRINT, runfs.DATA_HASHES)


def cli(*args, env=None):
    """`medseg ARGS` in this process (fast: no interpreter start, torch already imported); a subprocess when env is given."""
    if env is not None:
        return subprocess.run([sys.executable, "-m", "medseg.cli", *map(str, args)], capture_output=True, text=True,
                              env={**os.environ, **env})
    import contextlib
    import io

    from medseg import cli as medseg_cli

    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["medseg", *map(str, args)]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            medseg_cli.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = argv
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def one_line(proc, *names) -> str:
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for n in names:
        assert str(n) in lines[0], (n, lines[0])
    return lines[0]


def tree(root: Path) -> dict[str, str]:
    """Every file below root (links too) with the sha256 of its content: the state to compare before and after."""
    out = {}
    for p in sorted(Path(root).rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(root))] = "link:" + os.readlink(p)
        elif p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_dir():
            out[str(p.relative_to(root)) + "/"] = "dir"
    return out


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run and its data: copy it (`run_copy`) before changing anything."""
    tmp = tmp_path_factory.mktemp("trusted")
    data = make_blob_folder(tmp / "data", n=12)
    cfg = tiny_config(data, tmp / "runs", train__epochs=2, schedule__warmup_epochs=0)
    run = fit(config_from_dict(cfg), progress=False)
    return run, data, cfg


@pytest.fixture
def run_copy(finished, tmp_path):
    run, data, cfg = finished
    dst_data = tmp_path / "data"
    shutil.copytree(data, dst_data)
    dst = tmp_path / "runs" / "t"
    shutil.copytree(run, dst)
    # the copy reads the copied data, so changing it cannot touch the shared fixture
    text = (dst / runfs.CONFIG).read_text().replace(str(data), str(dst_data)).replace(str(run.parent), str(dst.parent))
    (dst / runfs.CONFIG).write_text(text)
    return dst, dst_data, {**cfg, "data": {**cfg["data"], "root": str(dst_data)}, "output_dir": str(tmp_path / "runs")}


class _Payload:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _poisoned(path: Path, marker: Path, state_dict: dict) -> None:
    torch.save({"state_dict": state_dict, "epoch": 0, "global_step": 1, "extra": _Payload(marker)}, path)


# ---------------------------------------------------------------------------------------
# 1. A run folder or weights file must not run code


@pytest.mark.slow
def test_1_poisoned_checkpoint_never_runs_its_payload(run_copy, tmp_path):
    run, data, cfg = run_copy
    marker = tmp_path / "PWNED"
    good = torch.load(run / runfs.BEST_CKPT, weights_only=True)["state_dict"]
    _poisoned(run / runfs.BEST_CKPT, marker, good)
    for args in (("evaluate", run), ("predict", run, data / "images", tmp_path / "pred"), ("tune", run, "--force")):
        one_line(cli(*args), runfs.BEST_CKPT, "refused")
        assert not marker.exists(), args
    proc = cli("doctor", run)  # the doctor reads what it can and says the checkpoint was refused
    assert "refused" in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
    assert not marker.exists()
    weights = tmp_path / "weights.pt"
    _poisoned(weights, marker, {k[len("net."):]: v for k, v in good.items()})
    path = write_config(tmp_path / "c.yaml", {**cfg, "name": "pre", "model": {**cfg["model"], "pretrained": str(weights)}})
    one_line(cli("fit", path, "--no-progress"), "model.pretrained", "weights.pt", "refused")
    assert not marker.exists() and not (tmp_path / "runs" / "pre").exists()


def test_no_unpickling_anywhere_in_medseg():
    root = Path(__file__).resolve().parents[1] / "medseg"
    hits = [f"{p}:{i}" for p in root.rglob("*.py") for i, line in enumerate(p.read_text().splitlines(), 1)
            if "weights_only=False" in line or "pickle.load" in line]
    assert not hits, hits


# ---------------------------------------------------------------------------------------
# 2. The run name is one folder inside output_dir


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/absolute-run", "a/b", "''", ".."])
def test_2_run_name_is_one_folder_name(tmp_path, name):
    data = make_blob_folder(tmp_path / "data", n=8)
    path = write_config(tmp_path / "c.yaml", tiny_config(data, tmp_path / "work" / "runs"))
    before = tree(tmp_path)
    one_line(cli("fit", path, "--set", f"name={name}", "--no-progress"), "name")
    assert tree(tmp_path) == before


# ---------------------------------------------------------------------------------------
# 3. A finished run is never rewritten


@pytest.mark.slow
def test_3_finished_run_is_byte_identical_after_every_verb(run_copy, tmp_path):
    run, data, _ = run_copy
    own = {rel: hashlib.sha256((run / rel).read_bytes()).hexdigest() for rel in RUN_FILES}

    def same():
        return {rel: hashlib.sha256((run / rel).read_bytes()).hexdigest() for rel in RUN_FILES} == own

    assert cli("evaluate", run).returncode == 0 and same()
    assert (run / runfs.EVALUATIONS / "val" / runfs.SUMMARY_NAME).is_file()
    one_line(cli("tune", run), runfs.POSTPROCESS, "already tuned")
    assert same()
    assert cli("report", run).returncode == 0 and same()
    assert cli("doctor", run).returncode == 0 and same()
    before = tree(run)
    one_line(cli("fit", "--resume", run, "--no-progress"), "finished", "never changed")
    assert tree(run) == before


def test_3_evaluate_after_the_data_changed_writes_beside_the_run_and_says_so(run_copy):
    run, data, _ = run_copy
    own = tree(run)
    val = runfs.read_json(run / runfs.SPLIT)["val"]
    for case in val:
        Image.fromarray(np.zeros((64, 64), np.uint8)).save(data / "masks" / f"{case}.png")  # the validation truths move
    proc = cli("evaluate", run)  # the evaluation is printed, then the mismatch is the one error line
    line = [x for x in proc.stderr.strip().splitlines() if x.strip()][-1]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and line.startswith("error:"), proc.stderr[-2000:]
    assert "differs from training" in line and "validation data changed" in line and runfs.EVALUATIONS in line
    changed = {k for k in set(tree(run)) | set(own) if tree(run).get(k) != own.get(k)}
    assert changed and all(k.startswith(runfs.EVALUATIONS) for k in changed), changed


# ---------------------------------------------------------------------------------------
# 4. Resume refuses when the data or the split changed


@pytest.fixture
def killed(tmp_path):
    data = make_blob_folder(tmp_path / "data", n=16)
    path = write_config(tmp_path / "c.yaml", tiny_config(data, tmp_path / "runs", train__epochs=3, name="k"))
    proc = cli("fit", path, "--no-progress", env={"MEDSEG_KILL_AT_STEP": "4"})
    assert proc.returncode == 137, proc.stderr[-2000:]
    return tmp_path / "runs" / "k", data


@pytest.mark.slow
def test_4_resume_refuses_changed_data(killed):
    run, data = killed
    img = data / "images" / "case001.png"
    a = np.asarray(Image.open(img)).copy()
    a[:8, :8] = 255 - a[:8, :8]
    Image.fromarray(a).save(img)
    before = tree(run)
    one_line(cli("fit", "--resume", run, "--no-progress"), "changed", "case001")
    assert tree(run) == before


@pytest.mark.slow
def test_4_resume_refuses_a_changed_split(killed):
    run, data = killed
    for extra in ("case100", "case101"):  # new cases: the holdout permutation changes
        shutil.copy(data / "images" / "case001.png", data / "images" / f"{extra}.png")
        shutil.copy(data / "masks" / "case001.png", data / "masks" / f"{extra}.png")
    before = tree(run)
    one_line(cli("fit", "--resume", run, "--no-progress"), runfs.SPLIT, "cannot resume")
    assert tree(run) == before


# ---------------------------------------------------------------------------------------
# 5. Values that passed validation and crashed after the run folder existed


@pytest.mark.parametrize("override, key", [
    ("train.accelerator=gpu", "train.accelerator"), ("train.devices=abc", "train.devices"), ("train.devices=0", "train.devices"),
    ("optim.weight_decay=.inf", "optim.weight_decay"), ("loss.bce=.inf", "loss.bce"), ("train.budget_minutes=.inf", "train.budget_minutes"),
    ("model.pretrained=missing.pt", "model.pretrained"),
])
def test_5_bad_values_fail_before_the_run_folder(tmp_path, override, key):
    if override.startswith("train.accelerator") and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    data = make_blob_folder(tmp_path / "data", n=8)
    path = write_config(tmp_path / "c.yaml", tiny_config(data, tmp_path / "runs"))
    before = tree(tmp_path)
    one_line(cli("fit", path, "--set", override, "--no-progress"), key)
    assert tree(tmp_path) == before


def test_5_garbage_pretrained_fails_before_the_run_folder(tmp_path):
    data = make_blob_folder(tmp_path / "data", n=8)
    (tmp_path / "garbage.pt").write_bytes(b"\x00not weights" * 20)
    path = write_config(tmp_path / "c.yaml", tiny_config(data, tmp_path / "runs", model={"name": "unet", "channels": [8, 16, 32],
                                                                                      "pretrained": str(tmp_path / "garbage.pt")}))
    before = tree(tmp_path)
    one_line(cli("fit", path, "--no-progress"), "model.pretrained", "garbage.pt")
    assert tree(tmp_path) == before


# ---------------------------------------------------------------------------------------
# 6. Tracebacks that became one line


def test_6_non_utf8_config(tmp_path):
    (tmp_path / "c.yaml").write_bytes(b"name: caf\xe9\n")
    one_line(cli("fit", tmp_path / "c.yaml"), "c.yaml", "UTF-8")


@pytest.mark.parametrize("where", ["file", "under_file"])
def test_6_output_dir_that_is_a_file(tmp_path, where):
    data = make_blob_folder(tmp_path / "data", n=8)
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" if where == "file" else tmp_path / "afile" / "runs"
    path = write_config(tmp_path / "c.yaml", tiny_config(data, out))
    before = tree(tmp_path)
    one_line(cli("fit", path, "--no-progress"), "output_dir", "afile")
    assert tree(tmp_path) == before


def test_6_plan_and_metrics_out_that_is_a_file(tmp_path):
    data = make_blob_folder(tmp_path / "data", n=8)
    path = write_config(tmp_path / "c.yaml", tiny_config(data, tmp_path / "runs"))
    (tmp_path / "afile").write_text("x")
    before = tree(tmp_path)
    one_line(cli("plan", path, "--out", tmp_path / "afile", "--no-measure"), "--out", "afile")
    one_line(cli("metrics", data / "masks", data / "masks", "--out", tmp_path / "afile"), "--out", "afile")
    assert tree(tmp_path) == before


def test_6_evaluate_data_that_is_a_scalar(run_copy, tmp_path):
    run, _, _ = run_copy
    (tmp_path / "d.yaml").write_text("data: somewhere\n")
    before = tree(run)
    one_line(cli("evaluate", run, "--data", tmp_path / "d.yaml"), "d.yaml", "data")
    assert tree(run) == before


def test_6_split_file_lists_of_non_strings(tmp_path):
    data = make_blob_folder(tmp_path / "data", n=8)
    (tmp_path / "split.json").write_text(json.dumps({"train": [1, 2], "val": "case001"}))
    path = write_config(tmp_path / "c.yaml", tiny_config(data, tmp_path / "runs", split={"mode": "file", "file": str(tmp_path / "split.json")}))
    before = tree(tmp_path)
    one_line(cli("fit", path, "--no-progress"), "split.json", "list of case ids")
    assert tree(tmp_path) == before


@pytest.mark.parametrize("damage", ["no_state_dict", "other_network", "truncated"])
def test_6_damaged_checkpoints(run_copy, damage):
    run, data, _ = run_copy
    best = run / runfs.BEST_CKPT
    if damage == "no_state_dict":
        torch.save({"epoch": 1}, best)
    elif damage == "other_network":
        torch.save({"state_dict": {"net.conv.weight": torch.zeros(3, 3)}}, best)
    else:
        best.write_bytes(best.read_bytes()[:1000])
    before = tree(run)
    one_line(cli("evaluate", run), runfs.BEST_CKPT)
    assert tree(run) == before


@pytest.mark.slow
def test_6_truncated_last_checkpoint_on_resume_changes_nothing(killed):
    run, _ = killed
    last = run / runfs.LAST_CKPT
    last.write_bytes(last.read_bytes()[:2000])
    before = tree(run)
    one_line(cli("fit", "--resume", run, "--no-progress"), runfs.LAST_CKPT)
    assert tree(run) == before


def test_6_empty_state_json(run_copy, tmp_path):
    run, data, _ = run_copy
    (run / runfs.STATE).write_text("{}")
    before = tree(run)
    for args in (("evaluate", run), ("predict", run, data / "images", tmp_path / "pred"), ("tune", run, "--force")):
        one_line(cli(*args), runfs.STATE, "in_channels")
    assert tree(run) == before
    # the report is most wanted on a damaged run: it still builds, says why the checkpoint was not run, no traceback
    proc = cli("report", run)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "in_channels" in (run / runfs.REPORT_HTML).read_text()


# ---------------------------------------------------------------------------------------
# 7. Smaller cases


def test_7_all_nan_volume_is_one_line_without_numpy_warnings(tmp_path):
    import nibabel as nib

    root = tmp_path / "vols"
    root.mkdir()
    nib.save(nib.Nifti1Image(np.full((4, 16, 16), np.nan, np.float32), np.eye(4)), root / "a_image.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((4, 16, 16), np.uint8), np.eye(4)), root / "a_label.nii.gz")
    path = write_config(tmp_path / "c.yaml", tiny_config(root, tmp_path / "runs", data={"source": "volumes", "root": str(root), "input_size": [16, 16]}))
    proc = cli("fit", path, "--no-progress")
    one_line(proc, "a_image.nii.gz", "NaN")
    assert "RuntimeWarning" not in proc.stderr


def test_7_precision_written_as_a_number(tmp_path):
    assert config_from_dict({"train": {"precision": 32}}).train.precision == "32"


def test_7_pretrained_that_fills_too_little_is_refused(tmp_path):
    from medseg.errors import MedsegError
    from medseg.models import create_model, load_weights

    src = create_model("unet", 1, [8, 16, 32]).state_dict()
    part = dict(list(src.items())[: len(src) // 3])
    torch.save(part, tmp_path / "part.pt")
    with pytest.raises(MedsegError, match=r"fills only \d+ of the network's \d+ tensors"):
        load_weights(create_model("unet", 1, [8, 16, 32]), tmp_path / "part.pt")
    info = load_weights(create_model("unet", 1, [8, 16, 32]), tmp_path / "part.pt", min_share=0.2)
    assert info["loaded"] == len(part)


def test_7_noisy_8bit_masks_are_binarised_at_half_their_maximum(tmp_path):
    from medseg.data import load_data
    from medseg.data.fingerprint import compute_fingerprint
    from medseg.data.schema import DataConfig

    data = make_blob_folder(tmp_path / "d", n=4, size=32)
    m = np.asarray(Image.open(data / "masks" / "case001.png")).astype(np.int32)
    rng = np.random.default_rng(0)
    noisy = np.clip(m + rng.integers(0, 6, m.shape) * (m == 0) - rng.integers(0, 6, m.shape) * (m > 0), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(data / "masks" / "case001.png")
    loaded = load_data(DataConfig(root=data, input_size=(32, 32)))
    s = next(s for s in loaded.samples if s.sample_id == "case001")
    assert s.mask.sum() == (m > 0).sum()  # the noise around the lesion is not foreground
    fp = compute_fingerprint(loaded)
    assert fp["mask_binarisation"]["n_half_max"] == 1 and fp["mask_binarisation"]["n_pixels_between"] > 0


@pytest.mark.slow
def test_7_all_empty_training_masks_warn(tmp_path):
    data = make_blob_folder(tmp_path / "d", n=8, empty_every=1)
    path = write_config(tmp_path / "c.yaml", tiny_config(data, tmp_path / "runs", train__epochs=1, schedule__warmup_epochs=0,
                                                         postprocess={"tune": False}))
    proc = cli("fit", path, "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "every training mask is empty" in proc.stderr


@pytest.mark.slow
def test_7_broken_links_are_listed_as_bad_files(tmp_path):
    data = make_blob_folder(tmp_path / "d", n=8)
    os.symlink(tmp_path / "nowhere.png", data / "images" / "dangling.png")
    os.symlink(data / "images" / "loop.png", data / "images" / "loop.png")
    path = write_config(tmp_path / "c.yaml", tiny_config(data, tmp_path / "runs", train__epochs=1, schedule__warmup_epochs=0))
    one_line(cli("fit", path, "--no-progress"), "dangling.png")
    proc = cli("fit", path, "--no-progress", "--set", "data.skip_bad=true")
    assert proc.returncode == 0, proc.stderr[-2000:]
    bad = json.loads((tmp_path / "runs" / "t" / runfs.BAD_FILES).read_text())
    assert {Path(b["path"]).name for b in bad} == {"dangling.png", "loop.png"}


@pytest.mark.slow
def test_7_markdown_report_carries_no_raw_html(tmp_path):
    data = make_blob_folder(tmp_path / "d", n=8)
    for kind in ("images", "masks"):
        (data / kind / "case001.png").rename(data / kind / "<img src=x onerror=alert(1)>.png")
    run = fit(config_from_dict(tiny_config(data, tmp_path / "runs", train__epochs=1, schedule__warmup_epochs=0)), progress=False)
    md = (run / runfs.REPORT_MD).read_text()
    assert "<img src=x" not in md


def test_7_usage_names_medseg(tmp_path):
    # MEDSEG_TCMALLOC=on: as after the CLI re-executed itself with `python -m medseg.cli`
    proc = cli("fit", "--help", env={"MEDSEG_TCMALLOC": "on"})
    assert proc.returncode == 0 and "Usage: medseg fit" in proc.stdout, proc.stdout
    line = one_line(cli("fit", "--bogus-option", env={"MEDSEG_TCMALLOC": "on"}), "medseg fit", "--bogus-option")
    assert "python -m" not in line
