import pytest

from medseg.config import load_config, reference_markdown, reference_rows
from medseg.errors import MedsegError


def test_defaults_validate_and_override():
    cfg = load_config(None, ["train.epochs=5", "loss={bce: 3, dice: 1}", "data.input_size=[128, 96]"])
    assert cfg.train.epochs == 5
    assert cfg.loss == {"bce": 3.0, "dice": 1.0}
    assert tuple(cfg.data.input_size) == (128, 96)


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.epoch=5", "train.epoch: unknown key (did you mean 'epochs'?)"),
        ("optim.lr=-1", "optim.lr"),
        ("schedule.warmup_epochs=40", "schedule.warmup_epochs"),
        ("model.name=unett", "model.name: unknown model 'unett' (did you mean 'unet'?)"),
        ("loss={dcie: 1}", "loss.dcie: unknown loss (did you mean 'dice'?)"),
        ("train.epochs=abc", "train.epochs"),
        ("eval.contract.empty=two", "eval.contract.empty"),
        ("data.input_size=[100, 100]", "data.input_size"),
        ("split={mode: kfold, fold: 7}", "split.fold"),
        ("data.resize_mode=spacing", "data.target_spacing: required"),
        ("data.target_spacing=[0.8, 0]", "data.target_spacing"),
        ("bogus=1", "bogus: unknown key"),
    ],
)
def test_bad_values_are_one_line_naming_the_key(override, key):
    with pytest.raises(MedsegError) as e:
        load_config(None, [override])
    msg = str(e.value)
    assert "\n" not in msg
    assert key in msg


def test_yaml_errors_name_the_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train: [1, 2\n")
    with pytest.raises(MedsegError, match="c.yaml"):
        load_config(p)
    with pytest.raises(MedsegError, match="no such file"):
        load_config(tmp_path / "missing.yaml")


def test_relative_paths_resolve_against_config_file(tmp_path):
    p = tmp_path / "sub" / "c.yaml"
    p.parent.mkdir()
    p.write_text("data: {root: ../data}\n")
    cfg = load_config(p)
    assert cfg.data.root == (tmp_path / "data").resolve()


def test_reference_covers_every_leaf_key():
    keys = {r[0] for r in reference_rows()}
    assert {"train.epochs", "optim.lr", "eval.contract.empty", "data.normalize.window", "loss"} <= keys
    assert all(r[3] for r in reference_rows()), "every key documents its meaning"
    md = reference_markdown()
    assert "| `train.epochs` | int | `30` |" in md


def test_config_reference_doc_is_current():
    from pathlib import Path

    doc = Path(__file__).resolve().parents[1] / "docs" / "CONFIG.md"
    assert doc.read_text() == reference_markdown(), "regenerate with `make docs`"
