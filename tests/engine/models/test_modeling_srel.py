"""SREL model: shapes, dense vs sparse attention, spatial priors, serialization."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from tiny_region_data import tiny_dataset

from engine.errors import InputError
from engine.models.modeling_srel import SREL, RegionAttention, SRELConfig, prepare_srel_inputs
from engine.models.serialization import load_model, save_model

torch.set_num_threads(1)


def tiny_config(**kw) -> SRELConfig:
    base = dict(embedding_size=8, hidden=16, heads=4, layers=2, distance_buckets=4,
                centrality_buckets=4, epochs=30, flow_rank=4)
    return SRELConfig(**{**base, **kw})


def model_and_inputs(config: SRELConfig, dataset=None, seed: int = 0):
    dataset = dataset or tiny_dataset(10)
    inputs = prepare_srel_inputs(dataset, config)
    torch.manual_seed(seed)
    return SREL(config, inputs.view_specs).eval(), inputs


def randomise_distance_bias(model: SREL) -> None:
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, RegionAttention):
            with torch.no_grad():
                module.distance_bias.weight.copy_(
                    torch.randn(module.distance_bias.weight.shape, generator=generator) * 3)


def test_output_shape_and_width_independent_of_n():
    config = tiny_config()
    for n in (5, 12):
        model, inputs = model_and_inputs(config, tiny_dataset(n))
        with torch.no_grad():
            out = model(inputs)
        assert out.shape == (n, 8)
        assert torch.isfinite(out).all()
    # The number of parameters does not depend on N.
    sizes = [sum(p.numel() for p in model_and_inputs(config, tiny_dataset(n))[0].parameters())
             for n in (6, 12)]
    assert sizes[0] == sizes[1]


@pytest.mark.parametrize("kind", ["centroid", "hops"])
def test_dense_and_sparse_attention_agree_on_complete_neighbour_set(kind):
    dataset = tiny_dataset(9, k=8)  # 8 nearest of 9 regions: every region attends to all
    dense_config = tiny_config(distance_kind=kind)
    sparse_config = tiny_config(distance_kind=kind, dense_threshold=0, neighbours=8)
    model, dense_inputs = model_and_inputs(dense_config, dataset)
    randomise_distance_bias(model)
    sparse_inputs = prepare_srel_inputs(dataset, sparse_config)
    assert dense_inputs.dense and not sparse_inputs.dense
    assert sparse_inputs.edge_index.shape[1] == 81  # all 9 x 9 pairs
    with torch.no_grad():
        dense_out = model(dense_inputs)
        sparse_out = model(sparse_inputs)
    torch.testing.assert_close(dense_out, sparse_out, atol=1e-5, rtol=1e-4)


def test_sparse_path_with_few_neighbours_differs_from_dense():
    dataset = tiny_dataset(12, k=2)
    config = tiny_config()
    model, dense_inputs = model_and_inputs(config, dataset)
    sparse_inputs = prepare_srel_inputs(dataset, tiny_config(dense_threshold=0, neighbours=2,
                                                             flow_neighbours=1))
    assert sparse_inputs.edge_index.shape[1] < 144
    with torch.no_grad():
        assert not torch.allclose(model(dense_inputs), model(sparse_inputs), atol=1e-4)


@pytest.mark.parametrize("dense_threshold", [1024, 0])
def test_distance_bias_changes_output_and_can_be_switched_off(dense_threshold):
    dataset = tiny_dataset(10)
    on, inputs = model_and_inputs(tiny_config(dense_threshold=dense_threshold), dataset)
    off, _ = model_and_inputs(tiny_config(dense_threshold=dense_threshold,
                                          use_distance_bias=False), dataset)
    off.load_state_dict(on.state_dict())
    with torch.no_grad():
        before = on(inputs)
        torch.testing.assert_close(before, off(inputs))  # bias starts at zero
        randomise_distance_bias(on)
        randomise_distance_bias(off)
        assert not torch.allclose(on(inputs), before, atol=1e-4)  # the bias acts...
        torch.testing.assert_close(off(inputs), before)  # ...unless switched off


def test_centrality_changes_output_and_can_be_switched_off():
    dataset = tiny_dataset(10)
    on, inputs = model_and_inputs(tiny_config(), dataset)
    off, _ = model_and_inputs(tiny_config(use_centrality=False), dataset)
    off.load_state_dict(on.state_dict())
    with torch.no_grad():
        assert not torch.allclose(on(inputs), off(inputs), atol=1e-4)
        # Changing only the regions' degrees changes the embeddings with centrality on.
        other = prepare_srel_inputs(dataset, tiny_config())
        other.degree_bucket = (other.degree_bucket + 1) % 4
        assert not torch.allclose(on(inputs), on(other), atol=1e-4)
        torch.testing.assert_close(off(inputs), off(other))


def test_distance_buckets_follow_distance():
    dataset = tiny_dataset(12)
    inputs = prepare_srel_inputs(dataset, tiny_config())
    bucket = inputs.distance_bucket.numpy()
    assert (np.diag(bucket) == 4).all()  # self bucket
    c = dataset.priors.centroids
    d = np.sqrt(((c[:, None] - c[None]) ** 2).sum(-1))
    off = ~np.eye(12, dtype=bool)
    order = np.argsort(d[off])
    assert (np.diff(bucket[off][order]) >= 0).all()  # monotone in distance
    assert set(np.unique(bucket[off])) == {0, 1, 2, 3}


def test_dataset_without_flow_and_without_centroids():
    dataset = tiny_dataset(8, with_flow=False)
    dataset.priors.centroids = None
    model, inputs = model_and_inputs(tiny_config(), dataset)
    assert "hops" in inputs.notes[0]
    with torch.no_grad():
        assert model(inputs).shape == (8, 8)


def test_bad_input_raises_input_error():
    dataset = tiny_dataset(6)
    dataset.views = {}
    with pytest.raises(InputError, match="no view"):
        prepare_srel_inputs(dataset, tiny_config())
    with pytest.raises(InputError, match="divisible"):
        tiny_config(hidden=10, heads=4)


def test_losses_are_finite_on_both_paths():
    dataset = tiny_dataset(10)
    for config in (tiny_config(), tiny_config(dense_threshold=0, loss_rows=3,
                                              similarity_pairs=20)):
        model, inputs = model_and_inputs(config, dataset)
        parts = model.loss(inputs, model(inputs), torch.Generator().manual_seed(0))
        assert set(parts) == {"mobility_out", "mobility_in", "poi_similarity",
                              "landuse_similarity", "total"}
        assert all(torch.isfinite(v) for v in parts.values())


def test_feature_reconstruction_is_one_more_loss_per_view_and_off_by_default(tmp_path):
    dataset = tiny_dataset(10)
    model, inputs = model_and_inputs(tiny_config(), dataset)
    assert len(model.reconstruct) == 0
    for config in (tiny_config(reconstruction_weight=0.5),
                   tiny_config(reconstruction_weight=0.5, dense_threshold=0, loss_rows=3,
                               similarity_pairs=20)):
        model, inputs = model_and_inputs(config, dataset)
        embeddings = model(inputs)
        parts = model.loss(inputs, embeddings, torch.Generator().manual_seed(0))
        views = {s.name for s in model.view_specs}
        assert {f"{v}_reconstruction" for v in views} <= set(parts)
        # Each part is the weight times the MSE of the view's decoded standardised features.
        decoded = model.reconstruct["poi"](embeddings)
        expected = 0.5 * torch.nn.functional.mse_loss(decoded, inputs.features["poi"])
        torch.testing.assert_close(parts["poi_reconstruction"], expected)
        assert torch.isfinite(parts["total"])
    # A model trained with it saves and loads with its decoders.
    model, inputs = model_and_inputs(tiny_config(reconstruction_weight=0.5), dataset)
    save_model(model, model.config, tmp_path / "model")
    loaded = load_model(tmp_path / "model")
    assert loaded.config.reconstruction_weight == 0.5
    torch.testing.assert_close(loaded.reconstruct["poi"].weight, model.reconstruct["poi"].weight)


def test_save_load_round_trip(tmp_path):
    model, inputs = model_and_inputs(tiny_config())
    randomise_distance_bias(model)
    save_model(model, model.config, tmp_path / "model")
    assert {p.name for p in (tmp_path / "model").iterdir()} == {"model.safetensors", "config.json"}
    loaded = load_model(tmp_path / "model")
    assert loaded.config == model.config
    with torch.no_grad():
        torch.testing.assert_close(loaded(inputs), model(inputs), rtol=0, atol=0)


def test_load_model_missing_folder_is_input_error(tmp_path):
    with pytest.raises(InputError, match="no saved model"):
        load_model(tmp_path)


def test_dense_bias_from_one_hot_buckets_matches_the_table_lookup():
    """The dense path's bias is gathered forward and its gradient is a matmul with the one-hot
    buckets: output and every gradient equal those of the plain table lookup."""
    config = tiny_config()
    _, inputs = model_and_inputs(config, tiny_dataset(12))
    torch.manual_seed(0)
    attention = RegionAttention(16, 4, dropout=0.0, num_buckets=config.distance_buckets + 1)
    with torch.no_grad():
        attention.distance_bias.weight.normal_(std=2.0)
    x = torch.randn(12, 16)
    results = []
    for onehot in (inputs.distance_onehot, None):
        attention.zero_grad(set_to_none=True)
        out = attention(x, inputs.distance_bucket, distance_onehot=onehot)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results.append((out.detach(), {k: p.grad.clone() for k, p in attention.named_parameters()}))
    (out_a, grads_a), (out_b, grads_b) = results
    assert torch.allclose(out_a, out_b, atol=1e-6)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], atol=1e-5), name
    assert grads_a["distance_bias.weight"].abs().sum() > 0


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 1.0])
def test_attention_dropout_drops_a_share_p_and_gives_the_rescaling(p):
    """Every weight is dropped with probability p, wherever it sits in the tensor (the mask is
    four 16-bit draws per 64-bit one: each of the four gets its own share), the rest kept, and
    the factor the attended values are rescaled by is 1 / (1 - p); the same seed gives the
    same mask, and a size that is not a multiple of four works."""
    from engine.models.modeling_srel import _drop_attention

    torch.manual_seed(0)
    alpha = torch.full((3, 201, 101), 0.01)  # 60,903 weights
    out, factor = _drop_attention(alpha, p)
    assert out.shape == alpha.shape
    for lane in range(4):
        dropped = (out.flatten()[lane::4] == 0).float().mean().item()
        assert abs(dropped - p) < 0.012, lane
    assert torch.all((out == 0) | (out == 0.01))
    assert factor == pytest.approx(1.0 / (1.0 - p) if p < 1.0 else 1.0)
    torch.manual_seed(0)
    assert torch.equal(_drop_attention(alpha, p)[0], out)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_mlp_dropout_drops_a_share_p_rescales_the_rest_and_is_off_in_eval(p):
    """MaskDropout is nn.Dropout's function with another mask: a share p of the values
    zeroed, the rest multiplied by 1 / (1 - p), the gradient through the same mask, the same
    mask for the same seed, and the identity in eval mode."""
    from engine.models.modeling_srel import MaskDropout

    dropout = MaskDropout(p)
    x = torch.full((301, 67), 2.0, requires_grad=True)  # 20,167 values, not a multiple of 4
    torch.manual_seed(3)
    out = dropout(x)
    kept = out != 0
    assert abs(1 - kept.float().mean().item() - p) < 0.012
    assert torch.allclose(out[kept], torch.tensor(2.0 / (1 - p)))
    out.sum().backward()
    assert torch.equal(x.grad != 0, kept)
    torch.manual_seed(3)
    assert torch.equal(dropout(x), out)
    dropout.eval()
    assert dropout(x) is x


def test_attention_with_dropout_is_unbiased():
    """Averaged over many dropout masks, the attention output in training mode is the output
    without dropout (the kept weights' rescaling is applied, wherever it is applied)."""
    config = tiny_config()
    _, inputs = model_and_inputs(config, tiny_dataset(12))
    torch.manual_seed(0)
    attention = RegionAttention(16, 4, dropout=0.3, num_buckets=config.distance_buckets + 1)
    x = torch.randn(12, 16)
    with torch.no_grad():
        attention.eval()
        expected = attention(x, inputs.distance_bucket, distance_onehot=inputs.distance_onehot)
        attention.train()
        mean = sum(attention(x, inputs.distance_bucket, distance_onehot=inputs.distance_onehot)
                   for _ in range(3000)) / 3000
    assert torch.allclose(mean, expected, atol=0.03)
    assert not torch.allclose(
        attention(x, inputs.distance_bucket, distance_onehot=inputs.distance_onehot), expected,
        atol=1e-3)


@pytest.mark.parametrize("chunk_values", [6, 64, 1 << 18])  # many chunks, a few, one
def test_the_sparse_paths_edge_products_are_the_plain_formula_and_its_gradient(monkeypatch,
                                                                                chunk_values):
    """edge_dot / edge_sum (chunked on the CPU, their backward written out) give what
    q[target] * k[source] summed, and the weighted scatter, give through autograd."""
    from torch_geometric.utils import scatter

    from engine.models import modeling_srel

    monkeypatch.setattr(modeling_srel, "EDGE_CHUNK_VALUES", chunk_values)
    generator = torch.Generator().manual_seed(3)
    n, m, heads, width, edges = 9, 6, 2, 3, 50
    x = torch.randn(n, heads, width, dtype=torch.double, generator=generator, requires_grad=True)
    y = torch.randn(m, heads, width, dtype=torch.double, generator=generator, requires_grad=True)
    w = torch.randn(edges, heads, dtype=torch.double, generator=generator, requires_grad=True)
    rows = torch.randint(n, (edges,), generator=generator)
    cols = torch.randint(m, (edges,), generator=generator)

    assert torch.autograd.gradcheck(lambda a, b: modeling_srel.edge_dot(a, b, rows, cols), (x, y))
    assert torch.autograd.gradcheck(lambda a, b: modeling_srel.edge_sum(a, b, rows, cols, n), (w, y))
    torch.testing.assert_close(modeling_srel.edge_dot(x, y, rows, cols),
                               (x[rows] * y[cols]).sum(-1), rtol=0, atol=1e-12)
    torch.testing.assert_close(modeling_srel.edge_sum(w, y, rows, cols, n),
                               scatter(w.unsqueeze(-1) * y[cols], rows, dim=0, dim_size=n,
                                       reduce="sum"), rtol=0, atol=1e-12)
    # the gradients only where they are asked for
    x_only = modeling_srel.edge_dot(x, y.detach(), rows, cols).sum()
    assert torch.autograd.grad(x_only, x)[0].shape == x.shape


def test_view_fusion_on_the_cpu_is_the_multihead_attention_it_holds():
    """The CPU's written-out attention over each region's view tokens gives nn.MultiheadAttention's
    output and gradients, and in training draws the same dropout masks for the same seed."""
    from engine.models.modeling_srel import ViewFusion

    torch.manual_seed(0)
    fusion = ViewFusion(16, 4, dropout=0.3)
    tokens = torch.randn(11, 3, 16, requires_grad=True)

    def module_attention(y):
        return fusion.attention(y, y, y, need_weights=False)[0]

    for training in (False, True):
        fusion.train(training)
        y = fusion.norm(tokens)
        torch.manual_seed(5)
        expected = module_attention(y)
        torch.manual_seed(5)
        got = fusion._attend_views(y)
        assert torch.allclose(got, expected, atol=1e-6)
        grads = [torch.autograd.grad(out.square().sum(), (tokens, fusion.attention.in_proj_weight),
                                     retain_graph=True) for out in (expected, got)]
        for a, b in zip(*grads, strict=True):
            assert torch.allclose(a, b, atol=1e-5)
    # Training mode really drops weights: another seed, another output.
    torch.manual_seed(6)
    assert not torch.allclose(fusion._attend_views(fusion.norm(tokens)), expected, atol=1e-4)


def test_trip_distribution_loss_skips_regions_without_trips():
    """Regions with no trips out (rows) or in (columns) count neither in the sum nor in the
    average: the loss is the cross-entropy averaged over the regions that have trips."""
    from engine.models.modeling_srel import _distribution_loss

    torch.manual_seed(0)
    logits = torch.randn(5, 5, requires_grad=True)
    target = torch.rand(5, 5)
    target[1] = 0.0  # region 1 sends no trips
    target[:, 3] = 0.0  # region 3 receives none
    target = target / target.sum(1, keepdim=True).clamp_min(1e-12)
    rows = [0, 2, 3, 4]
    expected = -sum((target[i] * torch.log_softmax(logits[i], 0)).sum() for i in rows) / 4
    assert torch.allclose(_distribution_loss(logits, target, dim=1), expected)
    grad = torch.autograd.grad(_distribution_loss(logits, target, dim=1), logits)[0]
    assert torch.equal(grad[1], torch.zeros(5))  # no trips: no gradient for that row
    columns = [0, 1, 2, 4]
    expected = -sum((target[:, j] * torch.log_softmax(logits[:, j], 0)).sum()
                    for j in columns) / 4
    assert torch.allclose(_distribution_loss(logits, target, dim=0), expected)
    assert _distribution_loss(logits, torch.zeros(5, 5)).item() == 0.0


@pytest.mark.parametrize("dense_threshold", [1024, 0])
def test_trip_weighting_makes_the_mobility_loss_a_cross_entropy_per_trip(dense_threshold):
    """mobility_weighting="trips": every trip counts once (HAFusion's count-weighted loss,
    normalised), on the dense path and on the sparse one when it scores every region."""
    dataset = tiny_dataset(10)
    config = tiny_config(mobility_weighting="trips", dense_threshold=dense_threshold,
                         loss_rows=10, dropout=0.0)
    model, inputs = model_and_inputs(config, dataset)
    model.eval()
    embeddings = model(inputs)
    parts = model.loss(inputs, embeddings, torch.Generator().manual_seed(0))
    trips = torch.as_tensor(dataset.views["mobility"].matrix.toarray(), dtype=torch.float32)
    logits = model.source["mobility"](embeddings) @ model.destination["mobility"](embeddings).T
    per_trip_out = -(trips * torch.log_softmax(logits, dim=1)).sum() / trips.sum()
    per_trip_in = -(trips * torch.log_softmax(logits, dim=0)).sum() / trips.sum()
    assert torch.allclose(parts["mobility_out"], per_trip_out, rtol=1e-5)
    assert torch.allclose(parts["mobility_in"], per_trip_in, rtol=1e-5)
    default_inputs = prepare_srel_inputs(dataset, tiny_config(dense_threshold=dense_threshold,
                                                              loss_rows=10))
    assert default_inputs.flows["mobility"].out_weight is None  # the default: per region
    by_region = model.loss(default_inputs, model(default_inputs), torch.Generator().manual_seed(0))
    sent = trips.sum(1) > 0
    per_region = -((trips[sent] / trips[sent].sum(1, keepdim=True))
                   * torch.log_softmax(logits[sent], dim=1)).sum() / sent.sum()
    assert torch.allclose(by_region["mobility_out"], per_region, rtol=1e-5)
    assert not torch.allclose(per_region, per_trip_out, rtol=1e-3)
    with pytest.raises(InputError, match="mobility weighting"):
        tiny_config(mobility_weighting="volume")
