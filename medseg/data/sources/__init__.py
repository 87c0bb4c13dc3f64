"""Data sources: turn a `DataConfig` into normalised, resized `Sample`s.

One module per source, each registering a `SourceSpec` (see `base`):

* ``images``: ``root/images_dir`` + ``root/masks_dir`` matched by file stem;
* ``volumes``: NIfTI/NRRD/MHA image + label pairs, each axial slice a 2.5D sample;
* ``nnunet``: an nnU-Net v2 raw dataset folder (dataset.json, imagesTr/, labelsTr/);
* ``datalist``: a MONAI / Medical Segmentation Decathlon datalist JSON;
* ``dicom_series``: DICOM CT/MR series read as volumes, label volumes beside them;
* ``siim``: a folder of DICOMs + the SIIM-ACR RLE CSV.

The volumetric sources share `volumes.load_cases` (reorientation, 2.5D slices, write-back).

A new source is one module here plus its import below (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

from pathlib import Path

from medseg.data.cache import open_store
from medseg.data.readers import IMAGE_EXTS, VOLUME_EXTS
from medseg.data.schema import DataConfig
# registration order is the order `infer_input` asks them in: dicom_series before siim, so a CT/MR
# series folder is read as volumes while projection DICOMs (no position in space) stay siim's
from medseg.data.sources import images, volumes  # noqa: F401 — each module registers its source
from medseg.data.sources import nnunet, datalist, dicom_series, siim  # noqa: F401
from medseg.data.sources.base import (
    SOURCES,
    LoadedData,
    PredictionWriter,
    Sample,
    SourceSpec,
    available_sources,
    get_source,
    prediction_units,
    register_source,
)
from medseg.errors import MedsegError

__all__ = [
    "LoadedData", "PredictionWriter", "SOURCES", "Sample", "SourceSpec", "available_sources", "get_source",
    "infer_input", "load_data", "prediction_units", "register_source",
]


def load_data(cfg: DataConfig, with_masks: bool = True, progress: bool = False, store=None, only=None) -> LoadedData:
    """Read, normalise and resize a dataset described by a `DataConfig`.

    Args:
        cfg: the data section of the run config (paths already resolved).
        with_masks: read masks/labels/RLE (training, evaluation); False for prediction,
            where no mask is needed and sample.mask is None.
        progress: show a rich progress bar while reading.
        store: where prepared units go (`medseg.data.cache`); default: the on-disk cache under
            data.cache_dir when it is set (units prepared earlier are read from it, on use),
            else memory.
        only: case ids to load, the others passed over (evaluating one split part of a large
            set holds that part alone); None: every case.

    Returns:
        LoadedData with the samples and facts about them.

    Raises:
        MedsegError: one line naming the file (or config key) at fault; with
            data.skip_bad, per-file problems are listed in LoadedData.bad instead, but an
            empty result is still an error.
    """
    if store is None:
        store = open_store(cfg, with_masks)
    return get_source(cfg.source).load(cfg, with_masks, progress, store, only=frozenset(only) if only is not None else None)


def infer_input(path: Path, like: DataConfig) -> DataConfig:
    """A copy of a training `DataConfig` that reads `path` for prediction (load with with_masks=False).

    Keeps normalisation, input_size, resize_mode, context_slices, orientation, color, modality
    and image_suffix; drops masks, RLE and cases CSVs. The run's own source (``like.source``)
    is asked first, so an input it can read is read the way the model was trained; then the
    others in registration order (images, volumes, nnunet, datalist, dicom_series, siim): a
    file by its type; a folder by what it holds (a ``like.images_dir`` or ``images/``
    sub-folder of images, images, volumes, an nnU-Net dataset.json, a datalist dataset.json,
    DICOM series with positions in space, then any DICOMs searched recursively).

    Args:
        path: what the user passed to `medseg predict`.
        like: the training run's data config.

    Raises:
        MedsegError: path missing, or nothing recognisable in it.
    """
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise MedsegError(f"{path}: no such file or folder")
    common = {"root": path, "rle_csv": None, "cases_csv": None}
    specs = [SOURCES[like.source]] if like.source in SOURCES else []
    specs += [spec for name, spec in SOURCES.items() if name != like.source]
    for spec in specs:
        found = spec.match_file(path) if path.is_file() else spec.match_folder(path, like)
        if found is not None:
            return like.model_copy(update={**common, "source": spec.name, **found})
    what = f"images ({', '.join(IMAGE_EXTS)}), volumes ({', '.join(VOLUME_EXTS)}) or .dcm files"
    if path.is_file():
        raise MedsegError(f"{path}: not an image ({', '.join(IMAGE_EXTS)}), volume ({', '.join(VOLUME_EXTS)}) or .dcm file")
    raise MedsegError(f"{path}: no {what} found")
