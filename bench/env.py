"""What every result file carries: date, git commit, device, CPU, library versions, load.

Standard library only (torch and transformers are looked up if installed), so the GPU sweep and
QGIS's Python can use it too.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata as _md
import os
import platform
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def git_commit() -> str:
    """The checked-out commit, with '+dirty' when tracked files differ from it."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO,
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (commit or "unknown") + ("+dirty" if dirty else "")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# The CPU features that decide how fast the language models run: native bfloat16 (AVX512-BF16,
# AMX) doubles prompt-encoding speed, and the engine then runs the models in bfloat16.
CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")


def cpu_features() -> list[str]:
    """Which of CPU_FEATURES this CPU has (from /proc/cpuinfo; empty when unknown)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return []
    return [name for name in CPU_FEATURES if name in flags]


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (processes wanting a CPU), or None."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _version(package: str) -> str | None:
    try:
        return _md.version(package)
    except _md.PackageNotFoundError:
        return None


def environment(device: str = "cpu") -> dict:
    """A JSON-able description of where and when a result was measured."""
    gpu = None
    torch_threads = None
    try:
        import torch

        torch_threads = torch.get_num_threads()
        if device.startswith("cuda") and torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    memory_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gb = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "device": device,
        "gpu": gpu,
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "cpu_features": cpu_features(),
        "memory_gb": memory_gb,
        "load_average": load_average(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "torch_threads": torch_threads,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {p: _version(p) for p in ("torch", "transformers", "torch-geometric",
                                               "numpy", "scipy", "scikit-learn")},
    }


def peak_rss_bytes() -> int:
    """This process's peak resident memory (VmHWM), from /proc or getrusage."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
