"""`medseg predict`: probability maps and binary masks at the input's own size and geometry.

Images -> probs/STEM.png (uint16, p = v/65535) + masks/STEM.png (0/255).
Volumes -> STEM_prob.<ext> (float32) + STEM_mask.<ext> (uint8) with the input's header/affine.
SIIM DICOMs -> probs/ + masks/ PNGs and submission.csv (ImageId, EncodedPixels, competition RLE).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
from rich.console import Console

from medseg import runfolder as runfs
from medseg.data import infer_input, load_data
from medseg.data.preprocess import to_original
from medseg.data.sources import get_source, prediction_units
from medseg.errors import MedsegError
from medseg.data.tta import FLIP
from medseg.inference import run_probs
from medseg.metrics.validation import case_chunks
from medseg.postprocess import PostProcess
from medseg.commands.experiment import ensemble_members


def predict_run(
    run_dir: Union[Path, Sequence[Path]],
    input_path: Path,
    output: Path,
    threshold: Optional[float] = None,
    tta: bool = False,
    console: Optional[Console] = None,
    raw: bool = False,
) -> Path:
    """Predict INPUT with a run's model checkpoint (train.checkpoint), or an ensemble, into the new folder OUTPUT.

    Args:
        run_dir: a run folder; an experiment folder (the mean of its folds' probabilities, then the
            rule tuned on its out-of-fold predictions); or a list of runs/experiments trained on
            compatible inputs (their mean, then the bare threshold: no rule was tuned for that ensemble).
        input_path: image folder, volume file/folder, or DICOM folder.
        output: output folder; must not exist or be empty (nothing is overwritten).
        threshold: binarisation threshold (default: the run's metric contract).
        tta: horizontal-flip test-time augmentation.
        raw: ignore the run's tuned post-processing (postprocess.json); --threshold implies it.
    """
    console = console or Console(stderr=True)
    members = [Path(p) for p in run_dir] if isinstance(run_dir, (list, tuple)) else [Path(run_dir)]
    runs, nets, cfg, state, rule_from = ensemble_members(members)
    run_dir = members[0] if len(members) == 1 else None
    input_path = Path(input_path)
    if not input_path.exists():
        raise MedsegError(f"{input_path}: no such file or folder")
    output = Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise MedsegError(f"{output}: exists and is not empty (predict never overwrites)")
    data_cfg = infer_input(input_path, cfg.data)
    loaded = load_data(data_cfg, with_masks=False, progress=True)
    if loaded.in_channels != state["in_channels"]:
        raise MedsegError(f"{input_path}: images have {loaded.in_channels} channels, the model expects {state['in_channels']}")
    net = nets[0] if len(nets) == 1 else nets
    if threshold is not None and not 0.0 < threshold < 1.0:
        raise MedsegError(f"--threshold: must be in (0, 1), got {threshold}")
    # the tuned rule (medseg tune) unless the caller asks for a bare threshold
    pp = runfs.load_postprocess(rule_from) if threshold is None and not raw and rule_from is not None else None
    if pp is None:
        pp = PostProcess(cfg.eval.contract.threshold if threshold is None else threshold, 0, False)
    # a rule tuned on TTA probabilities needs the same TTA; --tta alone asks for flip TTA
    tta = pp.tta or (FLIP if tta else ())
    source = get_source(loaded.source)
    units = prediction_units(loaded)
    # written into a hidden folder beside OUTPUT and renamed into place when complete: a failure (or a
    # kill) part-way leaves OUTPUT as it was, never a folder of some units' files that looks finished
    created = _first_missing(output)
    staging = output.absolute().with_name(f".{output.absolute().name}.partial")
    if staging.exists():
        shutil.rmtree(staging)  # a killed earlier predict's leftovers: ours by name
    staging.mkdir(parents=True)
    try:
        _predict_into(staging, loaded, units, source, data_cfg, net, cfg, state, tta, pp)
        runfs.write_json(
            staging / "prediction.json",
            {"run": str(run_dir) if run_dir is not None else None, "members": [str(r) for r in runs], "input": str(input_path), "threshold": pp.threshold,
             "postprocess": pp.to_json(), "tta": bool(tta), "tta_transforms": list(tta), "n_images": len(loaded.samples), "source": loaded.source},
        )
        if output.exists():
            # an empty folder (checked above), perhaps the working directory: its entries move in,
            # prediction.json last, so a folder holding it is complete
            for entry in sorted(staging.iterdir(), key=lambda e: e.name == "prediction.json"):
                os.replace(entry, output / entry.name)
            staging.rmdir()
        else:
            os.replace(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created is not None and created != output:
            shutil.rmtree(created, ignore_errors=True)  # the parent folders this call made, now empty
        raise
    return output


def _first_missing(path: Path) -> Optional[Path]:
    """The highest ancestor of PATH (or PATH itself) that does not exist yet, None if PATH exists."""
    missing = None
    for p in [path, *path.parents]:
        if p.exists():
            return missing
        missing = p
    return missing


def _predict_into(folder: Path, loaded, units: dict, source, data_cfg, net, cfg, state, tta, pp: PostProcess) -> None:
    """Every unit's files into FOLDER, a chunk of whole units at a time (one volume, or a few eval batches of
    images): memory holds that chunk's network inputs and probabilities, never the whole input's."""
    writer = source.writer(folder, data_cfg)
    unit_of = {i: unit for unit, idx in units.items() for i in idx}
    for chunk in case_chunks([s.meta for s in loaded.samples], cfg.eval.batch_size):
        images = np.stack([loaded.samples[i].image for i in chunk]).astype(np.float32, copy=False)
        probs = dict(zip(chunk, run_probs(net, images, cfg, state, tta=tta)))
        for unit in dict.fromkeys(unit_of[i] for i in chunk):
            idx = units[unit]
            # back at the input's own size (a volume: its slices stacked in order), then the rule
            full = np.stack([to_original(probs[i], loaded.samples[i].meta["resize"]) for i in idx])
            if not source.volumetric:
                full = full[0]
            scale = full.shape[-1] * full.shape[-2] / probs[idx[0]].size  # pixels per input pixel
            writer.write(loaded, unit, idx, full, pp.apply(full, area_scale=scale).astype(np.uint8))
        del images, probs, full  # before the next chunk is predicted
    writer.close()
