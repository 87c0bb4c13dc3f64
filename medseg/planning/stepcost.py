"""The cost of a training step on this machine: seconds and memory per image, measured or by formula.

The plan (medseg/plan.py) sizes the batch and the epochs of a time budget from a `StepCost`:

* measured (`plan.measure`): at batch 2 and at batch 4, two untimed warm-up steps, then the
  fastest of three timed training steps of the configured model, loss and precision at the
  planned size on the device fit will use; the slope is the cost per image, the rest the fixed
  cost per step. On a GPU the peak allocated memory at the two batch sizes gives memory per
  image the same way.
* formula: the network's multiply-accumulates and activation sizes, counted on PyTorch's meta
  device (shapes only, no computation); a training step costs 3x the forward pass, at an
  assumed 2.5 GMAC/s per CPU thread or 2 TMAC/s on a GPU. A rough guide, off by a factor of a
  few (small networks are dominated by per-layer overheads the formula ignores).

Memory on CPU is always the formula's (CPU peak memory cannot be read reliably): 8 bytes per
activation element (the float32 value kept for backward and its gradient) plus 16 bytes per
parameter (weight, gradient, two AdamW moments).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Optional

import torch

from medseg.config import Config
from medseg.models import create_model_from_config
from medseg.runtime import autocast_for, device_name, resolve_precision, synchronize, training_device
from medseg.training import SegModule

# The share of memory a batch may use: of the GPU's memory, or of physical RAM on CPU.
MEMORY_SHARE = {"cpu": 0.25, "gpu": 0.7}
# Fixed seconds per epoch besides training and validation (checkpoints, logging).
EPOCH_OVERHEAD_S = 0.5
# formula cost model
MACS_PER_S_PER_CPU_THREAD = 2.5e9
MACS_PER_S_GPU = 2e12
TRAIN_COST_FACTOR = 3.0  # backward costs about twice the forward pass
ACTIVATION_BYTES = 8.0  # float32 activation kept for backward + its gradient
PARAM_BYTES = 16.0  # float32 weight, gradient and two AdamW moments
# measured cost: untimed steps at each batch size, then the fastest of a few timed ones
WARMUP_STEPS = 2
TIMED_STEPS = 3
# the two batch sizes timed (small: on a GPU the memory a batch may use is not known until these
# steps measured it); the slope between them is the cost per image
MEASURE_BATCHES = (2, 4)


@dataclass
class StepCost:
    """Seconds and bytes of a training step and a validation forward pass, per image and fixed.

    Attributes:
        method: 'measured' (timed on this machine) or 'formula'.
        device: 'cpu' or 'gpu' (what fit will train on).
        device_name: the device in words.
        train_size / val_size: (h, w) of training inputs (crops if any) and of validation images.
        step_s_fixed / train_s_per_image: step seconds = fixed + per_image * batch.
        val_s_per_image: forward seconds per validation image.
        mem_fixed_bytes / mem_per_image_bytes: training memory = fixed + per_image * batch.
        mem_available_bytes: the memory the batch may use.
        macs_per_image: forward multiply-accumulates per image (counted on the meta device).
    """

    method: str
    device: str
    device_name: str
    train_size: tuple[int, int]
    val_size: tuple[int, int]
    step_s_fixed: float
    train_s_per_image: float
    val_s_per_image: float
    mem_fixed_bytes: float
    mem_per_image_bytes: float
    mem_available_bytes: float
    macs_per_image: float

    def step_s(self, batch: int) -> float:
        return self.step_s_fixed + self.train_s_per_image * batch

    def memory_batch_limit(self) -> int:
        room = self.mem_available_bytes - self.mem_fixed_bytes
        return max(1, int(room // max(self.mem_per_image_bytes, 1.0)))

    def to_json(self) -> dict:
        return asdict(self)


def _build_net(cfg: Config, in_channels: int):
    return create_model_from_config(cfg.model, in_channels)


def count_network(cfg: Config, in_channels: int, size: tuple[int, int]) -> tuple[float, float, int]:
    """(forward MACs, activation elements, parameters) for one image, counted without computing.

    Convolutions give the MACs (output elements x input channels per group x kernel area);
    every leaf module's output counts as an activation. The network is built on PyTorch's meta
    device, where tensors have shapes but no data (on the CPU if the meta device fails).
    """
    from torch import nn

    macs, acts = [0.0], [0.0]

    def hook(module, inputs, output):
        out = output[0] if isinstance(output, (list, tuple)) else output
        if not isinstance(out, torch.Tensor):
            return
        acts[0] += out.numel()
        if isinstance(module, nn.Conv2d):
            macs[0] += out.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)
        elif isinstance(module, nn.ConvTranspose2d):
            macs[0] += inputs[0].numel() * (module.out_channels // module.groups) * math.prod(module.kernel_size)

    def run(device: str) -> int:
        macs[0] = acts[0] = 0.0
        with torch.random.fork_rng(devices=[]), torch.device(device):
            net = _build_net(cfg, in_channels)
        handles = [m.register_forward_hook(hook) for m in net.modules() if not list(m.children())]
        try:
            with torch.no_grad():
                net(torch.zeros(1, in_channels, *size, device=device))
        finally:
            for h in handles:
                h.remove()
        return sum(p.numel() for p in net.parameters())

    try:
        params = run("meta")
    except Exception:  # noqa: BLE001 — a network with an op the meta device lacks: count with real tensors
        params = run("cpu")
    return macs[0], acts[0], params


def _available_memory(kind: str) -> float:
    # the device's total, not what is free now: the same hardware always gets the same plan
    # (every process of a multi-GPU run must plan the same batch size)
    if kind == "gpu":
        return MEMORY_SHARE["gpu"] * torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 8 * 2**30
    return MEMORY_SHARE["cpu"] * ram


def _timed(fn, device: torch.device) -> float:
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0


def measure_cost(cfg: Config, in_channels: int, train_size: tuple[int, int], val_size: tuple[int, int], measure: bool = True) -> StepCost:
    """Seconds and memory of training steps of the configured model and loss on this machine.

    Measured: at each of MEASURE_BATCHES, WARMUP_STEPS untimed steps then the fastest of
    TIMED_STEPS timed ones; the validation forward likewise at batch 4. The random state of
    torch is restored afterwards, so planning does not shift the run's initialisation.

    Args:
        cfg: the config (model, loss, train.precision/accelerator/channels_last).
        in_channels: image channels.
        train_size: (h, w) of training inputs.
        val_size: (h, w) of validation images.
        measure: time steps; False: the formula (see the module docstring).
    """
    kind = training_device(cfg)
    macs, acts, params = count_network(cfg, in_channels, train_size)
    val_macs = macs * (val_size[0] * val_size[1]) / (train_size[0] * train_size[1])
    available = _available_memory(kind)
    formula = {
        "mem_fixed_bytes": PARAM_BYTES * params,
        "mem_per_image_bytes": ACTIVATION_BYTES * acts,
    }
    rate = MACS_PER_S_GPU if kind == "gpu" else MACS_PER_S_PER_CPU_THREAD * torch.get_num_threads()
    common = dict(device=kind, device_name=device_name(kind), train_size=tuple(train_size), val_size=tuple(val_size),
                  mem_available_bytes=available, macs_per_image=macs)
    if not measure:
        return StepCost(method="formula", step_s_fixed=0.0, train_s_per_image=TRAIN_COST_FACTOR * macs / rate,
                        val_s_per_image=val_macs / rate, **formula, **common)

    device = torch.device("cuda" if kind == "gpu" else "cpu")
    precision = resolve_precision(cfg.train.precision, cfg.train.accelerator)
    fmt = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    seconds, peaks = {}, {}
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if device.type == "cuda" else []):
        torch.manual_seed(0)
        # the real training step: the run's module (network, loss, channels_last) and its optimiser
        module = SegModule(cfg, in_channels, pos_fraction=0.01, steps_per_epoch=1, precision=precision).to(device)
        opt = module.configure_optimizers()[0][0]

        def batch(b: int, size) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            x = torch.randn(b, in_channels, *size, device=device).contiguous(memory_format=fmt)
            return x, (torch.rand(b, 1, *size, device=device) > 0.95).float(), torch.arange(b)

        def step(b3):
            opt.zero_grad(set_to_none=True)
            with autocast_for(precision, device):  # as Lightning's precision plugin wraps the step
                loss = module.training_step(b3, 0)
            loss.backward()
            opt.step()

        module.train()
        small, large = MEASURE_BATCHES
        for b in (small, large):
            b3 = batch(b, train_size)
            # warm-up at every batch size: oneDNN (CPU) and cuDNN build kernels per input shape, and
            # the allocator and AdamW's state settle over the first steps (with one warm-up step at
            # batch 2 only, the estimate of a batch-16 step was 1.2-1.4x the warm step, BENCHMARKS §1.0)
            for _ in range(WARMUP_STEPS):
                step(b3)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            # the fastest of a few: a step slowed by another process says nothing about the model
            seconds[b] = min(_timed(lambda: step(b3), device) for _ in range(TIMED_STEPS))
            if device.type == "cuda":
                peaks[b] = float(torch.cuda.max_memory_allocated())
        module.eval()
        xv = batch(4, val_size)[0]
        with torch.no_grad(), autocast_for(precision, device):
            module(xv)
            val_s = min(_timed(lambda: module(xv), device) for _ in range(TIMED_STEPS)) / 4
        del module, opt, b3, xv
        if device.type == "cuda":
            torch.cuda.empty_cache()
    per_image = (seconds[large] - seconds[small]) / (large - small)
    fixed = seconds[small] - small * per_image
    if per_image <= 0 or fixed < 0:  # timing noise: no trustworthy slope, charge it all per image
        per_image, fixed = seconds[large] / large, 0.0
    if peaks:
        per_mem = max((peaks[large] - peaks[small]) / (large - small), 1.0)
        formula = {"mem_fixed_bytes": max(peaks[large] - large * per_mem, 0.0), "mem_per_image_bytes": per_mem}
    return StepCost(method="measured", step_s_fixed=fixed, train_s_per_image=per_image, val_s_per_image=val_s, **formula, **common)


def micro_batches(n_train: int, batch: int, steps_per_epoch: Optional[int]) -> int:
    """Training micro-batches per epoch: `train.steps_per_epoch` when set, else the full batches of the training set."""
    return steps_per_epoch or max(1, n_train // batch)


def epoch_seconds(cost: StepCost, batch: int, n_train: int, n_val: int, steps_per_epoch: Optional[int]) -> float:
    """Seconds of one epoch: the training micro-batches fit runs, the validation pass, a fixed overhead."""
    return micro_batches(n_train, batch, steps_per_epoch) * cost.step_s(batch) + n_val * cost.val_s_per_image + EPOCH_OVERHEAD_S
