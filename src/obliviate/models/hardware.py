"""What the machine can do: compute precision choice (measured: ``precision_probe``) and a matmul peak.

Throughput is always reported beside the matmul peak measured in the same run, because CPUs of
the same kind differ several-fold (an AMX Xeon runs bf16 matmuls ~5x faster than fp32; an EPYC
without native bf16 runs them far slower).
"""

from __future__ import annotations

import platform
import time
from functools import lru_cache
from typing import Any

import torch


@lru_cache(maxsize=1)
def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@lru_cache(maxsize=1)
def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def native_bf16() -> bool:
    """True where bf16 matmuls are fast: CUDA with bf16 support, or a CPU with AMX/AVX512-BF16."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


def choose_precision(requested: str = "auto", model_config: Any = None) -> str:
    """Accelerate's ``mixed_precision`` value: 'bf16' (autocast, fp32 master weights) or 'no'.

    ``auto`` on a CPU is measured, not read from the flags (``precision_probe``), for the
    shapes of ``model_config`` (the default model's without one).
    """
    from obliviate.models.precision_probe import precision_choice

    return precision_choice(requested, model_config).mixed


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return cpu_name()


def measure_matmul_gflops(dtype: torch.dtype = torch.float32, size: int = 1024, seconds: float = 1.0) -> float:
    """Sustained GFLOP/s of square matmuls on this device (2*n^3 FLOPs each)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(2):
        a @ b  # warm up kernels and caches
    if device == "cuda":
        torch.cuda.synchronize()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    if device == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    return 2 * size**3 * count / elapsed / 1e9
