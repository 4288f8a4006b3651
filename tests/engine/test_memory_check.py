"""The memory check before a run: it counts every attention block SREL has."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import engine.memory as memory_module
from engine.cli import MemoryRefused
from engine.memory import estimate_job_bytes
from engine.models.modeling_srel import SRELConfig
from engine.pipeline import check_memory


def city(n: int):
    views = {name: SimpleNamespace(width=width, kind=kind)
             for name, width, kind in (("poi", 20, "counts"), ("landuse", 10, "shares"),
                                       ("mobility", n, "flow"))}
    return SimpleNamespace(n_regions=n, views=views)


def test_intra_view_attention_counts_toward_the_memory_a_job_needs(monkeypatch):
    n, config = 1000, SRELConfig()
    region_blocks_only = estimate_job_bytes(
        n, 30, hidden=config.hidden, heads=config.heads, layers=config.layers,
        dense_threshold=config.dense_threshold, neighbours=config.neighbours,
        embedding_size=config.embedding_size, distance_buckets=config.distance_buckets)
    # Memory for the region transformer's two blocks, not for the three views' blocks as well.
    monkeypatch.setattr(memory_module, "available_bytes", lambda device: region_blocks_only * 1.2)
    with pytest.raises(MemoryRefused, match="1000 regions"):
        check_memory(city(n), config, "cpu")
    check_memory(city(n), SRELConfig(intra_view_layers=0), "cpu")  # fits without them
