"""`medseg augment-preview`: the grid of training images beside their augmented versions."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from medseg.cli import app
from medseg.commands.augment_preview import CELL_PX, HEADER_PX, pick_training_samples, write_augment_preview
from medseg.config import config_from_dict
from medseg.data.sources import load_data
from medseg.data.split import make_split
from medseg.errors import MedsegError
from tests.conftest import make_blob_folder, tiny_config, write_config


@pytest.fixture
def preview_config(tmp_path):
    data = make_blob_folder(tmp_path / "data", n=8, size=32)
    raw = tiny_config(data, tmp_path / "runs", augment={"preset": "heavy"})
    raw["data"]["input_size"] = [32, 32]
    return write_config(tmp_path / "config.yaml", raw), raw


def test_picks_training_images_with_foreground_first(preview_config):
    _, raw = preview_config
    cfg = config_from_dict(raw)
    loaded = load_data(cfg.data, with_masks=True)
    train = set(make_split([s.case_id for s in loaded.samples], cfg.split, cfg.seed)["train"])
    n_fg = sum(s.mask.any() for s in loaded.samples if s.case_id in train)
    picked = pick_training_samples(cfg, loaded.samples, 100)
    assert len(picked) == len(train) and {s.case_id for s in picked} == train
    assert [s.mask.any() for s in picked] == [True] * n_fg + [False] * (len(picked) - n_fg)
    again = pick_training_samples(cfg, loaded.samples, 2)
    assert [s.sample_id for s in again] == [s.sample_id for s in picked[:2]]


@pytest.mark.slow
def test_augment_preview_writes_the_grid_and_refuses_to_overwrite(preview_config, tmp_path):
    path, _ = preview_config
    out = tmp_path / "preview.png"
    res = CliRunner().invoke(app, ["augment-preview", str(path), "--out", str(out), "--n", "3", "--variants", "2",
                                   "--set", "augment.overrides={vflip: 1.0}"])
    assert res.exit_code == 0, res.output
    assert str(out) in res.output.replace("\n", "")
    png = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert png.shape[:2] == (3 * CELL_PX + HEADER_PX, (1 + 2) * CELL_PX)
    # the mask outline is drawn in green, which no grey level is
    r, g, b = png[..., 0], png[..., 1], png[..., 2]
    assert ((g - np.maximum(r, b)) > 120).sum() > 50
    before = out.read_bytes()
    proc = subprocess.run([sys.executable, "-m", "medseg.cli", "augment-preview", str(path), "--out", str(out)],
                          capture_output=True, text=True)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "--out" in lines[0] and "exists" in lines[0], proc.stderr
    assert out.read_bytes() == before


def test_augment_preview_refuses_when_nothing_augments(preview_config, tmp_path, one_line):
    _, raw = preview_config
    raw["augment"] = {"preset": "light", "overrides": {"hflip": 0.0, "affine": 0.0}}
    with pytest.raises(MedsegError) as err:
        write_augment_preview(config_from_dict(raw), tmp_path / "p.png")
    one_line(err, "augment.preset")
    assert not (tmp_path / "p.png").exists()


def test_augment_preview_shows_copy_paste_alone(preview_config, tmp_path):
    _, raw = preview_config
    raw["augment"] = {"preset": "none", "copy_paste": 1.0}
    raw["data"]["input_size"] = [64, 64]
    raw["data"]["root"] = str(make_blob_folder(tmp_path / "big", n=8, size=64))
    out = write_augment_preview(config_from_dict(raw), tmp_path / "p.png", n=2, variants=3)
    png = np.asarray(Image.open(out).convert("RGB")).astype(int)
    green = (png[..., 1] - np.maximum(png[..., 0], png[..., 2])) > 120
    cells = [green[HEADER_PX + CELL_PX * 0 :, c * CELL_PX : (c + 1) * CELL_PX][:CELL_PX].sum() for c in range(4)]
    # the original has one outlined lesion; every copy-pasted variant outlines more
    assert all(v > cells[0] for v in cells[1:]), cells
