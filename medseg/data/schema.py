"""The data layer's own config sections: where data is, how it is read and split.

They live here, beside the code that reads them, so the data layer never imports the
config module above it; `medseg.config` composes them into the full schema (the single
source of truth for every knob) and re-exports them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Section(BaseModel):
    """A config section: unknown keys are errors, assignments are validated."""

    # allow_inf_nan=False: .inf or .nan in any float key is refused at load time, not met mid-training
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class NormalizeConfig(Section):
    mode: Literal["auto", "zscore", "percentile", "ct_window", "minmax", "none"] = Field(
        "auto",
        description="Intensity normalisation. auto: ct_window for CT volumes, else percentile clip then z-score.",
    )
    window: tuple[float, float] = Field(
        (40.0, 400.0), description="CT window as (level, width) in HU, used by ct_window."
    )
    percentiles: tuple[float, float] = Field(
        (0.5, 99.5), description="Lower/upper percentiles to clip before z-scoring (percentile mode)."
    )

    @field_validator("window")
    @classmethod
    def _width_positive(cls, v):
        if v[1] <= 0:
            raise ValueError("width (second value) must be > 0")
        return v

    @field_validator("percentiles")
    @classmethod
    def _pct(cls, v):
        if not (0 <= v[0] < v[1] <= 100):
            raise ValueError("need 0 <= low < high <= 100")
        return v


class DataConfig(Section):
    source: str = Field(
        "images",
        description="Data source, one of the registered sources (medseg.data.sources): images (images/ + masks/ "
        "folders), volumes (NIfTI/NRRD/MHA image+label pairs read as 2.5D), siim (DICOM folder + SIIM-ACR RLE CSV), "
        "nnunet (an nnU-Net v2 raw dataset folder), datalist (a MONAI / Decathlon datalist JSON), dicom_series "
        "(DICOM CT/MR series read as volumes, labels beside them).",
    )
    root: Optional[Path] = Field(None, description="Dataset folder (relative paths resolve against the config file).")
    images_dir: str = Field("images", description="images source: sub-folder of root holding the images.")
    masks_dir: str = Field("masks", description="images source: sub-folder of root holding the masks (same stems).")
    image_suffix: str = Field("_image", description="volumes source: file-stem suffix of image volumes.")
    label_suffix: str = Field("_label", description="volumes source: file-stem suffix of label volumes.")
    rle_csv: Optional[Path] = Field(None, description="siim source: the competition's train-rle.csv (ImageId, EncodedPixels).")
    cases_csv: Optional[Path] = Field(
        None, description="Optional CSV with a 'case' column (file stem) and a patient column used to group the split."
    )
    group_column: str = Field("patient_id", description="Column of cases_csv that identifies a patient for splitting.")
    modality: Literal["auto", "ct", "mr", "us", "xray", "other"] = Field(
        "auto", description="Imaging modality; auto: CT if a volume holds values below -500, else other."
    )
    normalize: NormalizeConfig = Field(default_factory=NormalizeConfig, description="Intensity normalisation.")
    orientation: Literal["ras", "lps", "canonical", "as_stored"] = Field(
        "ras",
        description="Volumes: the one orientation every volume is turned to before slicing, whatever its format "
        "(predictions are written back in the file's own): ras (RAS+, nibabel's closest canonical) or lps (LPS+, "
        "DICOM/ITK's); canonical: each format's own frame (RAS+ for NIfTI, LPS+ for DICOM series, MHA/MHD, LPS "
        "NRRD); as_stored: the file's own axis order.",
    )
    context_slices: int = Field(
        1, ge=0, le=8, description="volumes: k neighbouring slices on each side stacked as channels (2k+1 channels)."
    )
    color: Literal["auto", "grey", "rgb"] = Field(
        "auto", description="images: grey (1 channel) or rgb (3); auto: grey unless some image has distinct colour channels."
    )
    input_size: tuple[int, int] = Field((256, 256), description="Network input (height, width) in pixels.")
    resize_mode: Literal["resize", "letterbox", "spacing"] = Field(
        "resize", description="resize: scale to input_size; letterbox: keep aspect ratio and zero-pad; spacing: "
        "resample each image (each slice of a volume) to data.target_spacing and zero-pad to input_size, so a "
        "lesion's size in mm is the same number of pixels in every case (an image too large for input_size at that "
        "spacing is shrunk to fit; one without spacing, e.g. a PNG, is letterboxed). The plan picks it for volumes in "
        "the patches mode.",
    )
    target_spacing: Optional[tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]]] = Field(
        None, description="resize_mode spacing: the in-plane pixel size (row, col) to resample to, in the files' units "
        "(mm for NIfTI, NRRD, DICOM). The plan sets it with the patches mode: the median spacing at the planned size.",
    )
    skip_bad: bool = Field(
        False, description="Skip unreadable/unmatched/mismatched files (listed in the run's bad_files.json) instead of failing."
    )
    cache_dir: Optional[Path] = Field(
        None, description="Folder of the preprocessed cache (`medseg cache`): each image or volume is prepared once "
        "(read, normalised, resized) and kept there, one entry per data config; every verb then reads the prepared "
        "arrays from it, on use, instead of decoding and resizing the source files again. A changed source file is "
        "prepared again. Never inside a run folder. null: no cache.",
    )

    @field_validator("input_size")
    @classmethod
    def _size(cls, v):
        if min(v) < 16:
            raise ValueError("each side must be >= 16 (and a multiple of the model's output stride)")
        return v

    @model_validator(mode="after")
    def _spacing(self):
        if self.resize_mode == "spacing" and self.target_spacing is None:
            raise ValueError("data.target_spacing: required when data.resize_mode is 'spacing'")
        return self


class SplitConfig(Section):
    mode: Literal["holdout", "kfold", "file"] = Field(
        "holdout", description="holdout: random val/test fractions by case; kfold: fold k of n; file: read split.json."
    )
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="holdout: share of cases for validation.")
    test_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="holdout/kfold: share of cases held out as test.")
    folds: int = Field(5, ge=2, description="kfold: number of folds.")
    fold: int = Field(
        0, ge=0, description="kfold: which fold is validation (0-based); file: which fold of a list-of-folds file "
        "(nnU-Net splits_final.json) or of a datalist whose training entries carry 'fold'."
    )
    file: Optional[Path] = Field(
        None, description="file: JSON with case-id lists 'train', 'val' and optionally 'test' (a file with only "
        "train/test uses test as val); or a list of such {'train', 'val'} folds (nnU-Net splits_final.json, fold "
        "picked by split.fold); or a MONAI/Decathlon datalist JSON (its 'training' entries train, its 'validation' "
        "entries validate; without 'validation', entries whose 'fold' equals split.fold validate)."
    )
    seed: Optional[int] = Field(None, description="Split seed; defaults to the run seed.")

    @model_validator(mode="after")
    def _check(self):
        if self.mode == "kfold" and self.fold >= self.folds:
            raise ValueError("split.fold: must be < split.folds")
        if self.mode == "file" and self.file is None:
            raise ValueError("split.file: required when split.mode is 'file'")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("split.val_fraction: val_fraction + test_fraction must be < 1")
        return self


