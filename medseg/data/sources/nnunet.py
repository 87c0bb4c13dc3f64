"""The ``nnunet`` source: an nnU-Net v2 raw dataset folder.

Layout (nnU-Net v2's ``nnUNet_raw/DatasetXXX_Name``)::

    dataset.json          channel_names {"0": "CT", ...}, labels {"background": 0, ...}, file_ending ".nii.gz"
    imagesTr/CASE_0000<file_ending>, CASE_0001<file_ending>, ...   one file per channel
    labelsTr/CASE<file_ending>
    imagesTs/CASE_0000<file_ending>, ...                            optional, unlabelled

3D endings (.nii.gz, .nii, .nrrd, .mha, .mhd) are read as volumes and become 2.5D samples
exactly as the ``volumes`` source makes them (`volumes.load_cases`: reorientation, context
slices per channel, per-volume meta, predictions written per volume in the input's geometry,
``CASE_prob<ending>`` and ``CASE_mask<ending>``). 2D endings (.png, .bmp, .jpg, .tif) are
read as images, the channel files stacked (an RGB file counts its three channels, as nnU-Net's
natural-image reader does), each case a volume of one slice -- nnU-Net's own convention for
2D data -- with predictions ``probs/CASE.png`` and ``masks/CASE.png``.

Labels: medseg segments one foreground class, so **any label value > 0 is foreground**
(binary segmentation: every foreground class of dataset.json's ``labels`` is merged into
one). Label values that dataset.json does not declare are reported as bad files.

Splits: nnU-Net's ``splits_final.json`` (a list of {"train": [...], "val": [...]}, one per
fold, in ``nnUNet_preprocessed``) is read with ``split.mode: file``, ``split.file`` pointing
at it and ``split.fold`` picking the fold; case ids are nnU-Net's case identifiers.

Prediction (``data.root`` without labels): a dataset folder reads ``imagesTs`` when it holds
images, else ``imagesTr``; a folder of ``CASE_XXXX<ending>`` files (no dataset.json) or one
such file (its sibling channels with it) is read directly.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Optional

from medseg.data.readers import IMAGE_EXTS, VOLUME_EXTS
from medseg.data.schema import DataConfig
from medseg.data.sources.base import BadFiles, LoadedData, SourceSpec, listed_files, register_source, require_root
from medseg.data.sources.volumes import LabelReader, VolumeCase, VolumeWriter, load_cases
from medseg.data.sources.volumes import read_case_image as _read_case_image
from medseg.errors import MedsegError

DATASET_JSON = "dataset.json"
_ENDINGS = VOLUME_EXTS + IMAGE_EXTS
_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<idx>\d{4})$")
# channel names nnU-Net itself treats as CT (CTNormalization); the others are decided from the values
_CT_NAMES = {"ct"}


def _fail(path: Path, reason: str) -> MedsegError:
    return MedsegError(f"{path}: {reason}")


def read_dataset_json(path: Path) -> dict:
    """dataset.json of an nnU-Net v2 raw dataset, checked: channel_names, labels and file_ending.

    Args:
        path: the dataset.json file.

    Returns:
        {'channel_names': [name of channel 0, 1, ...], 'label_values': set of declared label
        values, 'file_ending': str, 'raw': the parsed JSON}.

    Raises:
        MedsegError: unreadable JSON or a missing/malformed key; one line naming the file and key.
    """
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _fail(path, "no such file (an nnU-Net v2 dataset folder holds dataset.json)") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _fail(path, "not valid JSON") from None
    if not isinstance(raw, dict):
        raise _fail(path, "expected a JSON object with channel_names, labels and file_ending")
    for key in ("channel_names", "labels", "file_ending"):
        if key not in raw:
            raise _fail(path, f"missing key '{key}' (nnU-Net v2 dataset.json needs channel_names, labels, file_ending)")
    names = raw["channel_names"]
    if not isinstance(names, dict) or not names:
        raise _fail(path, "'channel_names' must be a non-empty object {\"0\": \"CT\", ...}")
    try:
        index = {int(k): str(v) for k, v in names.items()}
    except (TypeError, ValueError):
        raise _fail(path, "'channel_names' keys must be channel numbers \"0\", \"1\", ...") from None
    if sorted(index) != list(range(len(index))):
        raise _fail(path, f"'channel_names' keys must be 0..{len(index) - 1}, got {', '.join(map(str, sorted(index)))}")
    labels = raw["labels"]
    if not isinstance(labels, dict) or not labels:
        raise _fail(path, "'labels' must be a non-empty object {\"background\": 0, \"name\": 1, ...}")
    values: set[float] = set()
    for name, v in labels.items():
        # a region (nnU-Net's region-based training) lists several label values
        for x in v if isinstance(v, list) else [v]:
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                raise _fail(path, f"'labels' value of '{name}' must be an integer label (or a list of them)")
            values.add(float(x))
    ending = raw["file_ending"]
    if not isinstance(ending, str) or not ending.startswith("."):
        raise _fail(path, "'file_ending' must be a file ending such as \".nii.gz\"")
    if not ending.lower().endswith(_ENDINGS):
        raise _fail(path, f"'file_ending' {ending} is not supported (use one of {', '.join(_ENDINGS)})")
    return {"channel_names": [index[i] for i in range(len(index))], "label_values": values, "file_ending": ending,
            "raw": raw}


def _split_name(path: Path, ending: str) -> Optional[tuple[str, int]]:
    """(case, channel index) of 'CASE_0001<ending>', or None."""
    if not path.name.endswith(ending):
        return None
    m = _CHANNEL.match(path.name[: -len(ending)])
    return (m["case"], int(m["idx"])) if m else None


def _channel_files(folder: Path, ending: str, bad: BadFiles, n_channels: Optional[int]) -> tuple[dict[str, list[Path]], set[str]]:
    """(case -> its channel files in channel order, every case name seen) from a folder of CASE_XXXX<ending> files.

    Problems (a missing channel, an index beyond channel_names, a badly named file) are reported.

    Args:
        folder: imagesTr, imagesTs or a bare folder.
        ending: dataset.json's file_ending.
        bad: where problems go.
        n_channels: len(channel_names), or None without a dataset.json (the files decide).
    """
    found: dict[str, dict[int, Path]] = {}
    for p in listed_files(folder, bad, lambda q: q.name.endswith(ending)):
        parsed = _split_name(p, ending)
        if parsed is None:
            bad.report(p, f"not named CASE_XXXX{ending} (nnU-Net: a 4-digit channel index after the case name)")
            continue
        found.setdefault(parsed[0], {})[parsed[1]] = p
    out: dict[str, list[Path]] = {}
    is_2d = ending.lower().endswith(IMAGE_EXTS)
    for case in sorted(found):
        chans = found[case]
        n = n_channels if n_channels is not None else max(chans) + 1
        extra = sorted(i for i in chans if i >= n)
        if extra:
            bad.report(chans[extra[0]], f"channel index {extra[0]:04d} beyond dataset.json channel_names ({n} channels)")
            continue
        if is_2d and sorted(chans) == [0] and n == 3:
            out[case] = [chans[0]]  # one RGB file gives the three channels (nnU-Net's natural images)
            continue
        missing = [i for i in range(n) if i not in chans]
        if missing:
            bad.report(folder / f"{case}_{missing[0]:04d}{ending}",
                       f"channel file missing (dataset.json channel_names lists {n} channels)" if n_channels is not None
                       else f"channel file missing (case {case} has channel {max(chans):04d})")
            continue
        out[case] = [chans[i] for i in range(n)]
    return out, set(found)


def _has_images(folder: Path) -> bool:
    return folder.is_dir() and any(p.is_file() and not p.name.startswith(".") for p in folder.iterdir())


def _bare_ending(folder: Path) -> str:
    """The file ending of a folder of CASE_XXXX files without dataset.json (prediction input)."""
    endings = set()
    for p in folder.iterdir():
        if p.is_file() and not p.name.startswith("."):
            for e in sorted(_ENDINGS, key=len, reverse=True):
                if p.name.lower().endswith(e) and _CHANNEL.match(p.name[: -len(e)]):
                    endings.add(p.name[-len(e):])
                    break
    if not endings:
        raise MedsegError(f"no nnU-Net CASE_XXXX images found in {folder} (and no {DATASET_JSON})")
    if len(endings) > 1:
        raise MedsegError(f"{folder}: files of several endings ({', '.join(sorted(endings))}); nnU-Net uses one file_ending")
    return endings.pop()


def _modalities(names: Optional[list[str]]) -> Optional[list[Optional[str]]]:
    if names is None:
        return None
    return ["ct" if n.strip().lower() in _CT_NAMES else None for n in names]


def _load_nnunet(cfg: DataConfig, with_masks: bool, progress: bool, store, only=None) -> LoadedData:
    root = require_root(cfg)
    bad = BadFiles(cfg.skip_bad)
    ds_json = root / DATASET_JSON if root.is_dir() else None
    info = read_dataset_json(ds_json) if ds_json is not None and ds_json.is_file() else None
    if with_masks and info is None:
        raise MedsegError(f"{root / DATASET_JSON if root.is_dir() else root}: no such file "
                          "(data.root: an nnU-Net v2 dataset folder with dataset.json, imagesTr/ and labelsTr/)")
    names = info["channel_names"] if info else None
    n_channels = len(names) if names else None
    if root.is_file():  # one channel file: its case, sibling channels with it
        ending = next((root.name[-len(e):] for e in sorted(_ENDINGS, key=len, reverse=True)
                       if root.name.lower().endswith(e)), None)
        parsed = _split_name(root, ending) if ending else None
        if parsed is None:
            raise MedsegError(f"{root}: not an nnU-Net image file CASE_XXXX<ending> ({', '.join(_ENDINGS)})")
        folder = root.parent
        found, seen = _channel_files(folder, ending, bad, None)
        files = {k: v for k, v in found.items() if k == parsed[0]}
    elif info is not None:
        ending = info["file_ending"]
        folder = root / "imagesTr"
        if not with_masks and _has_images(root / "imagesTs"):
            folder = root / "imagesTs"
        if not folder.is_dir():
            raise MedsegError(f"{folder}: images folder not found (nnU-Net dataset: imagesTr/)")
        files, seen = _channel_files(folder, ending, bad, n_channels)
    else:
        folder = root
        ending = _bare_ending(root)
        files, seen = _channel_files(root, ending, bad, None)
    labels: dict[str, Path] = {}
    if with_masks:
        label_dir = root / "labelsTr"
        if not label_dir.is_dir():
            raise MedsegError(f"{label_dir}: labels folder not found (nnU-Net dataset: labelsTr/)")
        for p in listed_files(label_dir, bad, lambda q: q.name.endswith(ending)):
            labels[p.name[: -len(ending)]] = p
        for case in sorted(set(labels) - seen):  # cases seen with a bad channel file are reported already
            bad.report(labels[case], f"label has no image {case}_0000{ending} in {folder}")
    if not files and not bad.items:
        raise MedsegError(f"no nnU-Net images found in {folder} (looked for CASE_XXXX{ending})")
    cases = []
    for case, chans in files.items():
        if with_masks and case not in labels:
            bad.report(chans[0], f"no label {case}{ending} in {root / 'labelsTr'}")
            continue
        cases.append(VolumeCase(name=case, images=chans, label=labels.get(case), keys=[case],
                                modalities=_modalities(names)))
    declared = info["label_values"] if info else None

    def label_check(path: Path, values: list) -> Optional[str]:
        unknown = [v for v in values if float(v) not in declared] if declared is not None else []
        if unknown:
            return f"label values {unknown} not declared in dataset.json 'labels'"
        return None

    return load_cases(cfg, cases, bad, "nnunet", folder, progress, store, only=only, label_check=label_check,
                      n_channels=n_channels, channels_from=f"{ds_json} channel_names")


def _read_raw(path: str) -> Any:
    return _read_case_image(VolumeCase(name="", images=[Path(path)]), "as_stored")[0]


def _match_file(path: Path) -> Optional[dict]:
    for e in sorted(_ENDINGS, key=len, reverse=True):
        if path.name.lower().endswith(e):
            return {} if _CHANNEL.match(path.name[: -len(e)]) else None
    return None


def _match_folder(path: Path, like: DataConfig) -> Optional[dict]:
    ds = path / DATASET_JSON
    if ds.is_file():
        try:
            raw = json.loads(ds.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return {} if isinstance(raw, dict) and "channel_names" in raw and "file_ending" in raw else None
    if like.source == "nnunet":  # a bare imagesTs-like folder, only for a run trained on nnU-Net data
        try:
            _bare_ending(path)
        except MedsegError:
            return None
        return {}
    return None


SOURCE = register_source(SourceSpec(
    name="nnunet",
    description="an nnU-Net v2 raw dataset folder (dataset.json, imagesTr/CASE_XXXX, labelsTr/CASE); labels > 0 are foreground",
    load=_load_nnunet,
    read_raw=_read_raw,
    mask_reader=LabelReader,
    writer=VolumeWriter,
    match_file=_match_file,
    match_folder=_match_folder,
    volumetric=True,
))
