"""The config schema: the single source of truth for every knob, its default and its meaning.

`load_config(path, overrides)` reads YAML, applies `--set a.b=value` overrides and validates;
any problem becomes a one-line `MedsegError` naming the key. `reference()` renders the
schema as the config reference (docs/CONFIG.md is generated from it).
"""

from __future__ import annotations

import difflib
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from medseg.data.schema import DataConfig, NormalizeConfig, Section, SplitConfig
from medseg.data.sources import available_sources
from medseg.data.tta import DEFAULT_TTA_SETS, check_tta_names
from medseg.errors import MedsegError
from medseg.metrics.contract import MetricContract
from medseg.models import available_models, get_model_spec
from medseg.models.unet import UNET_CHANNELS

__all__ = ["Config", "DataConfig", "NormalizeConfig", "SplitConfig", "config_from_dict", "dump_config", "load_config", "read_yaml"]


class ModelConfig(Section):
    name: str = Field(
        "flexunet-resnet34",
        description="Network: a registered model (`medseg models` lists them with their stride), e.g. unet, basicunet, "
        "segresnet, flexunet-resnet18/34/50, flexunet-efficientnet-b0..b4. "
        "The default won a 2-fold cross-validation inside BUSI's training 80% against the small unet (BENCHMARKS.md §5).",
    )
    channels: list[int] = Field(
        default_factory=lambda: list(UNET_CHANNELS),
        description="unet: feature channels per level (also basicunet's 6 features if given 6; other models "
        "ignore it). `medseg models` lists each model's stride and defaults.",
    )
    res_units: int = Field(2, ge=0, le=4, description="unet: residual units per level (0: plain convolutions).")
    deep_supervision: int = Field(
        0, ge=0, le=8, description="Side outputs at 1/2, 1/4, ... resolution that the loss also scores in training "
        "(deep supervision; weights in loss.deep_supervision, default 1, 0.5, 0.25, ...); 0: off. Only networks "
        "that emit them (flexunet-*, up to 4; `medseg models` says which). Inference uses the full-resolution output.",
    )
    image_head: bool = Field(
        False, description="An image-level head on the deepest encoder features (average and max pooled, one linear "
        "layer) trained by BCE on 'the image has foreground' (weight loss.image, default 1), as the SIIM-ACR "
        "pneumothorax winners paired a classifier with their segmenter. In eval the network returns "
        "sigmoid(mask) x sigmoid(image) as one probability map, so an image the head calls empty is scaled down "
        "as a whole. Only networks that have one (flexunet-*; `medseg models` says which). Off by default: on "
        "BUSI at a 6-minute budget it halved false alarms on normal images but cost the mask head more Dice on "
        "lesion images than it gained (BENCHMARKS §5l).",
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout probability inside the network.")
    pretrained: Optional[Path] = Field(
        None, description="Local weights file (state_dict or Lightning checkpoint) loaded before training; only tensors "
        "and plain containers are read from it (nothing is unpickled)."
    )
    pretrained_min_share: float = Field(
        0.5, ge=0.0, le=1.0, description="model.pretrained must fill at least this share of the network's tensors "
        "(by name and shape), else it is refused as made for another network.",
    )

    @field_validator("name")
    @classmethod
    def _known(cls, v):
        names = available_models()
        if v not in names:
            hint = difflib.get_close_matches(v, names, n=1)
            raise ValueError(f"unknown model '{v}'" + (f" (did you mean '{hint[0]}'?)" if hint else "") + f"; choose from {', '.join(names)}")
        return v


class OptimConfig(Section):
    name: Literal["adamw", "sgd"] = Field("adamw", description="Optimiser.")
    lr: float = Field(1e-3, gt=0.0, le=10.0, description="Peak learning rate (after warm-up).")
    weight_decay: float = Field(1e-4, ge=0.0, description="Decoupled weight decay (AdamW) or L2 (SGD).")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum (Nesterov).")


class ScheduleConfig(Section):
    name: Literal["cosine", "poly", "plateau", "constant"] = Field(
        "cosine", description="LR schedule after warm-up; stepped per optimiser step (plateau: per epoch on the monitor)."
    )
    warmup_epochs: float = Field(1.0, ge=0.0, description="Linear warm-up length in epochs (may be fractional).")
    min_lr_ratio: float = Field(0.01, ge=0.0, le=1.0, description="Final LR as a fraction of the peak (cosine/poly floor).")
    poly_power: float = Field(0.9, gt=0.0, description="poly: exponent of (1 - progress).")
    plateau_patience: int = Field(3, ge=1, description="plateau: epochs without improvement before the LR is cut.")
    plateau_factor: float = Field(0.5, gt=0.0, lt=1.0, description="plateau: LR multiplier on a cut.")
    follow_budget: bool = Field(
        True,
        description="With train.budget_minutes: when the epochs measured so far say the rest of the budget holds fewer "
        "epochs than train.epochs, training ends after those and the cosine/poly decay is shortened to end with them "
        "(otherwise the budget's hard stop cuts the schedule while the LR is still high).",
    )
    fill_budget: bool = Field(
        False,
        description="With train.budget_minutes: when the epochs measured in the first half of training say the budget "
        "holds more epochs than train.epochs (one kept spare), training goes on to them and the cosine/poly decay is "
        "stretched to end with them (at most 1000 epochs). The plan sets it when it chose train.epochs from its step-cost "
        "estimate; false: train.epochs is the most that run.",
    )


class AugmentConfig(Section):
    preset: Literal["none", "light", "medium", "heavy"] = Field(
        "light", description="Augmentation preset (albumentations); geometric transforms move image and mask together."
    )
    overrides: dict[str, float] = Field(
        default_factory=dict, description="Per-transform probability overrides, e.g. {hflip: 0.0, rotate: 0.3}."
    )
    copy_paste: float = Field(
        0.0, ge=0.0, le=1.0,
        description="Probability that a training image with foreground gets one more lesion, cut from another training "
        "image (mirrored, scaled 0.75-1.25, feathered, never touching its own lesions), before the other transforms; "
        "empty images stay empty. 0: off.",
    )


class SamplerConfig(Section):
    positive_share: Optional[float] = Field(
        None, ge=0.0, le=1.0,
        description="Target share of positive images (mask has any foreground) in every training batch; "
        "null: natural order, no rebalancing.",
    )
    schedule: Optional[list[float]] = Field(
        None,
        description="Positive-share targets spread evenly over train.epochs, piecewise constant "
        "(e.g. [0.8, 0.6, 0.4]: first third 0.8, ...); use instead of positive_share.",
    )
    crop_size: Optional[tuple[int, int]] = Field(
        None, description="Train on random crops (height, width) of the input-size images; null: full images. "
        "Validation and inference stay full size.",
    )
    foreground_crop_share: float = Field(
        0.33, ge=0.0, le=1.0, description="Share of crops centred on a random foreground pixel (positive images); the rest are uniform.",
    )

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v):
        if v is not None and (not v or any(not 0.0 <= t <= 1.0 for t in v)):
            raise ValueError("needs one or more shares, each in [0, 1]")
        return v

    @field_validator("crop_size")
    @classmethod
    def _crop(cls, v):
        if v is not None and min(v) < 16:
            raise ValueError("each side must be >= 16 (and a multiple of the model's output stride)")
        return v

    @model_validator(mode="after")
    def _one_target(self):
        if self.schedule is not None and self.positive_share is not None:
            raise ValueError("sampler.schedule: set either sampler.positive_share or sampler.schedule, not both")
        return self


class EarlyStopConfig(Section):
    patience: int = Field(0, ge=0, description="Epochs without improvement of the monitor before stopping (0: off).")
    min_delta: float = Field(0.0, ge=0.0, description="Smallest improvement that counts.")


class ProgressiveConfig(Section):
    start_scale: float = Field(
        0.5, gt=0.0, le=1.0,
        description="Side of the first epoch's training inputs as a share of the full side (rounded to a multiple of "
        "the model's output stride).",
    )
    share: float = Field(
        0.5, gt=0.0, lt=1.0,
        description="Share of the run's epochs over which the side rises linearly to the full side; the rest train at "
        "full size.",
    )


class TrainConfig(Section):
    epochs: int = Field(30, ge=1, description="Maximum number of epochs.")
    batch_size: int = Field(
        8, ge=1,
        description="Images per optimiser micro-batch over all devices: under DDP each of W processes takes batch_size / W "
        "of every batch (it must divide), so the optimisation, the plan and the sampler's composition do not depend on the "
        "number of devices.",
    )
    accumulate: int = Field(1, ge=1, description="Gradient accumulation steps (effective batch = batch_size × accumulate).")
    grad_clip: float = Field(1.0, ge=0.0, description="Clip the gradient norm to this value (0: off).")
    precision: Literal["auto", "32", "bf16", "16"] = Field(
        "auto",
        description="auto: bf16-mixed on GPUs that support it, 16-mixed on older GPUs; on CPU bf16-mixed where the CPU "
        "has AVX512-BF16 or AMX, else 32.",
    )
    accelerator: Literal["auto", "cpu", "gpu"] = Field("auto", description="Lightning accelerator.")
    devices: Union[int, Literal["auto"], list[int]] = Field(
        1,
        description="Devices per node: a number >= 1, 'auto' (every visible GPU), or a list of GPU indices. More than one "
        "trains with Lightning's DDP; under torchrun or srun the launcher's processes decide and this is ignored.",
    )
    num_nodes: int = Field(1, ge=1, description="Machines in a multi-node DDP fit (torchrun/srun set it from their own world size).")
    compile: bool = Field(
        False,
        description="torch.compile the network for training and validation (Inductor; the first steps compile, which takes "
        "minutes). Off by default: measure it on your machine (bench/gpu_check.sh) before turning it on.",
    )
    num_workers: Union[Annotated[int, Field(ge=0)], Literal["auto"]] = Field(
        "auto",
        description="DataLoader worker processes (0: load in the main process). Workers start from a server process, "
        "never by forking the trainer, so they do not hang; each gets the dataset pickled (from the cache: paths; in "
        "memory: a copy of the arrays). auto: 0 when training on the CPU (on 2 cores the step uses every core and "
        "workers gave 1.01x, BENCHMARKS.md §9b), min(4, cores - 1) on a GPU.",
    )
    monitor: Literal["dice", "iou", "loss"] = Field(
        "dice", description="Validation quantity that picks the best checkpoint and drives early stopping (hard, per the contract)."
    )
    early_stopping: EarlyStopConfig = Field(default_factory=EarlyStopConfig, description="Early stopping on the monitor.")
    checkpoint: Literal["best", "last"] = Field(
        "best",
        description="Which weights are the run's model, the ones tune, evaluate, predict, export, the report and the doctor "
        "use. best: the epoch with the best validation monitor (checkpoints/best.ckpt). last: the final epoch "
        "(checkpoints/last.ckpt, always written at the end; no best.ckpt is kept), as nnU-Net deploys its final "
        "checkpoint: an epoch picked on a handful of validation images is a lottery that can land on an early, "
        "unfinished model (BENCHMARKS.md §5j, §5k). The plan sets last when the validation part is too small to pick from.",
    )
    steps_per_epoch: Optional[int] = Field(
        None, ge=1, description="Optimiser micro-batches per epoch (default: one pass over the training images)."
    )
    channels_last: bool = Field(True, description="Use channels_last memory format (faster convolutions on CPU and GPU).")
    deterministic: bool = Field(True, description="Seed every random stream per epoch so a resumed run equals an uninterrupted one.")
    ema_share: float = Field(
        0.0, ge=0.0, le=1.0,
        description="Exponential moving average of the weights, with a time constant of this share of the run's planned "
        "optimiser steps (0: off). Validation, the checkpoints and inference use the average in place of the last "
        "weights.",
    )
    last_checkpoint_every_s: float = Field(
        60.0, ge=0.0,
        description="checkpoints/last.ckpt (what `fit --resume` continues from) is rewritten at the end of an epoch once "
        "this many seconds have passed since its last write, and always at the run's final epoch; 0: every epoch. A "
        "checkpoint holds the weights and the optimiser state (284 MB for the ResNet-34 U-Net): written every epoch, it "
        "cost 3-minute runs on 34 images 15-23% of their epochs (BENCHMARKS.md §5j). A resume replays the epochs after "
        "it, which are seeded per epoch.",
    )
    budget_minutes: Optional[float] = Field(
        None, gt=0.0,
        description="Training time budget; with plan.enabled the plan sets train.epochs from the measured (or estimated) "
        "seconds per epoch, validation included. null: train.epochs as given.",
    )
    progressive: Optional[ProgressiveConfig] = Field(
        None,
        description="Progressive resizing: the first epochs train on batches resized to a smaller side (images "
        "bilinear, masks area-averaged to soft targets), rising to the full size; validation stays at full size. The "
        "small epochs are cheaper, so a time budget holds more epochs (the plan and the budget count each epoch's "
        "training in proportion to its pixels). null: off; on BUSI its cross-validated gain did not carry to 15 minutes "
        "(BENCHMARKS.md §5m).",
    )


    @field_validator("precision", mode="before")
    @classmethod
    def _precision_text(cls, v):
        # YAML reads `precision: 32` as a number; it means the same as '32'
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("devices")
    @classmethod
    def _devices(cls, v):
        if isinstance(v, int) and (isinstance(v, bool) or v < 1):
            raise ValueError("must be a number of devices >= 1, 'auto', or a list of GPU indices")
        if isinstance(v, list) and (not v or len(set(v)) != len(v) or any(isinstance(i, bool) or i < 0 for i in v)):
            raise ValueError("a list of devices must name distinct GPU indices >= 0")
        return v


class PlanConfig(Section):
    enabled: bool = Field(
        True,
        description="Fill the keys this config does not set (data.input_size, train.batch_size, sampler.positive_share, "
        "loss, augment.preset, train.epochs) from the dataset fingerprint; plan.json records each value and why.",
    )
    measure: bool = Field(
        True, description="Time a few training steps of the model on this machine for batch size and epochs; false: a formula (FLOPs)."
    )
    min_lesion_px: float = Field(
        16.0, gt=0.0, description="The planned input size keeps the smallest 5% of lesions at least this many pixels (area), within max_side."
    )
    max_side: Optional[int] = Field(
        None, ge=32, description="Largest planned input side in pixels; null: 256 when training on CPU, 1024 on a GPU."
    )
    patches: Literal["auto", "never"] = Field(
        "never",
        description="auto: when keeping the smallest lesions visible needs a larger input than max_side, train on "
        "max_side crops of images kept that large (up to 1024 px on CPU, 2048 on a GPU, never above the original) "
        "and predict with sliding windows of the crop size (sampler.crop_size, eval.sliding_window); never: always "
        "resize whole images to the planned input size (BENCHMARKS.md §9d: at a 10-minute CPU budget patches lost to resizing).",
    )


class TrackingConfig(Section):
    uri: Optional[str] = Field(
        None,
        description="track: mlflow: the MLflow tracking URI (http://host:5000, sqlite:///path/mlflow.db, ...). "
        "null: `sqlite:///<output_dir>/mlflow.db`, artifacts in `<output_dir>/mlartifacts`.",
    )
    experiment: Optional[str] = Field(None, description="track: mlflow: the MLflow experiment name. null: the run name (`name`).")

    @field_validator("uri", "experiment")
    @classmethod
    def _not_blank(cls, v):
        if v is not None and not v.strip():
            raise ValueError("must not be empty (use null for the default)")
        return v


class SlidingWindowConfig(Section):
    roi_size: Optional[tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]]] = Field(
        None,
        description="Window (height, width) at network input size; images larger than it are predicted window by "
        "window (MONAI sliding_window_inference) and the windows blended. null: every image in one pass. Set it to "
        "sampler.crop_size when training on crops of large images (the patches mode).",
    )
    overlap: float = Field(0.5, ge=0.0, lt=1.0, description="Share of a window its neighbour overlaps (nnU-Net: 0.5).")
    mode: Literal["gaussian", "constant"] = Field(
        "gaussian", description="Blending: gaussian weights the window centre (nnU-Net's importance), constant averages."
    )
    sigma_scale: float = Field(0.125, gt=0.0, description="gaussian: sigma as a share of the window size (nnU-Net: 1/8).")


class EvalConfig(Section):
    contract: MetricContract = Field(default_factory=MetricContract, description="The metric contract for every reported number.")
    batch_size: int = Field(16, ge=1, description="Images per inference batch (windows per batch with a sliding window).")
    sliding_window: SlidingWindowConfig = Field(
        default_factory=SlidingWindowConfig, description="Window-by-window inference of images larger than the window."
    )


class PostprocessConfig(Section):
    tune: bool = Field(
        True,
        description="After training, tune threshold, min_area, keep_largest and min_score on the validation cases "
        "(medseg tune) and apply them in evaluate and predict.",
    )
    thresholds: list[float] = Field(
        [0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8],
        description="Candidate pixel thresholds for the tuning.",
    )
    min_area_fractions: list[float] = Field(
        [0.0, 0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016],
        description="Candidate minimum component sizes, as fractions of one image (slice) area; 0 keeps every component.",
    )
    keep_largest: list[bool] = Field([False, True], description="Candidate values of 'keep only the largest component'.")
    min_scores: list[float] = Field(
        [0.0, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98],
        description="Candidate case gates: an image (volume) is predicted empty unless its highest probability "
        "reaches the gate; 0 = no gate.",
    )
    tta: Union[bool, list[list[str]]] = Field(
        True,
        description="Test-time augmentation sets the tuning tries, each a list of in-plane transforms "
        "(identity, hflip, vflip, rot90, rot180, rot270, transpose, antitranspose), probabilities averaged; "
        "true: none, flip, the whole dihedral group; false: none. The cheapest set within min_gain of the best "
        "is kept (raw metrics stay without TTA).",
    )
    min_gain: float = Field(
        0.005, ge=0.0, description="Tuned rules must beat the raw prediction by this much validation Dice, else raw is kept.",
    )

    @field_validator("tta")
    @classmethod
    def _tta(cls, v):
        if isinstance(v, list):
            if not v:
                raise ValueError("needs at least one set (e.g. [[identity]])")
            for names in v:
                check_tta_names(names)
        return v

    def tta_sets(self) -> list[tuple[str, ...]]:
        """The TTA sets to try, the plain prediction first."""
        if self.tta is False:
            sets = [("identity",)]
        elif self.tta is True:
            sets = [tuple(s) for s in DEFAULT_TTA_SETS]
        else:
            sets = [check_tta_names(s) or ("identity",) for s in self.tta]
        plain = ("identity",)
        return [plain] + [s for s in dict.fromkeys(sets) if s != plain]

    @field_validator("thresholds")
    @classmethod
    def _thr(cls, v):
        if not v or any(not 0.0 < t < 1.0 for t in v):
            raise ValueError("needs one or more thresholds, each in (0, 1)")
        return v

    @field_validator("min_scores")
    @classmethod
    def _gates(cls, v):
        if not v or any(not 0.0 <= g < 1.0 for g in v):
            raise ValueError("needs one or more gates, each in [0, 1)")
        return v

    @field_validator("min_area_fractions")
    @classmethod
    def _areas(cls, v):
        if not v or any(not 0.0 <= f < 1.0 for f in v):
            raise ValueError("needs one or more fractions, each in [0, 1)")
        return v


class Config(Section):
    """A medseg run: data, split, model, loss, optimiser, schedule, augmentation, training, evaluation."""

    name: str = Field(
        "run", description="Run name: one folder name (letters, digits, '.', '_', '-'); the run folder is "
        "<output_dir>/<name>[-N] and never overwritten.",
    )
    output_dir: Path = Field(Path("runs"), description="Folder that holds run folders.")
    seed: int = Field(0, description="Global seed (initialisation, sampling, augmentation, split).")
    data: DataConfig = Field(default_factory=DataConfig, description="Where the data is and how it is read.")
    split: SplitConfig = Field(default_factory=SplitConfig, description="How cases are split into train/val/test.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="The network.")
    # a list only for the deep_supervision entry (validate_loss_spec refuses one elsewhere)
    loss: dict[str, Union[float, list[float], dict[str, Any]]] = Field(
        default_factory=lambda: {"bce": 1.0, "dice": 1.0},
        description="Weighted loss terms, e.g. {bce: 3, dice: 1, focal: 4}; a term may be a dict with 'weight' and "
        "parameters, and 'start'/'stop' (shares of the training epochs, default 0 and 1) to count over part of "
        "training only, e.g. {bce: 1, dice: 1, lovasz: {weight: 1, start: 0.5}}: a loss schedule. "
        "`deep_supervision: [w0, w1, ...]` weighs the full-resolution output and the side outputs of "
        "model.deep_supervision (default 1, 0.5, 0.25, ...); `image: w` weighs model.image_head's BCE (default 1).",
    )
    optim: OptimConfig = Field(default_factory=OptimConfig, description="Optimiser.")
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig, description="Learning-rate schedule.")
    augment: AugmentConfig = Field(default_factory=AugmentConfig, description="Training augmentation.")
    sampler: SamplerConfig = Field(
        default_factory=SamplerConfig, description="Training batch composition (positive share) and crops."
    )
    train: TrainConfig = Field(default_factory=TrainConfig, description="Training loop.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Evaluation and the metric contract.")
    postprocess: PostprocessConfig = Field(default_factory=PostprocessConfig, description="Post-processing tuned on validation (threshold, small components).")
    plan: PlanConfig = Field(default_factory=PlanConfig, description="The dataset-driven plan that fills unset keys (medseg plan).")
    track: Literal["tensorboard", "mlflow", "none"] = Field(
        "tensorboard",
        description="Experiment tracking: tensorboard (events in the run's logs/), mlflow (needs the optional extra "
        "`medseg[mlflow]`; params, per-epoch and final metrics, the report as artifacts; see tracking.*), or none.",
    )
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="Where track: mlflow logs.")

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        # the run folder must stay inside output_dir: one path component, nothing a shell or a filesystem reads specially
        if not v or v in (".", "..") or not re.fullmatch(r"[A-Za-z0-9_.][A-Za-z0-9_.\-]*", v) or len(v) > 128:
            raise ValueError("must be one folder name of letters, digits, '.', '_' and '-' (not starting with '-', "
                             "not '.' or '..', at most 128 characters)")
        return v

    @field_validator("loss")
    @classmethod
    def _loss(cls, v):
        # imported here: the losses import torch, and reading a config (compare, the doctor) should not
        from medseg.losses import validate_loss_spec

        validate_loss_spec(v)
        return v

    @model_validator(mode="after")
    def _cross(self):
        if self.data.source not in available_sources():
            hint = difflib.get_close_matches(self.data.source, available_sources(), n=1)
            raise ValueError(
                f"data.source: unknown source '{self.data.source}'" + (f" (did you mean '{hint[0]}'?)" if hint else "")
                + f"; choose from {', '.join(available_sources())}"
            )
        crop = self.sampler.crop_size
        if crop is not None and (crop[0] > self.data.input_size[0] or crop[1] > self.data.input_size[1]):
            raise ValueError(
                f"sampler.crop_size: {list(crop)} must not exceed data.input_size {list(self.data.input_size)}"
            )
        # the network halves the input `stride` times over; other sides break its skip connections
        stride = get_model_spec(self.model.name).output_stride(self.model.channels)
        for key, size in (("data.input_size", self.data.input_size), ("sampler.crop_size", crop)):
            if size is not None and (size[0] % stride or size[1] % stride):
                raise ValueError(
                    f"{key}: {list(size)}: each side must be a multiple of {stride}, the output stride of model "
                    f"'{self.model.name}' (with its channels)"
                )
        spec = get_model_spec(self.model.name)
        error = spec.side_output_error(self.model.deep_supervision) or spec.image_head_error(self.model.image_head)
        if error:
            raise ValueError(error)
        if "image" in self.loss and not self.model.image_head:
            raise ValueError("loss.image: weighs model.image_head's loss, but model.image_head is false")
        ds_weights = self.loss.get("deep_supervision")
        if isinstance(ds_weights, list) and len(ds_weights) < 1 + self.model.deep_supervision:
            raise ValueError(
                f"loss.deep_supervision: {len(ds_weights)} weights for the {1 + self.model.deep_supervision} outputs "
                f"of model.deep_supervision: {self.model.deep_supervision} (full resolution first)"
            )
        if self.train.monitor == "loss":
            from medseg.losses import has_schedule  # imported here for the reason given in _loss

            if has_schedule(self.loss):
                raise ValueError("train.monitor: 'loss' compares epochs under different losses when a loss term starts or "
                                 "stops during training (loss.<term>.start/stop); monitor dice or iou")
        if self.schedule.warmup_epochs >= self.train.epochs:
            raise ValueError(
                f"schedule.warmup_epochs: warm-up ({self.schedule.warmup_epochs:g} epochs) must be shorter than "
                f"train.epochs ({self.train.epochs})"
            )
        return self


# ---------------------------------------------------------------------------------------
# Loading, overrides, one-line errors


_UNION_TAG = re.compile(r"^(float|int|str|bool|(dict|list|tuple|literal|function-\w+)\[.*\])$")


def _format_error(err: ValidationError, raw: dict) -> str:
    e = err.errors()[0]
    # pydantic names the member of a Union it tried (`loss.bce.float`): the key is what the user wrote
    loc = ".".join(str(p) for p in e["loc"] if not _UNION_TAG.match(str(p)))
    msg = e["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if e["type"] == "extra_forbidden":
        parent = _section_model(e["loc"][:-1])
        key = str(e["loc"][-1])
        hint = difflib.get_close_matches(key, list(parent.model_fields), n=1) if parent else []
        return f"config error: {loc}: unknown key" + (f" (did you mean '{hint[0]}'?)" if hint else "")
    if msg.startswith(loc.split(".")[0] + "."):
        return f"config error: {msg}"  # the validator already named the exact key
    if not loc:
        # model-level validators name their key at the start of the message
        return f"config error: {msg}"
    got = e.get("input")
    shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
    return f"config error: {loc}: {msg}{shown}"


def _section_model(loc) -> Optional[type[BaseModel]]:
    model: Any = Config
    for part in loc:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        f = model.model_fields.get(str(part))
        if f is None:
            return None
        model = f.annotation
        if typing.get_origin(model) is Union:
            model = next((a for a in typing.get_args(model) if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.epochs=5' -> (['train', 'epochs'], 5); the value is parsed as YAML."""
    if "=" not in text:
        raise MedsegError(f"config error: --set {text!r}: expected KEY=VALUE, e.g. train.epochs=5")
    key, value = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise MedsegError(f"config error: --set {text!r}: empty key")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return parts, parsed


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    for text in overrides or []:
        parts, value = parse_override(text)
        node = raw
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = value
    return raw


def resolve_paths(cfg: Config, base: Path) -> Config:
    def fix(p: Optional[Path]) -> Optional[Path]:
        if p is None:
            return None
        p = Path(p).expanduser()
        return p if p.is_absolute() else (base / p).resolve()

    cfg.data.root = fix(cfg.data.root)
    cfg.data.rle_csv = fix(cfg.data.rle_csv)
    cfg.data.cases_csv = fix(cfg.data.cases_csv)
    cfg.data.cache_dir = fix(cfg.data.cache_dir)
    cfg.split.file = fix(cfg.split.file)
    cfg.model.pretrained = fix(cfg.model.pretrained)
    return cfg


def config_from_dict(raw: dict, base: Optional[Path] = None) -> Config:
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as err:
        raise MedsegError(_format_error(err, raw)) from None
    except UnicodeError:
        # YAML's "\ud800" escapes make strings no encoding can write
        raise MedsegError("config error: a key or value holds text that is not valid Unicode (a lone surrogate escape)") from None
    return resolve_paths(cfg, base or Path.cwd())


def read_yaml(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise MedsegError(f"config error: {path}: no such file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as e:
        raise MedsegError(f"config error: {path}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise MedsegError(f"config error: {path}: cannot be read ({e.strerror or type(e).__name__})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise MedsegError(f"config error: {path}{where}: not valid YAML") from None
    if not isinstance(raw, dict):
        raise MedsegError(f"config error: {path}: top level must be a mapping of keys")
    return raw


def load_config(path: Optional[Path], overrides: Optional[list[str]] = None) -> Config:
    """Read a YAML config (or start from defaults when path is None), apply overrides, validate."""
    raw = read_yaml(path) if path is not None else {}
    raw = apply_overrides(raw, overrides or [])
    base = Path(path).resolve().parent if path is not None else Path.cwd()
    return config_from_dict(raw, base)


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


# ---------------------------------------------------------------------------------------
# Reference doc, generated from the schema


def _type_name(ann) -> str:
    origin = typing.get_origin(ann)
    if origin is Annotated:  # a constrained type shows as its base type (the bound is in the description)
        return _type_name(typing.get_args(ann)[0])
    if origin is Literal:
        return " | ".join(repr(a) if isinstance(a, str) else str(a) for a in typing.get_args(ann))
    if origin is Union:
        return " | ".join(_type_name(a) for a in typing.get_args(ann) if a is not type(None)) + (
            " | null" if type(None) in typing.get_args(ann) else ""
        )
    if origin in (list, tuple, dict):
        args = ", ".join(_type_name(a) for a in typing.get_args(ann) if a is not Ellipsis)
        return f"{origin.__name__}[{args}]"
    return getattr(ann, "__name__", str(ann))


def reference_rows(model: type[BaseModel] = Config, prefix: str = "") -> list[tuple[str, str, str, str]]:
    rows = []
    inst = model()
    for name, f in model.model_fields.items():
        key = f"{prefix}{name}"
        ann = f.annotation
        sub = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if sub is not None:
            rows.extend(reference_rows(sub, key + "."))
            continue
        default = getattr(inst, name)
        if isinstance(default, Path):
            default = str(default)
        if isinstance(default, tuple):
            default = list(default)
        rows.append((key, _type_name(ann), yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("..."), f.description or ""))
        # an optional section (null: off) lists its keys too, with the defaults they take once it is set
        optional = [a for a in typing.get_args(ann) if isinstance(a, type) and issubclass(a, BaseModel)]
        if typing.get_origin(ann) is Union and optional:
            rows.extend((k, t, d, f"(when {key} is set) {desc}") for k, t, d, desc in reference_rows(optional[0], key + "."))
    return rows


def reference_markdown() -> str:
    lines = [
        "# Config reference",
        "",
        "Generated from the schema in `medseg/config.py` by `medseg config --reference --markdown`.",
        "Every key is optional; unknown keys are errors. Override any key with `--set key=value`.",
        "",
        "| key | type | default | meaning |",
        "|---|---|---|---|",
    ]
    for key, typ, default, desc in reference_rows():
        bar = "\\|"
        lines.append(f"| `{key}` | {typ.replace('|', bar)} | `{default.strip()}` | {desc.replace('|', bar)} |")
    return "\n".join(lines) + "\n"
