"""Device choice, thread sizing and precision: one `device` argument, never `.cuda()` in modules.

CUDA if present, else MPS, else CPU. On CUDA: bf16 autocast and channels_last. On CPU:
channels_last (measured 3–4× faster for the depthwise/pointwise convs and max-pool that dominate
the DARTS cell; `benchmarks/bench_search.py` reports both layouts) and fp32. Threads are sized
to the cores this process may use (`NES_THREADS` overrides): oversubscribing a core shared with
another process made depthwise convs ~100× slower.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import platform

import torch


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS
        return max(1, os.cpu_count() or 1)


def configure_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads to `n`, `$NES_THREADS`, or the cores this process may use, and
    keep freed memory for reuse (`keep_freed_memory`): every process that trains or scores calls this."""
    keep_freed_memory()
    if n is None:
        env = os.environ.get("NES_THREADS")
        n = int(env) if env else available_cores()
    n = max(1, int(n))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3


@functools.cache
def keep_freed_memory() -> bool:
    """Let glibc keep the memory of freed tensors for the next step instead of handing it back to
    the system. By default an activation of a few MB is a fresh mmap whose pages fault and are
    zeroed again on every step: a member's CPU training step took 9 500 page faults and 20 ms of
    system time, and 12 faults with this (1.1–1.2× the steps per second). Tensors up to 32 MB
    (glibc's cap) then come from the heap, which is not trimmed, so a training process's memory
    stays at its peak. False where the C library is not glibc (nothing changes). Once per process."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own symbols, libc's among them
    except (OSError, AttributeError, TypeError):
        return False
    settings = ((M_MMAP_THRESHOLD, 32 << 20), (M_TRIM_THRESHOLD, (1 << 31) - 1), (M_TOP_PAD, 64 << 20))
    return all(mallopt(k, v) == 1 for k, v in settings)


def torch_threads() -> int:
    return torch.get_num_threads()


def resolve_device(name: str | torch.device | None = None) -> torch.device:
    """'auto'/None → cuda, mps or cpu; otherwise the named device, checked to exist."""
    if isinstance(name, torch.device):
        return name
    if name in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available here; use --device cpu")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {name!r} requested but MPS is not available here; use --device cpu")
    return dev


@functools.cache  # the CPU does not change under a running process
def cpu_model() -> str:
    """The processor's name from /proc/cpuinfo ('AMD EPYC', 'Intel(R) Xeon(R) …'), or the platform's
    where there is none: these shared machines are lent on different CPUs, and a timing is only
    comparable with one taken on the same kind."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_label(device: torch.device | None = None) -> str:
    """Short human label such as 'CUDA (NVIDIA H100)' or 'CPU (AMD EPYC, 2 threads)'."""
    device = resolve_device(device)
    if device.type == "cuda":
        return f"CUDA ({torch.cuda.get_device_name(device)})"
    if device.type == "mps":
        return "MPS (Apple GPU)"
    return f"CPU ({cpu_model()}, {torch.get_num_threads()} threads)"


def use_channels_last(device: torch.device) -> bool:
    return device.type in ("cuda", "cpu")


def autocast(device: torch.device):
    """bf16 autocast on CUDA; nothing elsewhere (CPU depthwise backward is slow in bf16)."""
    if device.type == "cuda":
        # no weight-cast cache: each weight is used once per forward, and a cache cannot live
        # inside a CUDA graph (nes.method.cuda_graphs replays whole steps as graphs)
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()
