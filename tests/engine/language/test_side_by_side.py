"""SREL beside the language model (engine.tasks.srel_and_semantic_vectors): same numbers as
each alone, every thread back afterwards, and a failure on either side ends the run at once."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
import torch
from conftest import region_dataset

import engine.language.encode as encode_module
import engine.tasks as tasks_module
from engine.errors import InputError
from engine.events import EventSink
from engine.models.modeling_srel import SRELConfig
from engine.pipeline import options
from engine.tasks import semantic_vectors, srel_and_semantic_vectors
from engine.training.train_srel import fit_srel


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def city():
    dataset = region_dataset(8)
    dataset.targets = {"crime": np.arange(8.0), "price": np.arange(8.0) ** 2}
    return dataset


def job_for(model_dir, tmp_path) -> tuple[dict, dict]:
    job = {"language_model": str(model_dir), "cache_dir": str(tmp_path / "vectors"), "seed": 3}
    return job, options(job)


def events(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_side_by_side_gives_what_each_gives_alone_and_restores_the_threads(
        tiny_causal_dir, tmp_path, two_threads):
    dataset, config = city(), SRELConfig(hidden=16, embedding_size=8, epochs=40)
    job, opts = job_for(tiny_causal_dir, tmp_path)
    stream = io.StringIO()
    timings = {}
    srel, vectors = srel_and_semantic_vectors(dataset, job, config, opts, "cpu",
                                              EventSink("jsonl", stream), timings)
    assert torch.get_num_threads() == 2
    assert set(timings) == {"srel_seconds", "prompt_seconds"}
    stages = {e["stage"] for e in events(stream) if e["event"] == "progress"}
    assert {"srel", "prompts"} <= stages
    # SREL ran on one thread: the same embeddings as SREL alone on one thread, same seed.
    torch.set_num_threads(1)
    alone = fit_srel(dataset, config, seed=3).embeddings
    torch.set_num_threads(2)
    np.testing.assert_array_equal(srel.embeddings, alone)
    # The vectors are those of the language model alone (here from its fresh cache).
    again = semantic_vectors(dataset, {**job, "cache_dir": str(tmp_path / "other")}, opts, "cpu",
                             EventSink("quiet"))
    for target in dataset.targets:
        np.testing.assert_allclose(vectors[target], again[target], rtol=1e-5, atol=1e-6)
    # A second run, its vectors now from the cache, gives the same embeddings.
    srel_again, _ = srel_and_semantic_vectors(dataset, job, config, opts, "cpu",
                                              EventSink("quiet"), {})
    np.testing.assert_array_equal(srel_again.embeddings, srel.embeddings)


def test_a_failing_language_model_stops_srel_early(tiny_causal_dir, tmp_path, two_threads,
                                                    monkeypatch):
    def broken(*args, **kwargs):
        raise InputError("the image raster cannot be read", layer="image.tif")

    monkeypatch.setattr(encode_module, "encode_regions", broken)
    dataset = city()
    config = SRELConfig(hidden=16, embedding_size=8, epochs=20_000)  # a minute or more, unless stopped
    job, opts = job_for(tiny_causal_dir, tmp_path)
    stream = io.StringIO()
    with pytest.raises(InputError, match="image raster"):
        srel_and_semantic_vectors(dataset, job, config, opts, "cpu", EventSink("jsonl", stream), {})
    srel_done = [e["fraction"] for e in events(stream)
                 if e["event"] == "progress" and e["stage"] == "srel"]
    assert max(srel_done, default=0.0) < 0.5
    assert torch.get_num_threads() == 2


def test_a_failing_srel_ends_the_run_before_the_other_tasks_are_encoded(
        tiny_causal_dir, tmp_path, two_threads, monkeypatch):
    def failing_srel(*args, **kwargs):
        raise InputError("SREL cannot train on these regions")

    encoded = []

    def slow_encode(dataset, target, progress=None, **kwargs):
        encoded.append(target)
        for k in range(20):  # 20 batches of 50 ms: SREL's error arrives during the first task
            time.sleep(0.05)
            progress((k + 1) / 20, "batch")
        return np.zeros((dataset.n_regions, 4), dtype=np.float32)

    monkeypatch.setattr(tasks_module, "train_srel", failing_srel)
    monkeypatch.setattr(encode_module, "encode_regions", slow_encode)
    job, opts = job_for(tiny_causal_dir, tmp_path)
    with pytest.raises(InputError, match="SREL cannot train"):
        srel_and_semantic_vectors(city(), job, SRELConfig(hidden=16, embedding_size=8, epochs=5),
                                  opts, "cpu", EventSink("quiet"), {})
    assert encoded == ["crime"]  # "price" was never started
    assert torch.get_num_threads() == 2


def test_one_after_the_other_on_one_thread_or_without_a_language_model(tmp_path, monkeypatch):
    """With one thread (or no language model, or the sparse path) nothing runs side by side."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        job = {"language_model": "none", "seed": 0}
        srel, vectors = srel_and_semantic_vectors(
            city(), job, SRELConfig(hidden=16, embedding_size=8, epochs=5), options(job), "cpu",
            EventSink("quiet"), timings := {})
        assert vectors == {"crime": None, "price": None}
        assert srel.embeddings.shape == (8, 8)
        assert set(timings) == {"srel_seconds", "prompt_seconds"}
    finally:
        torch.set_num_threads(before)
