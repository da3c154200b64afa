"""What a classifier run's figure depends on besides its code, data and seed: the machine's arithmetic.

Training a network from scratch for many epochs amplifies rounding differences, and the CPU kernels that
PyTorch and oneDNN pick depend on the instruction set (AVX-512 or AVX2), the CPU and the thread count. The
same run with the same seed can therefore end at another accuracy on another machine, so the benchmark
records where each classifier run was measured, and its report says when its rows mix machines.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

# Environment settings that change which kernels run (each named in the summary when set).
KERNEL_SETTINGS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what `platform` knows."""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_summary() -> str:
    """One line naming what decides a run's arithmetic here: the GPU when PyTorch sees one, the CPU model,
    the vector instructions PyTorch's CPU kernels use, the thread count, the kernel settings given in the
    environment, and the PyTorch version. Runs with different summaries may round differently; equal
    summaries mean the same kind of machine, not a guarantee of equal arithmetic."""
    import torch

    parts = []
    if torch.cuda.is_available():
        parts.append(f"GPU {torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})")
    parts.append(f"CPU {cpu_model()}, {torch.backends.cpu.get_cpu_capability()}")
    parts.append(f"{torch.get_num_threads()} threads")
    parts += [f"{name}={os.environ[name]}" for name in KERNEL_SETTINGS if os.environ.get(name)]
    parts.append(f"torch {torch.__version__}")
    return ", ".join(parts)
