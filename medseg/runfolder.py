"""The run folder: the contract every verb reads, and the one module that knows its file names.

runs/NAME/
  config.yaml  state.json  fingerprint.json  plan.json  split.json  bad_files.json  data_hashes.json
  metrics/epochs.csv  metrics/cases.csv  metrics/volumes.csv  metrics/summary.json
  metrics/cases_postprocessed.csv  metrics/threshold_sweep.{json,csv}
  checkpoints/best.ckpt  checkpoints/last.ckpt
  postprocess.json  postprocess.csv  tracking.json
  logs/ (TensorBoard events, train.log)
  evaluations/NAME/ (later evaluations, never over the run's own metrics)
  report.html  report.md  report_assets/

Readers come in two kinds: strict ones for the verbs (a missing or broken file is a one-line
`MedsegError` naming it) and lenient ones for the report, the doctor and compare, which are
most wanted when a run went wrong (a missing or unreadable file reads as empty).
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel

from medseg.config import Config, config_from_dict, read_yaml, resolve_paths
from medseg.data import load_data
from medseg.data.arrays import SplitArrays, stack_part
from medseg.errors import MedsegError, NoUsableData
from medseg.models import create_model_from_config
from medseg.models.weights import load_torch_file
from medseg.postprocess import PostProcess

RUN_VERSION = 1

CONFIG = "config.yaml"
STATE = "state.json"
FINGERPRINT = "fingerprint.json"
PLAN = "plan.json"
SPLIT = "split.json"
BAD_FILES = "bad_files.json"
DATA_HASHES = "data_hashes.json"
POSTPROCESS = "postprocess.json"
POSTPROCESS_CSV = "postprocess.csv"
TRACKING = "tracking.json"
LOGS = "logs"
TRAIN_LOG = f"{LOGS}/train.log"
CHECKPOINTS = "checkpoints"
BEST_CKPT = f"{CHECKPOINTS}/best.ckpt"
LAST_CKPT = f"{CHECKPOINTS}/last.ckpt"
EVALUATIONS = "evaluations"
REPORT_HTML = "report.html"
REPORT_MD = "report.md"
REPORT_ASSETS = "report_assets"

# files of a metrics folder: metrics/ of the run, or evaluations/NAME/ beside it
METRICS = "metrics"
CASES_NAME = "cases.csv"
VOLUMES_NAME = "volumes.csv"
SUMMARY_NAME = "summary.json"
CASES_PP_NAME = "cases_postprocessed.csv"
SWEEP_NAME = "threshold_sweep.json"
SWEEP_CSV_NAME = "threshold_sweep.csv"
EPOCHS_CSV = f"{METRICS}/epochs.csv"
CASES_CSV = f"{METRICS}/{CASES_NAME}"
VOLUMES_CSV = f"{METRICS}/{VOLUMES_NAME}"
SUMMARY = f"{METRICS}/{SUMMARY_NAME}"
SWEEP = f"{METRICS}/{SWEEP_NAME}"


def create_run(output_dir: Path, name: str, subfolders: tuple[str, ...] = (METRICS, CHECKPOINTS, LOGS)) -> Path:
    """Make a new run (or experiment) folder; an existing one is never reused (name-2, name-3, ...)."""
    output_dir = Path(output_dir)
    check_output_dir(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for i in range(1, 10_000):
        path = output_dir / (name if i == 1 else f"{name}-{i}")
        try:
            path.mkdir()  # atomic: two concurrent fits never get the same folder
        except FileExistsError:
            continue
        for sub in subfolders:
            (path / sub).mkdir()
        return path
    raise MedsegError(f"output_dir: {output_dir}: too many runs named '{name}'")


def check_output_dir(output_dir: Path, key: str = "output_dir") -> None:
    """Refuse, before anything is written, an output folder that is a file, lies under a file, or cannot be written."""
    output_dir = Path(output_dir)
    for p in (output_dir, *output_dir.parents):
        if p.exists():
            if not p.is_dir():
                what = "is a file" if p == output_dir else f"lies under the file {p}"
                raise MedsegError(f"{key}: {output_dir} {what}, not a folder")
            if not os.access(p, os.W_OK | os.X_OK):
                raise MedsegError(f"{key}: {output_dir}: {p} is not writable")
            return


def open_run(path: Path) -> Path:
    path = Path(path)
    if not (path / CONFIG).is_file():
        raise MedsegError(f"{path}: not a medseg run folder (no {CONFIG})")
    return path


def _clean(obj: Any) -> Any:
    # JSON has no NaN: write null so every reader (and browsers) can parse it
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):
        return _clean(obj.item())
    return obj


def jsonable(obj: Any) -> Any:
    """obj with NaN/inf as None, numpy scalars as Python numbers and tuples as lists: what every JSON reader accepts."""
    return _clean(obj)


def write_json(path: Path, obj: Any) -> None:
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_clean(obj), indent=1))
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MedsegError(f"{path}: missing from the run folder") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise MedsegError(f"{path}: not valid JSON") from None
    except OSError as e:
        raise MedsegError(f"{path}: cannot be read ({e.strerror or type(e).__name__})") from None


def write_csv(path: Path, rows: list[dict]) -> None:
    path = Path(path)
    keys: list[str] = []
    for r in rows:
        keys.extend(k for k in r if k not in keys)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(r.get(k)) for k in keys})
    os.replace(tmp, path)


def _fmt(v):
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v)
    if isinstance(v, (list, dict)):
        return json.dumps(_clean(v))
    return v


def read_csv(path: Path) -> list[dict]:
    """The rows of a run CSV with numbers as floats (epoch/step as ints); [] when the file is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error, OSError):
        return []
    out = []
    for r in rows:
        conv = {}
        for k, v in r.items():
            if not isinstance(k, str) or not isinstance(v, (str, type(None))):
                continue  # a row longer than the header (DictReader's None key) or shorter
            try:
                conv[k] = float(v) if v not in ("", None) else float("nan")
                if conv[k].is_integer() and k in ("epoch", "step"):
                    conv[k] = int(conv[k])
            except ValueError:
                conv[k] = v
        out.append(conv)
    return out


# ---------------------------------------------------------------------------------------
# Strict readers for the verbs


def load_run_config(run_dir: Path) -> Config:
    """The run's saved, resolved config (relative paths resolve against the run folder)."""
    return config_from_dict(read_yaml(Path(run_dir) / CONFIG), Path(run_dir))


STATE_KEYS = {"in_channels": int, "precision": str}


def load_state(run_dir: Path) -> dict:
    """state.json: precision, in_channels, versions, machine; the keys the verbs need are checked."""
    path = Path(run_dir) / STATE
    state = read_json(path)
    if not isinstance(state, dict):
        raise MedsegError(f"{path}: not a JSON object")
    for key, kind in STATE_KEYS.items():
        if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool):
            raise MedsegError(f"{path}: '{key}' missing or not a {kind.__name__} (the run folder is damaged)")
    return state


def is_finished(run_dir: Path, state: Optional[dict] = None) -> bool:
    """The run's fit completed (state.json finished; runs from before the flag: their summary exists)."""
    state = optional_dict(Path(run_dir) / STATE) if state is None else state
    return bool(state.get("finished", (Path(run_dir) / SUMMARY).is_file()))


def check_checkpoint(path: Path) -> dict:
    """A checkpoint read safely (tensors and plain containers only) that holds a state_dict; one line otherwise."""
    ckpt = load_torch_file(path, "checkpoint")
    if not isinstance(ckpt.get("state_dict"), dict) or not any(k.startswith("net.") for k in ckpt["state_dict"]):
        raise MedsegError(f"checkpoint: {path}: no network weights (no 'state_dict' with 'net.' tensors)")
    return ckpt


CHECKPOINT_FILES = {"best": BEST_CKPT, "last": LAST_CKPT}


def model_checkpoint(cfg: Config, which: Optional[str] = None) -> str:
    """The checkpoint file (relative to the run) that is the run's model, per ``train.checkpoint``, or `which` ('best'/'last')."""
    name = which or cfg.train.checkpoint
    if name not in CHECKPOINT_FILES:
        raise ValueError(f"checkpoint: '{name}' is not one of {', '.join(CHECKPOINT_FILES)}")
    return CHECKPOINT_FILES[name]


def checkpoint_record(info: dict) -> dict:
    """What summary.json, postprocess.json and an export's sidecar record of the checkpoint `load_network` loaded:
    its file, and its epoch as ``best_epoch`` (best.ckpt) or ``epoch`` (last.ckpt)."""
    return {"checkpoint": info["checkpoint"], "best_epoch" if info["checkpoint"] == BEST_CKPT else "epoch": info["epoch"]}


def load_network(run_dir: Path, cfg: Config, in_channels: int, which: Optional[str] = None) -> tuple:
    """Rebuild the network and load a checkpoint's weights; returns (net in eval mode, checkpoint info).

    Args:
        run_dir: the run folder.
        cfg: its config (the network, and ``train.checkpoint``: which file is the run's model).
        in_channels: the network's input channels.
        which: 'best' or 'last' to load that file instead of the run's model.
    """
    import torch  # here: the light verbs (compare, report --no-predict) read run folders without it

    rel = model_checkpoint(cfg, which)
    path = Path(run_dir) / rel
    if not path.is_file():
        if rel == BEST_CKPT and cfg.train.checkpoint == "last":
            raise MedsegError(f"{path}: no checkpoint: this run keeps only its last epoch (train.checkpoint: last)")
        raise MedsegError(f"{path}: no checkpoint (did training finish an epoch?)")
    ckpt = check_checkpoint(path)
    net = create_model_from_config(cfg.model, in_channels)
    state = {k[len("net."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise MedsegError(f"checkpoint: {path}: does not fit the run's network '{cfg.model.name}' ({first[:150]})") from None
    if cfg.train.channels_last:
        net = net.to(memory_format=torch.channels_last)
    net.eval()
    return net, {"epoch": int(ckpt.get("epoch", -1)), "global_step": int(ckpt.get("global_step", -1)), "checkpoint": rel}


def load_split_part(run_dir: Path, cfg: Config, part: str = "val", loaded=None, progress: bool = False) -> SplitArrays:
    """The run's validation (or test) cases, by its split.json, from its data (reloaded unless `loaded` is given)."""
    split = read_json(Path(run_dir) / SPLIT)
    if not split.get(part):
        raise MedsegError(f"{Path(run_dir) / SPLIT}: the run has no '{part}' cases")
    gone = f"{Path(run_dir) / SPLIT}: none of the '{part}' cases is in the data any more"
    if loaded is None:
        try:
            loaded = load_data(cfg.data, with_masks=True, progress=progress, only=split[part])
        except NoUsableData:
            raise MedsegError(gone) from None
    arrays = stack_part(loaded, split[part])
    if len(arrays.images) == 0:
        raise MedsegError(gone)
    return arrays


def load_postprocess(run_dir: Path) -> Optional[PostProcess]:
    """The run's tuned post-processing (postprocess.json), or None if not tuned."""
    path = Path(run_dir) / POSTPROCESS
    if not path.is_file():
        return None
    saved = read_json(path)
    chosen = saved.get("chosen") if isinstance(saved, dict) else None
    try:
        rule = PostProcess.from_json(chosen)
    except (TypeError, KeyError, ValueError, AttributeError):
        raise MedsegError(f"{path}: no valid 'chosen' rule (threshold, min_area, keep_largest); re-run medseg tune --force") from None
    if not (0.0 < rule.threshold < 1.0 and rule.min_area >= 0 and 0.0 <= rule.min_score < 1.0):
        raise MedsegError(f"{path}: the chosen rule is out of range ({rule.describe()}); re-run medseg tune --force")
    return rule


def create_evaluation(run_dir: Path, name: str) -> Path:
    """A new folder evaluations/NAME[-N] for an evaluation beside the run's own metrics."""
    return create_run(Path(run_dir) / EVALUATIONS, name)


def read_case_scores(path: Path, key: str, metric: str = "dice") -> tuple[dict, dict]:
    """{key value: metric} and {key value: case_id} from a per-case CSV (cases.csv, volumes.csv), keys kept as strings.

    `read_csv` would turn a case named "001" into 1.0, so the key column is read raw.
    """
    try:
        return _read_case_scores(path, key, metric)
    except (UnicodeDecodeError, csv.Error) as e:
        raise MedsegError(f"{path}: not a readable CSV file ({type(e).__name__})") from None


def _read_case_scores(path: Path, key: str, metric: str) -> tuple[dict, dict]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        if key not in fields or metric not in fields:
            raise MedsegError(f"{path}: needs columns '{key}' and '{metric}' (has: {', '.join(fields) or 'none'})")
        scores: dict = {}
        case_ids: dict = {}
        for row in reader:
            name = row[key]
            if name in scores:
                raise MedsegError(f"{path}: {key} '{name}' appears twice")
            text = (row[metric] or "").strip()
            try:
                scores[name] = float(text) if text else float("nan")  # write_csv writes NaN as ""
            except ValueError:
                raise MedsegError(f"{path}: {key} '{name}': {metric} '{text}' is not a number") from None
            case_ids[name] = row.get("case_id") or name
    if not scores:
        raise MedsegError(f"{path}: no rows")
    return scores, case_ids


# ---------------------------------------------------------------------------------------
# Lenient readers for the report, the doctor and compare


def optional_json(path: Path) -> Any:
    """A JSON file's content, or None when it is missing or not valid JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def optional_dict(path: Path) -> dict:
    """A JSON object from a file, or {} when it is missing, invalid, or not an object."""
    data = optional_json(path)
    return data if isinstance(data, dict) else {}


def optional_text(path: Path) -> str:
    """A text file's content, or '' when it is missing."""
    path = Path(path)
    return path.read_text(errors="replace") if path.is_file() else ""


# Config mappings that a saved value replaces whole (their keys are user data, not schema fields).
_ATOMIC_KEYS = {"loss", "overrides"}


def deep_merge(base: dict, over: dict) -> dict:
    """`over` laid on `base`, nested sections merged key by key (loss and overrides replaced whole)."""
    out = dict(base)
    for k, v in over.items():
        nested = isinstance(v, dict) and isinstance(out.get(k), dict) and k not in _ATOMIC_KEYS
        out[k] = deep_merge(out[k], v) if nested else v
    return out


@dataclass
class LenientConfig:
    """A saved config read as far as it goes.

    Attributes:
        raw: config.yaml as saved, laid over the schema defaults (readable whatever it holds).
        saved: config.yaml as saved.
        cfg: the validated Config; when cross-field rules reject the saved file, one built
            section by section without them; None when even that fails.
        error: why the saved config does not validate, or None.
    """

    raw: dict
    saved: dict
    cfg: Optional[Config]
    error: Optional[str]


def load_config_leniently(run_dir: Path) -> LenientConfig:
    """The run's config for readers that must work on damaged runs (the doctor): see `LenientConfig`."""
    run_dir = Path(run_dir)
    saved = read_yaml(run_dir / CONFIG)
    raw = deep_merge(Config().model_dump(mode="json"), saved)
    try:
        return LenientConfig(raw, saved, config_from_dict(saved, run_dir), None)
    except MedsegError as e:
        error = str(e)
    # A saved config that breaks a cross-field rule (e.g. warm-up >= epochs written by hand) is
    # still diagnosable: validate each section alone and skip the cross-field rules.
    try:
        sections = {}
        for name, f in Config.model_fields.items():
            if name in saved:
                ann = f.annotation
                sections[name] = ann.model_validate(saved[name]) if isinstance(ann, type) and issubclass(ann, BaseModel) else saved[name]
        cfg = Config.model_construct(**{**Config().__dict__, **sections})
        return LenientConfig(raw, saved, resolve_paths(cfg, run_dir), error)
    except Exception:  # noqa: BLE001 - any failure here leaves the reader with the raw dict only
        return LenientConfig(raw, saved, None, error)


# ---------------------------------------------------------------------------------------
# Experiments: a folder of k fold runs, their out-of-fold predictions and the rule tuned on them
#
# runs/NAME/
#   experiment.json     k, seed, the folds' case ids and status, the test cases
#   config.yaml         the experiment's (planned) config; each fold trains it on its own split
#   splits/fold-I.json  the split file of fold I (train, val = the fold, test)
#   fold-I/             ordinary run folders
#   oof/SET/fold-I.npy  out-of-fold probabilities of fold I's cases under TTA set SET (float16, N x H x W)
#   oof/SET/fold-I.json their sample ids, in the same order
#   metrics/cases.csv, metrics/summary.json   out-of-fold scores under the contract (what compare reads)
#   postprocess.json    the rule tuned on the out-of-fold predictions

EXPERIMENT = "experiment.json"
SPLITS = "splits"
OOF = "oof"


def check_cache_dir(cache_dir: Optional[Path], output_dir: Optional[Path] = None, name: Optional[str] = None) -> None:
    """Refuse a data.cache_dir inside a run or experiment folder (a finished run is never changed; the cache is shared).

    Args:
        cache_dir: data.cache_dir (None: no cache, nothing to check).
        output_dir, name: where `fit` is about to create runs/NAME (or NAME-2, ...): the cache may not go there either.
    """
    if cache_dir is None:
        return
    cache_dir = Path(cache_dir).resolve()
    for p in (cache_dir, *cache_dir.parents):
        if ((p / CONFIG).is_file() and (p / STATE).is_file()) or is_experiment(p):
            raise MedsegError(f"config error: data.cache_dir: {cache_dir} lies inside the run folder {p}; "
                              "put the cache beside the runs, not in one")
    if output_dir is not None and name:
        out = Path(output_dir).resolve()
        rel = cache_dir.relative_to(out).parts if cache_dir.is_relative_to(out) else ()
        if rel and (rel[0] == name or (rel[0].startswith(f"{name}-") and rel[0][len(name) + 1:].isdigit())):
            raise MedsegError(f"config error: data.cache_dir: {cache_dir} would lie inside the run folder {out / rel[0]}; "
                              "put the cache beside the runs, not in one")


def is_experiment(path: Path) -> bool:
    return (Path(path) / EXPERIMENT).is_file()


def open_experiment(path: Path) -> tuple[Path, dict]:
    """An experiment folder and its experiment.json; one line if it is not one."""
    path = Path(path)
    if not is_experiment(path):
        raise MedsegError(f"{path}: not a medseg experiment folder (no {EXPERIMENT})")
    doc = read_json(path / EXPERIMENT)
    if not isinstance(doc, dict) or not isinstance(doc.get("folds"), list) or not doc["folds"]:
        raise MedsegError(f"{path / EXPERIMENT}: no 'folds' list (the experiment folder is damaged)")
    return path, doc


def fold_dir(experiment: Path, fold: int) -> Path:
    return Path(experiment) / f"fold-{fold}"


def tta_key(names) -> str:
    """The folder name of a TTA set's out-of-fold predictions."""
    names = tuple(names) or ("identity",)
    return "+".join(names)


def save_oof(experiment: Path, fold: int, names, sample_ids: list[str], probs) -> None:
    """Write one fold's out-of-fold probabilities for one TTA set (float16: 3 decimals are more than any threshold needs)."""
    import numpy as np

    folder = Path(experiment) / OOF / tta_key(names)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"fold-{fold}.tmp.npy"
    np.save(tmp, np.asarray(probs, dtype=np.float16))
    os.replace(tmp, folder / f"fold-{fold}.npy")
    write_json(folder / f"fold-{fold}.json", list(sample_ids))


class OOFProbs:
    """One TTA set's out-of-fold probabilities of some folds, on disk: rows are read when asked for.

    At SIIM scale one set of all folds is 12k x 256² (3.2 GB as float32), so the stored float16
    arrays stay on disk and a chunk of whole cases is read (and made float32) at a time. Reads
    are positional (`data.cache.StoredArray.rows`), not a memory map: a map's touched pages
    count in the process's resident memory until the kernel drops them.

    Attributes:
        ids: the sample ids, fold after fold, each fold's in its stored order.
        folds: the fold of each row (of each id).
        shape: (rows, H, W).
    """

    def __init__(self, ids: list[str], folds: list[int], arrays: list):
        import numpy as np

        self.ids, self.folds, self._arrays = ids, folds, arrays
        sizes = np.array([a.shape[0] for a in arrays], dtype=np.int64)
        self._ends = np.cumsum(sizes)
        self._starts = self._ends - sizes
        self.shape = (len(ids), *tuple(arrays[0].shape[1:])) if arrays else (0, 1, 1)

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, idx) -> "object":
        """(len(idx), H, W) float32 probabilities of these rows (of `ids`), read from the files.

        Runs of consecutive rows of one file are read in one call.
        """
        import numpy as np

        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        out = np.empty((len(idx), *self.shape[1:]), np.float32)
        part = np.searchsorted(self._ends, idx, side="right")
        j = 0
        while j < len(idx):
            f, lo = part[j], idx[j]
            n = 1
            while j + n < len(idx) and part[j + n] == f and idx[j + n] == lo + n:
                n += 1
            start = int(lo - self._starts[f])
            out[j:j + n] = self._arrays[f].rows(start, start + n)
            j += n
        return out


def open_oof(experiment: Path, names, folds: list[int]) -> OOFProbs:
    """These folds' out-of-fold predictions for one TTA set, checked and left on disk (see `OOFProbs`).

    Args:
        experiment: the experiment folder.
        names: the TTA set (transform names).
        folds: which folds, in this order.

    Raises:
        MedsegError: a fold's file is missing, not a plain numeric .npy, shorter than its header
            says, or its ids file does not list its rows (one line naming the file).
    """
    import numpy as np

    from medseg.data.cache import StoredArray, npy_layout

    folder = Path(experiment) / OOF / tta_key(names)
    ids: list[str] = []
    fold_of: list[int] = []
    arrays = []
    for f in folds:
        arr_path, ids_path = folder / f"fold-{f}.npy", folder / f"fold-{f}.json"
        if not arr_path.is_file() or not ids_path.is_file():
            raise MedsegError(f"{arr_path}: missing (has fold {f} finished? medseg fit --resume {experiment})")
        try:
            shape, dtype, offset = npy_layout(arr_path)
            if dtype.kind != "f" or len(shape) != 3 or arr_path.stat().st_size != offset + int(np.prod(shape)) * dtype.itemsize:
                raise ValueError("not a whole (N, H, W) float array")
        except (OSError, ValueError) as e:  # a damaged file is one line naming it
            raise MedsegError(f"{arr_path}: unreadable ({type(e).__name__})") from None
        fold_ids = read_json(ids_path)
        if not isinstance(fold_ids, list) or len(fold_ids) != shape[0]:
            raise MedsegError(f"{ids_path}: does not list the {shape[0]} samples of {arr_path.name}")
        ids.extend(str(i) for i in fold_ids)
        fold_of.extend([f] * shape[0])
        arrays.append(StoredArray(arr_path, shape, dtype, offset))
    return OOFProbs(ids, fold_of, arrays)

