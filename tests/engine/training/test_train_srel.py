"""SREL training: losses decrease, determinism, embedding with a saved model, scale."""

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))

import numpy as np
import pytest
import torch
from tiny_region_data import large_city, tiny_dataset

from engine.errors import InputError
from engine.models.modeling_srel import SREL, SRELConfig, prepare_srel_inputs, schedule_epochs
from engine.models.serialization import load_model, save_model
from engine.training.train_srel import embed_with_model, fit_srel

torch.set_num_threads(1)


def tiny_config(**kw) -> SRELConfig:
    base = dict(embedding_size=8, hidden=16, heads=4, layers=2, distance_buckets=4,
                centrality_buckets=4, epochs=40, flow_rank=4, lr=5e-3)
    return SRELConfig(**{**base, **kw})


@pytest.mark.parametrize("dense_threshold", [1024, 0])
def test_losses_decrease(dense_threshold):
    config = tiny_config(dense_threshold=dense_threshold, dropout=0.0)
    result = fit_srel(tiny_dataset(12), config, seed=0)
    assert result.embeddings.shape == (12, 8) and result.embeddings.dtype == np.float32
    assert len(result.losses) == 40 == result.epochs
    assert np.mean(result.losses[-5:]) < 0.9 * np.mean(result.losses[:5])
    for name in ("poi_similarity", "landuse_similarity", "mobility_out"):
        assert result.loss_parts[name][-1] < result.loss_parts[name][0]


def test_same_seed_same_embeddings_other_seed_differs():
    dataset = tiny_dataset(10)
    a = fit_srel(dataset, tiny_config(epochs=10), seed=1)
    b = fit_srel(dataset, tiny_config(epochs=10), seed=1)
    c = fit_srel(dataset, tiny_config(epochs=10), seed=2)
    np.testing.assert_array_equal(a.embeddings, b.embeddings)
    assert a.losses == b.losses
    assert not np.allclose(a.embeddings, c.embeddings)


def test_no_label_is_read():
    dataset = tiny_dataset(10)
    a = fit_srel(dataset, tiny_config(epochs=5))
    dataset.targets = {"crime": np.full(10, 1e9)}
    dataset.classes = {"zone": np.arange(10)}
    b = fit_srel(dataset, tiny_config(epochs=5))
    np.testing.assert_array_equal(a.embeddings, b.embeddings)


@pytest.mark.parametrize("dense_threshold", [1024, 0])
def test_snapshots_leave_the_training_unchanged(dense_threshold):
    dataset = tiny_dataset(12)
    config = tiny_config(epochs=10, dense_threshold=dense_threshold)  # dropout on: masks drawn
    plain = fit_srel(dataset, config, seed=3)
    studied = fit_srel(dataset, config, seed=3, snapshot_every=4)
    np.testing.assert_array_equal(plain.embeddings, studied.embeddings)
    assert plain.losses == studied.losses and plain.snapshots == {}
    assert sorted(studied.snapshots) == [4, 8, 10]
    np.testing.assert_array_equal(studied.snapshots[10], studied.embeddings)
    # a snapshot is the model after that many epochs, not the final one
    np.testing.assert_array_equal(studied.snapshots[4],
                                  fit_srel(dataset, tiny_config(epochs=4, dense_threshold=
                                                                dense_threshold), seed=3).embeddings)
    with pytest.raises(InputError, match="snapshot_every"):
        fit_srel(dataset, config, snapshot_every=-1)


def test_saved_model_gives_the_same_embeddings(tmp_path):
    dataset = tiny_dataset(10)
    result = fit_srel(dataset, tiny_config(epochs=10))
    np.testing.assert_array_equal(embed_with_model(result.model, dataset), result.embeddings)
    save_model(result.model, result.config, tmp_path / "srel")
    loaded = load_model(tmp_path / "srel")
    np.testing.assert_array_equal(embed_with_model(loaded, dataset), result.embeddings)


@pytest.mark.parametrize("dense_threshold", [1024, 0])
def test_training_is_adam_on_each_parameter(dense_threshold):
    """fit_srel steps all parameters as one tensor; that must be the usual per-parameter Adam
    (same losses, same embeddings up to rounding), and the trained model's parameters must
    own their memory again (each its own storage, no gradient left)."""
    dataset, config = tiny_dataset(12), tiny_config(epochs=15, dense_threshold=dense_threshold)
    result = fit_srel(dataset, config, seed=4)

    inputs = prepare_srel_inputs(dataset, config)
    torch.manual_seed(4)
    generator = torch.Generator().manual_seed(4)
    model = SREL(config, inputs.view_specs)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr,
                                 weight_decay=config.weight_decay)
    model.train()
    losses = []
    for _ in range(config.epochs):
        optimizer.zero_grad()
        total = model.loss(inputs, model(inputs), generator)["total"]
        total.backward()
        optimizer.step()
        losses.append(total.item())
    model.eval()
    with torch.no_grad():
        expected = model(inputs).numpy()

    np.testing.assert_allclose(result.losses, losses, rtol=1e-4)
    np.testing.assert_allclose(result.embeddings, expected, atol=1e-4)
    params = list(result.model.parameters())
    assert len({p.untyped_storage().data_ptr() for p in params}) == len(params)
    assert all(p.grad is None for p in params)


def test_embed_with_model_rejects_other_views():
    result = fit_srel(tiny_dataset(10), tiny_config(epochs=1))
    with pytest.raises(InputError, match="views"):
        embed_with_model(result.model, tiny_dataset(10, with_flow=False))


def test_progress_is_reported():
    seen = []
    fit_srel(tiny_dataset(8), tiny_config(epochs=20), progress=lambda f, m: seen.append(f))
    assert seen[-1] == 1.0 and all(0 < f <= 1 for f in seen)


def test_schedule():
    assert schedule_epochs(180, SRELConfig()) == 2000
    assert schedule_epochs(10_000, SRELConfig()) == 204
    assert schedule_epochs(10_000, SRELConfig(epochs=7)) == 7


def test_ten_thousand_regions_forward_backward_step():
    """One full-batch step on 10,000 regions takes the sparse path and stays finite."""
    dataset = large_city(10_000)
    config = SRELConfig(hidden=32, layers=1, intra_view_layers=1, loss_rows=256,
                        similarity_pairs=8192)
    start = time.perf_counter()
    inputs = prepare_srel_inputs(dataset, config)
    assert not inputs.dense and inputs.distance_bucket is None
    assert inputs.edge_index.shape[1] < 40 * 10_000  # linear in N, no N x N array
    torch.manual_seed(0)
    model = SREL(config, inputs.view_specs)
    parts = model.loss(inputs, model(inputs), torch.Generator().manual_seed(0))
    parts["total"].backward()
    assert torch.isfinite(parts["total"])
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    assert time.perf_counter() - start < 60
