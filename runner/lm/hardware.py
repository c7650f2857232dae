"""What machine are we on? Plain functions returning dicts, used to pick a backend and to log it.

Every probe is best effort: a missing tool (sysctl, nvidia-smi, torch) yields an empty or False
field instead of an exception, because hardware detection must never stop a run.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import shutil
import subprocess
from functools import lru_cache


def _run(cmd: list[str], timeout: float = 5.0) -> str:
    """stdout of `cmd`, or "" when it is missing or fails."""
    if not shutil.which(cmd[0]):
        return ""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def is_apple_silicon() -> bool:
    return platform.system() == "Darwin" and platform.machine() == "arm64"


def apple_silicon() -> dict:
    """Chip name, GPU core count and unified memory on Apple Silicon; {} elsewhere."""
    if not is_apple_silicon():
        return {}
    chip = _run(["sysctl", "-n", "machdep.cpu.brand_string"]).strip()
    mem = _run(["sysctl", "-n", "hw.memsize"]).strip()
    gpu_cores = None
    match = re.search(r"Total Number of Cores:\s*(\d+)", _run(["system_profiler", "SPDisplaysDataType"], timeout=15))
    if not match:  # ioreg is faster and present even when system_profiler is restricted
        match = re.search(r'"gpu-core-count"\s*=\s*(\d+)', _run(["ioreg", "-rc", "AGXAccelerator", "-d", "1"]))
    if match:
        gpu_cores = int(match.group(1))
    return {
        "chip": chip or platform.processor(),
        "gpu_cores": gpu_cores,
        "unified_memory_gb": round(int(mem) / 2**30, 1) if mem.isdigit() else None,
        "metal": True,
    }


def cuda() -> dict:
    """CUDA devices: through torch when importable (what the torch backend will use), else nvidia-smi."""
    if importlib.util.find_spec("torch") is not None:
        try:
            import torch

            if torch.cuda.is_available():
                devices = [torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())]
                return {
                    "available": True,
                    "source": "torch",
                    "devices": [{"name": d.name, "memory_gb": round(d.total_memory / 2**30, 1)} for d in devices],
                }
        except Exception:  # a broken CUDA install must not stop detection
            pass
    out = _run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"])
    devices = []
    for line in out.strip().splitlines():
        name, _, mem = line.rpartition(",")
        if name:
            devices.append({"name": name.strip(), "memory_gb": round(float(mem) / 1024, 1) if mem.strip().isdigit() else None})
    return {"available": bool(devices), "source": "nvidia-smi" if devices else None, "devices": devices}


def _cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def cpu() -> dict:
    """CPU model, core counts and the SIMD flags llama.cpp / ggml care about."""
    info = _cpuinfo()
    flags: set[str] = set()
    match = re.search(r"^(?:flags|Features)\s*:\s*(.*)$", info, re.M)
    if match:
        flags = set(match.group(1).split())
    model = re.search(r"^model name\s*:\s*(.*)$", info, re.M)
    physical = set()
    for block in info.split("\n\n"):  # one block per logical CPU
        pid, core = re.search(r"physical id\s*:\s*(\d+)", block), re.search(r"core id\s*:\s*(\d+)", block)
        if pid and core:
            physical.add((pid.group(1), core.group(1)))
    logical = os.cpu_count() or 1
    name = model.group(1).strip() if model else (_run(["sysctl", "-n", "machdep.cpu.brand_string"]).strip() or platform.processor())
    return {
        "model": name,
        "arch": platform.machine(),
        "logical_cores": logical,
        "physical_cores": len(physical) or logical,
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else logical,
        "avx2": "avx2" in flags,
        "fma": "fma" in flags,
        "f16c": "f16c" in flags,
        "avx512": any(f.startswith("avx512") for f in flags),
        "neon": "asimd" in flags or platform.machine() in ("arm64", "aarch64"),
    }


def ram_gb() -> float | None:
    """Total physical memory in GiB."""
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        mem = _run(["sysctl", "-n", "hw.memsize"]).strip()
        return round(int(mem) / 2**30, 1) if mem.isdigit() else None


def installed_backends() -> dict:
    """Which local backend libraries are importable (without importing them)."""
    return {
        "llamacpp": importlib.util.find_spec("llama_cpp") is not None,
        "mlx": importlib.util.find_spec("mlx") is not None and importlib.util.find_spec("mlx_lm") is not None,
        "torch": importlib.util.find_spec("torch") is not None and importlib.util.find_spec("transformers") is not None,
    }


@lru_cache(maxsize=1)
def detect() -> dict:
    """Everything above in one dict (cached: the hardware does not change during a run)."""
    return {
        "system": platform.system(),
        "machine": platform.machine(),
        "apple_silicon": apple_silicon(),
        "cuda": cuda(),
        "cpu": cpu(),
        "ram_gb": ram_gb(),
        "backends": installed_backends(),
    }
