"""Where and how the network runs: device, precision, the CPU allocator, the machine in words.

Every decision of this kind is made here, once, for every verb: training (`training`),
inference (`inference`), the step-cost measurement (`planning`) and the CLI's start-up
(tcmalloc needs a re-exec before anything else is imported).
"""

from __future__ import annotations

import contextvars
import os
import platform
import re
import sys
from contextlib import contextmanager, nullcontext
from typing import Iterable, Iterator, Optional

from medseg.errors import MedsegError

# Debian's libtcmalloc-minimal4 and other distributions' names for it
_TCMALLOC_PATHS = (
    "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib64/libtcmalloc_minimal.so.4",
    "/usr/lib/libtcmalloc_minimal.so.4",
)


# ---------------------------------------------------------------------------------------
# The CPU allocator


def preload_tcmalloc(argv: list[str], verbs: Iterable[str]) -> None:
    """Re-execute once with tcmalloc preloaded (Debian: libtcmalloc-minimal4), if it is installed.

    PyTorch on CPU allocates and frees large tensors every step; glibc malloc returns them to
    the OS and faults them back in, tcmalloc keeps them. Measured here: ~30% shorter steps
    (BENCHMARKS.md, fast path). LD_PRELOAD only works at process start, hence the re-exec.
    MEDSEG_TCMALLOC=off disables it.

    Args:
        argv: the command line (argv[1] is the verb).
        verbs: the verbs worth it (those that run a network).
    """
    if sys.platform != "linux" or len(argv) < 2 or argv[1] not in set(verbs):
        return
    if os.environ.get("MEDSEG_TCMALLOC", "").lower() in ("off", "0", "no") or tcmalloc_active():
        return
    lib = next((p for p in _TCMALLOC_PATHS if os.path.exists(p)), None)
    if lib is None:
        return
    env = dict(os.environ, LD_PRELOAD=" ".join(x for x in (lib, os.environ.get("LD_PRELOAD", "")) if x), MEDSEG_TCMALLOC="on")
    try:
        os.execve(sys.executable, [sys.executable, "-m", "medseg.cli", *argv[1:]], env)
    except OSError:
        return  # could not re-exec: run as is, only slower


def tcmalloc_active() -> bool:
    """This process runs with tcmalloc preloaded."""
    return "tcmalloc" in os.environ.get("LD_PRELOAD", "")


# ---------------------------------------------------------------------------------------
# Device and precision


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls run in hardware (elsewhere bf16 autocast can be slower than fp32)."""
    import torch

    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # private helpers; absent from other torch builds
        return False


def resolve_precision(requested: str, accelerator: str) -> str:
    """The Lightning precision string for `train.precision` on the device `train.accelerator` gives."""
    import torch

    cuda = cuda_available() and accelerator != "cpu"
    if requested == "auto":
        if cuda:
            return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
        # measured on a 2-core AVX512-BF16 CPU: 1.77x the fp32 step for ResNet-34 and higher
        # Dice at equal budget on both cross-validation folds of BUSI (BENCHMARKS.md §5c)
        return "bf16-mixed" if cpu_has_native_bf16() else "32-true"
    if requested == "bf16":
        return "bf16-mixed"
    if requested == "16":
        if not cuda:
            raise MedsegError("config error: train.precision: '16' (float16 mixed) needs a GPU; use 'bf16' or '32' on CPU")
        return "16-mixed"
    return "32-true"


def check_accelerator(cfg) -> None:
    """Refuse, before anything is written, an accelerator or device count this machine does not have."""
    if cfg.train.accelerator != "gpu":
        return
    import torch

    if not cuda_available():
        raise MedsegError("config error: train.accelerator: 'gpu' but no CUDA GPU is visible here; use 'auto' or 'cpu'")
    n = torch.cuda.device_count()
    devices = cfg.train.devices
    if isinstance(devices, int) and devices > n:
        raise MedsegError(f"config error: train.devices: {devices} GPUs asked for, {n} visible")
    if isinstance(devices, list) and max(devices) >= n:
        raise MedsegError(f"config error: train.devices: GPU {max(devices)} asked for, {n} visible (indices 0..{n - 1})")


def training_device(cfg) -> str:
    """'gpu' when fit will train on CUDA, else 'cpu'."""
    return "gpu" if cfg.train.accelerator != "cpu" and cuda_available() else "cpu"


def device_name(kind: str) -> str:
    """The device in words, e.g. 'CPU, 2 torch threads'."""
    import torch

    if kind == "gpu":
        return f"{torch.cuda.get_device_name(0)} (CUDA)"
    return f"CPU, {torch.get_num_threads()} torch threads"


# The device a verb's `--device` asked for; unset: the run's accelerator decides (`inference_device`).
_DEVICE: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("medseg_device", default=None)
_DEVICE_RE = re.compile(r"^(auto|cpu|gpu|cuda(:\d+)?)$")


def parse_device(spec: str) -> str:
    """A `--device` value checked and normalised: 'auto', 'cpu', 'cuda' or 'cuda:N' ('gpu' means 'cuda')."""
    text = str(spec).strip().lower()
    if not _DEVICE_RE.match(text):
        raise MedsegError(f"--device: '{spec}' is not a device; use auto, cpu, cuda or cuda:N")
    return "cuda" if text == "gpu" else text


@contextmanager
def device_scope(spec: Optional[str]) -> Iterator[None]:
    """Run the networks of the enclosed verb on this device (None: the default rule of `inference_device`)."""
    token = _DEVICE.set(parse_device(spec) if spec else None)
    try:
        yield
    finally:
        _DEVICE.reset(token)


def select_device(spec: Optional[str] = None, accelerator: str = "auto"):
    """The device-selection seam: the torch device a network runs on, for every verb.

    An explicit device (`spec`, else the enclosing `device_scope`) wins; 'auto' and no device
    follow the accelerator: CUDA when `cuda_available()` (the local rank's GPU under DDP), else
    the CPU. Asking for CUDA where there is none is refused in one line.

    Args:
        spec: 'auto', 'cpu', 'cuda', 'cuda:N' or None.
        accelerator: the run's `train.accelerator` ('auto', 'cpu' or 'gpu'), used when no device is given.
    """
    import torch

    spec = parse_device(spec) if spec else _DEVICE.get()
    if spec is None or spec == "auto":
        spec = "cpu" if accelerator == "cpu" else "cuda" if (accelerator == "gpu" or cuda_available()) else "cpu"
    if spec == "cpu":
        return torch.device("cpu")
    if not cuda_available():
        raise MedsegError(f"--device {spec}: no CUDA GPU is visible here; use --device cpu")
    if spec == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0) or 0))
    return torch.device(spec)


def inference_device(cfg=None):
    """Where `evaluate`, `tune`, `predict`, the report and the doctor run the network (see `select_device`)."""
    return select_device(None, getattr(getattr(cfg, "train", None), "accelerator", "auto"))


def fit_device_overrides(spec: Optional[str]) -> dict:
    """`--device` for fit and plan as config values: {'accelerator': ..., 'devices': ...} (empty for None / 'auto')."""
    if not spec:
        return {}
    spec = parse_device(spec)
    if spec == "auto":
        return {}
    if spec == "cpu":
        return {"accelerator": "cpu", "devices": 1}
    if spec == "cuda":
        return {"accelerator": "gpu"}
    return {"accelerator": "gpu", "devices": [int(spec.split(":")[1])]}


def inference_precision(precision: str, device) -> str:
    """The precision to predict in: the trained one, except float16, which is a GPU feature (float32 on CPU)."""
    if precision.startswith("16") and getattr(device, "type", str(device)) != "cuda":
        return "32-true"
    return precision


def autocast_for(precision: str, device):
    """The autocast context that matches a Lightning precision string."""
    import torch

    device = torch.device(device)
    if precision.startswith("bf16"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision.startswith("16"):
        return torch.autocast(device.type, dtype=torch.float16)
    return nullcontext()


def synchronize(device) -> None:
    """Wait for queued GPU work (timings); nothing on the CPU."""
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize()


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, e.g. a container's or a scheduler's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def machine_description() -> str:
    """The machine in a line for state.json."""
    import torch

    return f"{platform.machine()} {os.cpu_count()} cpus, torch threads {torch.get_num_threads()}"
