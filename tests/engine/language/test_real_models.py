"""The packaged real models (SmolLM2-135M-Instruct, all-MiniLM-L6-v2): slow, real weights."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from conftest import region_dataset

from engine.language.describe import describe_regions
from engine.language.encode import encode_regions
from engine.language.models import load_language_model
from engine.language.templates import task_template

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    import os

    # A persistent TOPT_CACHE_DIR keeps the converted SmolLM2 between runs; else a fresh one.
    root = os.environ.get("TOPT_CACHE_DIR")
    return root or str(tmp_path_factory.mktemp("topt-cache"))


def _cosine(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_smollm2_converts_once_and_encodes(cache_dir, tmp_path):
    started = time.perf_counter()
    model = load_language_model("smollm2", cache_dir=cache_dir, dtype=torch.float32)
    first_load = time.perf_counter() - started
    started = time.perf_counter()
    again = load_language_model("smollm2", cache_dir=cache_dir, dtype=torch.float32)
    second_load = time.perf_counter() - started
    assert model.kind == "causal" and model.hidden_size == 576
    assert again.fingerprint == model.fingerprint
    assert second_load < 30
    print(f"smollm2 load {first_load:.1f}s, cached load {second_load:.1f}s")

    dataset = region_dataset(n=6)
    texts = describe_regions(dataset)
    prefix = task_template("crime")
    started = time.perf_counter()
    reused = model.encode(texts, prefix, batch_size=4)
    print(f"smollm2 encode {len(texts)} regions {time.perf_counter() - started:.2f}s")
    full = model.encode(texts, prefix, batch_size=4, reuse_prefix=False)
    assert reused.shape == (6, 576) and np.isfinite(reused).all()
    assert np.abs(reused - full).max() < 1e-3 * np.abs(full).max()
    # Mean-pooled LM states share a large common part; what is left must differ by region.
    centred = reused - reused.mean(0)
    assert (np.linalg.norm(centred, axis=1) > 0.01 * np.linalg.norm(reused.mean(0))).all()

    cached = encode_regions(dataset, "crime", model=model, cache_dir=tmp_path)
    np.testing.assert_allclose(cached, reused, atol=1e-4)
    # The default dtype (bfloat16 on CPUs that have it) keeps the region differences.
    default = load_language_model("smollm2", cache_dir=cache_dir)
    fast = default.encode(texts, prefix, batch_size=4)
    fast_centred = fast - fast.mean(0)
    assert min(_cosine(centred[k], fast_centred[k]) for k in range(6)) > 0.95


def test_minilm_encodes(cache_dir):
    model = load_language_model("minilm", cache_dir=cache_dir)
    assert model.kind == "encoder" and model.hidden_size == 384
    texts = describe_regions(region_dataset(n=6))
    started = time.perf_counter()
    vectors = model.encode(texts, task_template("income"), batch_size=6)
    print(f"minilm encode 6 regions {time.perf_counter() - started:.2f}s")
    assert vectors.shape == (6, 384) and np.isfinite(vectors).all()
    # Similar texts are near each other; an unrelated sentence is farther away.
    unrelated = model.encode(["The violin concerto was played in D major."],
                             task_template("income"))[0]
    assert _cosine(vectors[0], vectors[1]) > _cosine(vectors[0], unrelated)
