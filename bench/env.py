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


def calibration(seconds: float = 0.5) -> dict | None:
    """How fast this CPU is right now, on three fixed workloads of about `seconds` each.

    The reference machine is a shared VM whose speed moves by 20-25% from one hour to the next
    with the same code; these figures, taken beside each result, say which hour a timing is
    from. `matmul_gflops`: float32 (2048 x 576) @ (576 x 1536), the language model's largest
    product; `small_ops_per_ms`: (180 x 64) @ (64 x 64) + GELU pairs, the size of SREL's steps
    on Manhattan; `copy_gb_per_s`: a 64 MB tensor copied. At the current torch thread count;
    None without torch."""
    try:
        import torch
    except ImportError:
        return None
    import time

    def rate(work, per_call: float) -> float:
        work()  # warm-up
        calls, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            work()
            calls += 1
        return calls * per_call / elapsed

    generator = torch.Generator().manual_seed(0)
    a, b = (torch.rand(2048, 576, generator=generator), torch.rand(576, 1536, generator=generator))
    x, w = torch.rand(180, 64, generator=generator), torch.rand(64, 64, generator=generator)
    big = torch.rand(16 * 1024**2, generator=generator)
    out = torch.empty_like(big)
    return {
        "matmul_gflops": round(rate(lambda: a @ b, 2 * 2048 * 576 * 1536 / 1e9), 1),
        "small_ops_per_ms": round(rate(lambda: torch.nn.functional.gelu(x @ w), 1e-3), 2),
        "copy_gb_per_s": round(rate(lambda: out.copy_(big), 2 * big.numel() * 4 / 1e9), 1),
        "threads": torch.get_num_threads(),
    }


def environment(device: str = "cpu", calibrate: bool = True, before: dict | None = None) -> dict:
    """A JSON-able description of where and when a result was measured.

    `calibrate` adds this moment's `calibration()`; `before`, one taken when the measurement
    started (kept as "calibration_before")."""
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
        "calibration": calibration() if calibrate else None,
        "calibration_before": before,
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
