"""How much memory a job needs, estimated before it starts, and how much the machine has."""

from __future__ import annotations

import os
from pathlib import Path


def available_bytes(device: str) -> int:
    """Free memory on the device: CUDA's free memory, else the system's MemAvailable."""
    if device.startswith("cuda"):
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    pages = os.sysconf("SC_AVPHYS_PAGES") if hasattr(os, "sysconf") else 0
    return int(pages * os.sysconf("SC_PAGE_SIZE")) if pages else 8 * 1024**3


def estimate_job_bytes(n_regions: int, view_width: int, *, hidden: int, heads: int, layers: int,
                       dense_threshold: int, neighbours: int, embedding_size: int,
                       distance_buckets: int = 16) -> int:
    """A generous upper estimate of SREL training memory (activations kept for backward).

    Dense attention keeps (heads, N, N) scores per layer (a few copies for softmax, dropout and
    gradients); sparse attention keeps (heads, N * k) scores per layer instead. The dense path
    also holds each pair's distance bucket and its one-hot (float32, buckets + 1 wide).
    """
    n = n_regions
    pairs = n * n if n <= dense_threshold else n * max(neighbours, 1) * 2
    attention = 8 * 4 * heads * layers * pairs
    tokens = 16 * 4 * n * hidden * (layers + 4)
    inputs = 4 * 4 * n * max(view_width, 1)
    similarity = 4 * 4 * (n * n if n <= dense_threshold else n * 64)
    distance = (8 + 4 * (distance_buckets + 1)) * n * n if n <= dense_threshold else 0
    outputs = 4 * 4 * n * embedding_size
    return int(attention + tokens + inputs + similarity + distance + outputs + 600 * 1024**2)
