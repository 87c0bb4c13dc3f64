"""The ``datalist`` source: a MONAI / Medical Segmentation Decathlon datalist JSON.

``data.root`` is the JSON file, or a folder holding ``dataset.json`` (the Decathlon layout)::

    {"training":   [{"image": "imagesTr/la_003.nii.gz", "label": "labelsTr/la_003.nii.gz"}, ...],
     "validation": [{"image": ..., "label": ...}, ...],          optional
     "test":       ["imagesTs/la_001.nii.gz", ...]}              optional (strings or {"image": ...})

Paths are relative to the JSON's folder (absolute paths are kept). An ``image`` is one file --
a 3D volume, a 4D volume with its channels last (the Decathlon's multi-modal MRI), or a 2D
image file -- or a list of files, one per channel (MONAI's multi-channel datalists). Volumes
become 2.5D samples exactly as in the ``volumes`` source (`volumes.load_cases`); a 2D image is
a volume of one slice. Labels: any value > 0 is foreground.

Case ids: each entry's volume name, the first image file's name without its extension
(``la_003``), unless ``data.cases_csv`` maps it to a patient.

The datalist's own split: with ``split.mode: file`` and ``split.file`` pointing at the same
datalist JSON, `datalist_split` makes the split: the "training" entries train and the
"validation" entries validate; a datalist without "validation" whose training entries carry
a "fold" number (MONAI Auto3DSeg's datalists) validates on the entries of fold ``split.fold``.
Without split.mode file the entries of both lists are pooled and split like any other data.

Loading for training reads "training" and "validation"; without labels (``medseg predict``)
the "test" entries are read when there are any, else the images of both other lists.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from medseg.data.readers import IMAGE_EXTS, volume_format, volume_stem
from medseg.data.schema import DataConfig
from medseg.data.sources.base import BadFiles, LoadedData, SourceSpec, register_source, require_root
from medseg.data.sources.volumes import LabelReader, VolumeCase, VolumeWriter, is_image_2d, load_cases
from medseg.data.sources.volumes import read_case_image
from medseg.errors import MedsegError

DATASET_JSON = "dataset.json"
_LISTS = ("training", "validation", "test")


def datalist_path(root: Path) -> Path:
    """The datalist JSON that `root` names: the file itself, or ``root/dataset.json``.

    Args:
        root: data.root.
    """
    root = Path(root)
    return root / DATASET_JSON if root.is_dir() else root


def read_datalist(path: Path) -> dict:
    """The parsed datalist, checked at the top level: an object with a list under 'training' or 'test'.

    Args:
        path: the JSON file.

    Raises:
        MedsegError: missing, not JSON, or not a datalist; names the file.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MedsegError(f"{path}: no such file (a datalist JSON, or a folder holding {DATASET_JSON})") from None
    except IsADirectoryError:
        raise MedsegError(f"{path}: is a folder, not a datalist JSON") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise MedsegError(f"{path}: not valid JSON") from None
    if not isinstance(raw, dict) or not any(k in raw for k in ("training", "test")):
        raise MedsegError(f"{path}: not a datalist (expected a JSON object with a 'training' list of "
                          "{{\"image\", \"label\"}} entries)")
    for key in _LISTS:
        if key in raw and not isinstance(raw[key], list):
            raise MedsegError(f"{path}: '{key}' must be a list of entries")
    return raw


def _resolve(base: Path, p: Any) -> Optional[Path]:
    if not isinstance(p, str) or not p.strip():
        return None
    q = Path(p).expanduser()
    return q if q.is_absolute() else (base / q)


def _entry_files(entry: Any, base: Path) -> tuple[Optional[list[Path]], Optional[Path], Optional[str]]:
    """(image files, label or None, problem) of one entry; test entries may be bare strings."""
    if isinstance(entry, str):
        entry = {"image": entry}
    if not isinstance(entry, dict) or "image" not in entry:
        return None, None, "entry has no 'image'"
    imgs = entry["image"] if isinstance(entry["image"], list) else [entry["image"]]
    images = [_resolve(base, p) for p in imgs]
    if not images or any(p is None for p in images):
        return None, None, "'image' must be a path or a list of paths"
    label = None
    if entry.get("label") is not None:
        label = _resolve(base, entry["label"])
        if label is None:
            return None, None, "'label' must be a path"
    return images, label, None  # type: ignore[return-value]


def case_name(image: Path) -> str:
    """A datalist entry's volume name (and case id): its first image file's name without the extension.

    Args:
        image: the entry's first image file.
    """
    return volume_stem(image) if volume_format(image) is not None else Path(image).stem


def _readable(p: Path) -> bool:
    return volume_format(p) is not None or p.suffix.lower() in IMAGE_EXTS


def datalist_split(path: Path, fold: int = 0) -> dict[str, list[str]]:
    """The split a datalist itself defines: {'train', 'val', 'test'} case ids (see the module docstring).

    Args:
        path: the datalist JSON.
        fold: with no "validation" list, the training entries whose "fold" equals this validate.

    Raises:
        MedsegError: the datalist defines no validation set; names the file.
    """
    path = Path(path)
    raw = read_datalist(path)
    base = path.parent

    def names(entries: list) -> list[tuple[str, Any]]:
        out = []
        for i, e in enumerate(entries):
            images, _, problem = _entry_files(e, base)
            if problem:
                raise MedsegError(f"split.file: {path}: entry {i}: {problem}")
            out.append((case_name(images[0]), e))
        return out

    training = names(raw.get("training", []))
    if "validation" in raw:
        return {"train": [n for n, _ in training], "val": [n for n, _ in names(raw["validation"])], "test": []}
    folds = [e.get("fold") if isinstance(e, dict) else None for _, e in training]
    if not training or any(f is None for f in folds):
        raise MedsegError(f"split.file: {path}: the datalist has no 'validation' list and not every training "
                          "entry has a 'fold' (use split.mode holdout or kfold)")
    val = [n for (n, _), f in zip(training, folds) if f == fold]
    if not val:
        raise MedsegError(f"split.file: {path}: no training entry has 'fold' {fold} (split.fold)")
    return {"train": [n for (n, _), f in zip(training, folds) if f != fold], "val": val, "test": []}


def _load_datalist(cfg: DataConfig, with_masks: bool, progress: bool, store, only=None) -> LoadedData:
    root = require_root(cfg)
    path = datalist_path(root)
    raw = read_datalist(path)
    base = path.parent
    bad = BadFiles(cfg.skip_bad)
    if with_masks:
        lists = [k for k in ("training", "validation") if k in raw]
    else:
        lists = ["test"] if raw.get("test") else [k for k in ("training", "validation") if k in raw]
    # the Decathlon's {"modality": {"0": "CT", "1": ...}}: CT channels are windowed as CT
    mods = raw.get("modality") if isinstance(raw.get("modality"), dict) else {}
    try:
        modalities = [("ct" if str(mods[k]).strip().lower() == "ct" else None) for k in sorted(mods, key=int)] or None
    except (TypeError, ValueError):
        modalities = None
    cases: list[VolumeCase] = []
    seen: dict[str, str] = {}
    for key in lists:
        for i, entry in enumerate(raw[key]):
            where = f"'{key}' entry {i}"
            images, label, problem = _entry_files(entry, base)
            if problem:
                bad.report(path, f"{where}: {problem}")
                continue
            missing = next((p for p in images + ([label] if with_masks and label else []) if not p.is_file()), None)
            if missing is not None:
                bad.report(missing, f"no such file (listed in {path.name} {where})")
                continue
            unreadable = next((p for p in images if not _readable(p)), None)
            if unreadable is not None:
                bad.report(unreadable, "not a volume or image file the datalist source reads")
                continue
            if with_masks and label is None:
                bad.report(images[0], f"no 'label' in {path.name} {where}")
                continue
            name = case_name(images[0])
            if name in seen:
                bad.report(images[0], f"volume name '{name}' also given by {path.name} {seen[name]}")
                continue
            seen[name] = where
            if len(images) > 1 and any(is_image_2d(p) != is_image_2d(images[0]) for p in images):
                bad.report(images[0], f"{where} mixes 2D image and volume channel files")
                continue
            cases.append(VolumeCase(name=name, images=images, label=label if with_masks else None,
                                    keys=[name, images[0].name], modalities=modalities))
    if not cases and not bad.items:
        raise MedsegError(f"{path}: no entries in {' or '.join(repr(k) for k in lists) or repr('training')}")
    return load_cases(cfg, cases, bad, "datalist", path, progress, store, only=only)


def _read_raw(path: str) -> Any:
    return read_case_image(VolumeCase(name="", images=[Path(path)]), "as_stored")[0]


def _is_datalist(path: Path) -> bool:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    # nnU-Net v2's dataset.json (channel_names) has the same name and is the nnunet source's
    lists = any(isinstance(raw.get(k), list) for k in ("training", "test")) if isinstance(raw, dict) else False
    return lists and "channel_names" not in raw


def _match_file(path: Path) -> Optional[dict]:
    return {} if path.suffix.lower() == ".json" and _is_datalist(path) else None


def _match_folder(path: Path, like: DataConfig) -> Optional[dict]:
    return {} if (path / DATASET_JSON).is_file() and _is_datalist(path / DATASET_JSON) else None


SOURCE = register_source(SourceSpec(
    name="datalist",
    description="a MONAI / Decathlon datalist JSON (training/validation/test entries of image + label paths)",
    load=_load_datalist,
    read_raw=_read_raw,
    mask_reader=LabelReader,
    writer=VolumeWriter,
    match_file=_match_file,
    match_folder=_match_folder,
    volumetric=True,
))
