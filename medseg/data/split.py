"""Case-level split: holdout, k-fold or a split file. A case never lands in two sets.

A split file (``split.mode: file``) is one of:

* ``{"train": [...], "val": [...], "test": [...]}`` (medseg's own split.json; a file with only
  train/test validates on test);
* a list of such ``{"train", "val"}`` folds -- nnU-Net's ``splits_final.json`` -- of which
  ``split.fold`` picks one;
* a MONAI / Decathlon datalist (a JSON object with a "training" list): its own split,
  `sources.datalist.datalist_split`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medseg.data.schema import SplitConfig
from medseg.errors import MedsegError


def make_split(case_ids: list[str], cfg: SplitConfig, seed: int) -> dict[str, list[str]]:
    """Return {'train': [...], 'val': [...], 'test': [...]} of case ids (sorted within each set).

    Args:
        case_ids: the split units (patients or volumes); duplicates are ignored.
        cfg: the split section of the config.
        seed: used when cfg.seed is None.
    """
    cases = sorted(set(case_ids))
    if not cases:
        raise MedsegError("data: no cases to split")
    seed = cfg.seed if cfg.seed is not None else seed
    if cfg.mode == "file":
        split = _from_file(cfg.file, cases, cfg.fold)
    else:
        # sorted ids + a seeded permutation: the same seed gives the same split on any machine
        order = [cases[i] for i in np.random.RandomState(seed).permutation(len(cases))]
        n = len(order)
        n_test = int(round(cfg.test_fraction * n))
        test, rest = order[:n_test], order[n_test:]
        if cfg.mode == "holdout":
            n_val = max(1, int(round(cfg.val_fraction * n)))
            val, train = rest[:n_val], rest[n_val:]
        else:
            folds = np.array_split(np.arange(len(rest)), cfg.folds)
            val_idx = set(folds[cfg.fold].tolist())
            val = [c for i, c in enumerate(rest) if i in val_idx]
            train = [c for i, c in enumerate(rest) if i not in val_idx]
        split = {"train": train, "val": val, "test": test}
    split = {k: sorted(v) for k, v in split.items()}
    if not split["train"]:
        raise MedsegError("split: the training set is empty (too few cases for the chosen fractions)")
    if not split["val"]:
        raise MedsegError("split: the validation set is empty (too few cases for the chosen fractions)")
    seen: dict[str, str] = {}
    for part, ids in split.items():
        for c in ids:
            if c in seen:
                raise MedsegError(f"split: case '{c}' is in both '{seen[c]}' and '{part}'")
            seen[c] = part
    return split


def _from_file(path: Path, cases: list[str], fold: int = 0) -> dict[str, list[str]]:
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise MedsegError(f"split.file: {path}: no such file") from None
    except IsADirectoryError:
        raise MedsegError(f"split.file: {path}: is a folder, not a JSON file") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise MedsegError(f"split.file: {path}: not valid JSON") from None
    if isinstance(raw, list):
        # nnU-Net's splits_final.json: one {"train", "val"} per fold
        if not raw:
            raise MedsegError(f"split.file: {path}: an empty list of folds")
        if fold >= len(raw):
            raise MedsegError(f"split.file: {path}: has {len(raw)} folds (0..{len(raw) - 1}), split.fold is {fold}")
        raw = raw[fold]
        if not isinstance(raw, dict) or "train" not in raw or "val" not in raw:
            raise MedsegError(f"split.file: {path}: fold {fold} needs a 'train' and a 'val' list")
        path = f"{path} fold {fold}"
    elif isinstance(raw, dict) and "training" in raw and "train" not in raw:
        from medseg.data.sources.datalist import datalist_split

        raw = datalist_split(Path(path), fold)
    if not isinstance(raw, dict) or "train" not in raw:
        raise MedsegError(f"split.file: {path}: needs a 'train' list and 'val' (or 'test') list")
    for part in ("train", "val", "test"):
        ids = raw.get(part)
        if ids is not None and (not isinstance(ids, list) or not all(isinstance(c, str) for c in ids)):
            raise MedsegError(f"split.file: {path}: '{part}' must be a list of case ids (strings)")
    train = list(raw["train"])
    if "val" in raw:
        val, test = list(raw["val"]), list(raw.get("test", []))
    elif "test" in raw:
        # a benchmark split with only train/test: validate on test (report it as such)
        val, test = list(raw["test"]), []
    else:
        raise MedsegError(f"split.file: {path}: needs a 'val' or 'test' list")
    known = set(cases)
    for c in train + val + test:
        if c not in known:
            raise MedsegError(f"split.file: {path}: case '{c}' is not in the data")
    listed = set(train) | set(val) | set(test)
    missing = [c for c in cases if c not in listed]
    if missing:
        # cases the file does not mention are left out of every set, never guessed into one
        pass
    return {"train": train, "val": val, "test": test}


def save_split(split: dict[str, list[str]], path: Path, cfg: SplitConfig, seed: int) -> None:
    doc = {"mode": cfg.mode, "seed": cfg.seed if cfg.seed is not None else seed, **split}
    if cfg.mode == "kfold":
        doc.update(folds=cfg.folds, fold=cfg.fold)
    Path(path).write_text(json.dumps(doc, indent=1))
