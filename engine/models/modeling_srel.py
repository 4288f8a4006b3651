"""SREL: spatial-aware region embedding learning (ToPT stage 1), self-supervised.

Read top to bottom:
  1. `SRELConfig`: every hyperparameter, with its default.
  2. `prepare_srel_inputs(dataset, config)`: everything that does not depend on parameters,
     computed once (view features, flow SVD features, distance buckets, centrality buckets,
     the neighbour graph for the sparse path, the reconstruction targets).
  3. The layers: `RegionAttention` (Graphormer attention with a distance bias, dense or sparse),
     `TransformerBlock`, `ViewEncoder`, `FlowViewEncoder`, `ViewFusion`, `CentralityEncoding`.
  4. `SREL`: view encoders -> intra-view attention -> inter-view attention and learned view
     weighting -> + centrality -> region transformer -> (N, embedding_size); and `SREL.loss`,
     the self-supervised objectives (mobility and similarity reconstruction).

Width never depends on N: count views enter through their C columns; a flow view (N x N) enters
through (a) a fixed-width spectral feature, the truncated SVD of log1p(trips) (source factors
U*sqrt(S) for the outgoing side, destination factors V*sqrt(S) for the incoming side, padded to
`flow_rank`), computed once, and (b) sparse message passing: the trip-weighted mean of the other
views' tokens over each region's destinations and over its origins. Up to `dense_threshold`
regions the attention is exact over all pairs; above it each region attends to its neighbours
(self, k nearest, adjacent, strongest trip partners) and memory grows linearly with N.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from scipy.sparse.csgraph import shortest_path
from torch import Tensor, nn
from torch_geometric.utils import scatter
from torch_geometric.utils import softmax as segment_softmax

from engine.data.dataset import RegionDataset
from engine.errors import InputError


@dataclass
class SRELConfig:
    embedding_size: int = 144  # d: width of the output region embedding (144 in the literature)
    hidden: int = 64  # width of the view tokens and of the region transformer
    heads: int = 4  # attention heads; hidden must be divisible by heads
    layers: int = 2  # Graphormer-style region transformer layers after view fusion
    intra_view_layers: int = 1  # self-attention layers over the regions inside each view (0: none)
    dropout: float = 0.1  # dropout on attention weights and MLP outputs
    distance_buckets: int = 16  # distance buckets (quantiles or hops); the region itself gets one more
    distance_kind: str = "centroid"  # "centroid": centroid-distance quantiles; "hops": adjacency hops
    use_distance_bias: bool = True  # add a learnable per-head scalar per distance bucket to the logits
    use_centrality: bool = True  # add degree and mobility in/out strength embeddings to the tokens
    centrality_buckets: int = 16  # buckets for degree and for mobility in/out strength
    dense_threshold: int = 1024  # N at or below which attention is exact and dense
    neighbours: int = 16  # sparse path: k nearest regions each region attends to
    flow_neighbours: int = 8  # sparse path: strongest trip origins and destinations attended to
    flow_rank: int = 32  # width of the truncated-SVD features of each flow view
    loss_rows: int = 512  # sparse path: regions per epoch whose trip distributions are scored
    similarity_pairs: int = 65536  # sparse path: region pairs per epoch for similarity losses
    reconstruction_weight: float = 0.0  # weight of the view-feature reconstruction loss (0: none)
    # "regions": each region's trip distribution weighs the same in the mobility loss; "trips":
    # weighted by the region's trip volume, i.e. cross-entropy per trip (what HAFusion's summed,
    # count-weighted loss optimises)
    mobility_weighting: str = "regions"
    lr: float = 5e-4  # Adam learning rate (HAFusion)
    weight_decay: float = 5e-4  # Adam weight decay (HAFusion)
    epochs: int | None = None  # full-batch epochs; None: the fixed schedule of `schedule_epochs`

    def __post_init__(self) -> None:
        if self.hidden % self.heads:
            raise InputError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})",
                             field="hidden", hint="Choose hidden as a multiple of heads.")
        if self.distance_kind not in ("centroid", "hops"):
            raise InputError(f"unknown distance kind {self.distance_kind!r}",
                             field="distance_kind", hint="Use 'centroid' or 'hops'.")
        if self.mobility_weighting not in ("regions", "trips"):
            raise InputError(f"unknown mobility weighting {self.mobility_weighting!r}",
                             field="mobility_weighting", hint="Use 'regions' or 'trips'.")

    def to_dict(self) -> dict:
        return asdict(self)


def schedule_epochs(n_regions: int, config: SRELConfig) -> int:
    """Epochs of the fixed schedule (no label chooses it): `config.epochs` if set, else 2000
    (HAFusion) on the dense path and 2000 * dense_threshold / N (at least 100) above it, where
    each full-batch step sees proportionally more regions and costs proportionally more."""
    if config.epochs is not None:
        return int(config.epochs)
    if n_regions <= config.dense_threshold:
        return 2000
    return max(100, int(2000 * config.dense_threshold / n_regions))


@dataclass
class ViewSpec:
    """What the model needs to know about one view to build its encoder."""

    name: str  # the view's name in the dataset
    kind: str  # counts | shares | continuous | flow
    width: int  # width of the preprocessed features fed to the encoder


# ---------------------------------------------------------------------------------------------
# 2. Inputs: everything that does not depend on parameters, computed once
# ---------------------------------------------------------------------------------------------


@dataclass
class FlowInputs:
    """One flow view as row-normalised trip distributions (outgoing and incoming)."""

    out_rows: Tensor  # (nnz,) origin i of each trip entry, sorted
    out_cols: Tensor  # (nnz,) destination j
    out_prob: Tensor  # (nnz,) P_out[i, j] = trips(i->j) / trips out of i
    out_ptr: Tensor  # (N+1,) CSR row pointer into out_* arrays
    in_rows: Tensor  # (nnz,) destination i, sorted
    in_cols: Tensor  # (nnz,) origin j
    in_prob: Tensor  # (nnz,) P_in[i, j] = trips(j->i) / trips into i
    in_ptr: Tensor  # (N+1,)
    out_dense: Tensor | None = None  # (N, N) P_out, dense path only
    in_dense: Tensor | None = None  # (N, N) P_in, dense path only
    # (N,) each region's weight in the mobility loss (mean 1 over regions with trips; None: 1)
    out_weight: Tensor | None = None
    in_weight: Tensor | None = None


@dataclass
class SRELInputs:
    n_regions: int
    dense: bool  # True: exact attention over all pairs
    view_specs: list[ViewSpec]
    features: dict[str, Tensor]  # view name -> (N, width) preprocessed features
    similarity_vectors: dict[str, Tensor]  # non-flow view -> (N, C) row-L2-normalised vectors
    similarity_targets: dict[str, Tensor]  # dense path: view -> (N, N) cosine similarity
    flows: dict[str, FlowInputs]
    distance_bucket: Tensor | None  # dense path: (N, N) bucket of each pair, self = B
    edge_index: Tensor | None  # sparse path: (2, E) [source j, target i]: i attends to j
    edge_bucket: Tensor | None  # sparse path: (E,)
    degree_bucket: Tensor  # (N,)
    out_bucket: Tensor  # (N,) bucketed outgoing trips
    in_bucket: Tensor  # (N,) bucketed incoming trips
    notes: list[str] = field(default_factory=list)  # fallbacks taken while preparing
    # dense path: (B + 1, N * N) float one-hot of `distance_bucket`: the gradient of each
    # layer's distance-bias table is one matmul with it (`_BucketBias`)
    distance_onehot: Tensor | None = None

    def to(self, device: torch.device | str) -> SRELInputs:
        def move(value):
            if isinstance(value, Tensor):
                return value.to(device)
            if isinstance(value, dict):
                return {k: move(v) for k, v in value.items()}
            if isinstance(value, FlowInputs):
                return FlowInputs(**{k: move(getattr(value, k)) for k in value.__dataclass_fields__})
            return value
        return SRELInputs(**{k: move(getattr(self, k)) for k in self.__dataclass_fields__})


def _standardise(x: np.ndarray) -> np.ndarray:
    """Column z-score over all regions (no label involved); constant columns become 0."""
    mean = np.nanmean(x, axis=0) if x.size else 0.0
    std = np.nanstd(x, axis=0) if x.size else 1.0
    std = np.where(std > 1e-12, std, 1.0)
    return np.nan_to_num((x - mean) / std, nan=0.0)


def _view_features(kind: str, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(encoder features, similarity vectors) of a dense view."""
    x = np.asarray(matrix, dtype=np.float64)
    if kind == "counts":
        x = np.clip(np.nan_to_num(x), 0.0, None)
        total = x.sum(axis=1, keepdims=True)
        shares = np.divide(x, total, out=np.zeros_like(x), where=total > 0)
        return _standardise(np.concatenate([np.log1p(x), shares], axis=1)), x
    if kind == "shares":
        x = np.clip(np.nan_to_num(x), 0.0, None)
        return _standardise(x), x
    z = _standardise(x)  # continuous: similarity of the standardised values
    return z, z


def _flow_features(flow: sp.csr_matrix, rank: int, dense: bool) -> np.ndarray:
    """[U sqrt(S), V sqrt(S), log1p(out), log1p(in)] of log1p(trips), width 2 * rank + 2."""
    n = flow.shape[0]
    logflow = flow.copy()
    logflow.data = np.log1p(logflow.data)
    r = max(1, min(rank, n - 1))
    if dense:
        u, s, vt = np.linalg.svd(logflow.toarray())
        u, s, vt = u[:, :r], s[:r], vt[:r]
    else:
        from sklearn.utils.extmath import randomized_svd
        u, s, vt = randomized_svd(logflow, r, random_state=0)
    # Fix the sign of each component so the features are a function of the data only.
    flip = np.sign(u[np.abs(u).argmax(axis=0), np.arange(u.shape[1])])
    flip[flip == 0] = 1.0
    root = np.sqrt(s) * flip
    source, destination = u * root, vt.T * root  # (N, r) each
    pad = np.zeros((n, rank - r))
    out_strength = np.log1p(np.asarray(flow.sum(axis=1)).ravel())[:, None]
    in_strength = np.log1p(np.asarray(flow.sum(axis=0)).ravel())[:, None]
    features = np.concatenate([source, pad, destination, pad, out_strength, in_strength], axis=1)
    return _standardise(features)


def _row_distributions(matrix: sp.csr_matrix) -> tuple[np.ndarray, ...]:
    """COO arrays (rows, cols, prob, ptr) of the row-normalised matrix, rows sorted."""
    m = sp.csr_matrix(matrix, dtype=np.float64)
    m.sum_duplicates()
    m.eliminate_zeros()
    total = np.asarray(m.sum(axis=1)).ravel()
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    prob = m.data / total[rows]
    return rows, m.indices.astype(np.int64), prob, m.indptr.astype(np.int64)


def _strength_bucket(strength: np.ndarray, buckets: int) -> np.ndarray:
    """0 for no trips; 1..buckets-1 by quantile among regions with trips."""
    out = np.zeros(len(strength), dtype=np.int64)
    positive = strength > 0
    if positive.any() and buckets > 1:
        edges = np.quantile(np.log1p(strength[positive]), np.linspace(0, 1, buckets)[1:-1])
        out[positive] = 1 + np.searchsorted(edges, np.log1p(strength[positive]), side="right")
    return np.minimum(out, buckets - 1)


def _distance_edges(distance: np.ndarray, buckets: int) -> np.ndarray:
    """Quantile edges (buckets - 1,) of the distances between the pairs that attention sees."""
    return np.quantile(distance, np.linspace(0, 1, buckets + 1)[1:-1]) if distance.size else np.zeros(buckets - 1)


def _hop_buckets(adjacency: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray, buckets: int) -> np.ndarray:
    """Bucket min(hops, B) - 1 of each pair (rows[e], cols[e]); unreachable pairs get B - 1.

    Breadth-first through powers of (A + I), stopping once every pair is reached, so only the
    pairs' neighbourhoods (not N x N) are held.
    """
    n = adjacency.shape[0]
    step = (sp.csr_matrix(adjacency, dtype=bool) + sp.identity(n, dtype=bool, format="csr")).tocsr()
    result = np.full(len(rows), buckets - 1, dtype=np.int64)
    unknown = np.ones(len(rows), dtype=bool)
    reach = sp.identity(n, dtype=bool, format="csr")
    for hops in range(1, buckets):
        reach = (reach @ step).tocsr()
        hit = unknown & np.asarray(reach[rows, cols]).ravel().astype(bool)
        result[hit] = hops - 1
        unknown &= ~hit
        if not unknown.any():
            break
    return result


def _top_partners(matrix: sp.csr_matrix, m: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) of the m largest entries of each row."""
    rows, cols = [], []
    for i in range(matrix.shape[0]):
        start, end = matrix.indptr[i], matrix.indptr[i + 1]
        if end == start:
            continue
        data, idx = matrix.data[start:end], matrix.indices[start:end]
        keep = idx[np.argsort(-data, kind="stable")[:m]]
        rows.append(np.full(len(keep), i))
        cols.append(keep)
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(rows), np.concatenate(cols)


def _neighbour_graph(dataset: RegionDataset, config: SRELConfig, flows: list[sp.csr_matrix]) -> tuple[np.ndarray, np.ndarray]:
    """(target i, source j) pairs of the sparse path, sorted by i: i attends to j."""
    n = dataset.n_regions
    priors = dataset.priors
    k = min(config.neighbours, n - 1)
    knn = np.asarray(priors.neighbours, dtype=np.int64)
    if knn.ndim == 2 and knn.shape[1] < k and priors.centroids is not None:
        from scipy.spatial import cKDTree
        _, knn = cKDTree(priors.centroids).query(priors.centroids, k=k + 1)
        knn = knn[:, 1:]  # drop self
    knn = knn[:, :k] if knn.ndim == 2 else np.zeros((n, 0), dtype=np.int64)
    targets = [np.arange(n), np.repeat(np.arange(n), knn.shape[1])]
    sources = [np.arange(n), knn.ravel()]
    adjacency = sp.coo_matrix(priors.adjacency)
    targets.append(adjacency.row)
    sources.append(adjacency.col)
    for flow in flows:
        r, c = _top_partners(flow, config.flow_neighbours)  # destinations of i
        targets.append(r)
        sources.append(c)
        r, c = _top_partners(flow.T.tocsr(), config.flow_neighbours)  # origins of i
        targets.append(r)
        sources.append(c)
    t = np.concatenate(targets).astype(np.int64)
    s = np.concatenate(sources).astype(np.int64)
    valid = (s >= 0) & (s < n)
    graph = sp.csr_matrix((np.ones(valid.sum()), (t[valid], s[valid])), shape=(n, n))
    graph.sum_duplicates()
    graph.sort_indices()
    rows = np.repeat(np.arange(n), np.diff(graph.indptr))
    return rows, graph.indices.astype(np.int64)


def prepare_srel_inputs(dataset: RegionDataset, config: SRELConfig) -> SRELInputs:
    """Everything SREL reads that does not depend on its parameters (no label is read).

    Deterministic: the same regions and config always give the same inputs.
    """
    n = dataset.n_regions
    if n < 3:
        raise InputError(f"SREL needs at least 3 regions, got {n}", layer="regions",
                         hint="Use a region layer with more polygons.")
    if not dataset.views:
        raise InputError("no view to learn from", hint="Add points (POIs), land use, trips, "
                         "a raster or numeric fields.")
    dense = n <= config.dense_threshold
    notes: list[str] = []
    specs, features, vectors, targets, flows, flow_mats = [], {}, {}, {}, {}, []
    for name, view in dataset.views.items():
        if view.matrix.shape[0] != n:
            raise InputError(f"view {name!r} has {view.matrix.shape[0]} rows for {n} regions",
                             layer=name, hint="Rebuild the dataset.")
        if view.kind == "flow":
            flow = sp.csr_matrix(view.matrix, dtype=np.float64)
            if flow.shape != (n, n):
                raise InputError(f"flow view {name!r} must be {n} x {n}", layer=name)
            flow.data = np.clip(np.nan_to_num(flow.data), 0.0, None)
            flow.eliminate_zeros()
            flow_mats.append(flow)
            feats = _flow_features(flow, config.flow_rank, dense)
            orow, ocol, oprob, optr = _row_distributions(flow)
            irow, icol, iprob, iptr = _row_distributions(flow.T.tocsr())
            t = lambda a, dt=torch.long: torch.as_tensor(a, dtype=dt)  # noqa: E731
            f = FlowInputs(t(orow), t(ocol), t(oprob, torch.float32), t(optr),
                           t(irow), t(icol), t(iprob, torch.float32), t(iptr))
            if config.mobility_weighting == "trips":
                f.out_weight = t(_volume_weights(flow.sum(axis=1)), torch.float32)
                f.in_weight = t(_volume_weights(flow.sum(axis=0)), torch.float32)
            if dense:
                f.out_dense = torch.zeros(n, n).index_put_((f.out_rows, f.out_cols), f.out_prob)
                f.in_dense = torch.zeros(n, n).index_put_((f.in_rows, f.in_cols), f.in_prob)
            flows[name] = f
        else:
            feats, vec = _view_features(view.kind, view.matrix)
            norm = np.linalg.norm(vec, axis=1, keepdims=True)
            unit = np.divide(vec, norm, out=np.zeros_like(vec), where=norm > 0)
            vectors[name] = torch.as_tensor(unit, dtype=torch.float32)
            if dense:
                targets[name] = vectors[name] @ vectors[name].T  # (N, N) cosine similarity
        features[name] = torch.as_tensor(feats, dtype=torch.float32)
        specs.append(ViewSpec(name, view.kind, int(feats.shape[1])))

    priors = dataset.priors
    kind = config.distance_kind
    if kind == "centroid" and priors.centroids is None:
        kind = "hops"
        notes.append("no centroids: distance buckets use adjacency hops")
    b = config.distance_buckets
    if dense:
        if kind == "centroid":
            c = np.asarray(priors.centroids, dtype=np.float64)
            diff = c[:, None, :] - c[None, :, :]  # (N, N, 2)
            distance = np.sqrt((diff * diff).sum(-1))  # (N, N)
            off = ~np.eye(n, dtype=bool)
            bucket = np.searchsorted(_distance_edges(distance[off], b), distance, side="right")
        else:
            hops = shortest_path(sp.csr_matrix(priors.adjacency), unweighted=True, directed=False)
            bucket = np.where(np.isfinite(hops), np.minimum(np.nan_to_num(hops, posinf=b), b) - 1, b - 1)
        bucket = bucket.astype(np.int64)
        np.fill_diagonal(bucket, b)  # the region itself
        distance_bucket, edge_index, edge_bucket = torch.as_tensor(bucket), None, None
        distance_onehot = F.one_hot(distance_bucket.reshape(-1), b + 1).T.float().contiguous()
    else:
        rows, cols = _neighbour_graph(dataset, config, flow_mats)
        off = rows != cols
        bucket = np.full(len(rows), b, dtype=np.int64)
        if kind == "centroid":
            d = priors.pair_distance(rows[off], cols[off])
            bucket[off] = np.searchsorted(_distance_edges(d, b), d, side="right")
        else:
            bucket[off] = _hop_buckets(priors.adjacency, rows[off], cols[off], b)
        distance_bucket = distance_onehot = None
        edge_index = torch.as_tensor(np.stack([cols, rows]), dtype=torch.long)  # (2, E)
        edge_bucket = torch.as_tensor(bucket)

    cb = config.centrality_buckets
    degree = np.minimum(np.asarray(priors.degree, dtype=np.int64), cb - 1)
    out_strength = np.asarray(priors.mobility_out, dtype=np.float64)
    in_strength = np.asarray(priors.mobility_in, dtype=np.float64)
    if flow_mats and not out_strength.any():  # priors without mobility: use the flow views
        out_strength = sum(np.asarray(f.sum(axis=1)).ravel() for f in flow_mats)
        in_strength = sum(np.asarray(f.sum(axis=0)).ravel() for f in flow_mats)
    return SRELInputs(
        n_regions=n, dense=dense, view_specs=specs, features=features,
        similarity_vectors=vectors, similarity_targets=targets, flows=flows,
        distance_bucket=distance_bucket, edge_index=edge_index, edge_bucket=edge_bucket,
        degree_bucket=torch.as_tensor(degree),
        out_bucket=torch.as_tensor(_strength_bucket(out_strength, cb)),
        in_bucket=torch.as_tensor(_strength_bucket(in_strength, cb)),
        notes=notes, distance_onehot=distance_onehot,
    )


# ---------------------------------------------------------------------------------------------
# 3. Layers
# ---------------------------------------------------------------------------------------------


def _keep_mask(x: Tensor, p: float) -> Tensor:
    """A dropout mask shaped and typed like `x`: each value 0 with probability p (to 1/65536),
    else 1.

    Four 16-bit uniforms per 64-bit draw of torch's generator: on the CPU a draw costs about
    the same whatever its width, so this is 2.7x faster than one int16 draw per value and 5x
    faster than bernoulli_ (which F.dropout uses). The mask is in x's dtype: multiplying by a
    boolean mask converts it to floats first, in the forward and again in the backward."""
    n = x.numel()
    draws = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-2**63, None)
    lanes = draws.view(torch.int16)[:n].view(x.shape)  # uniform on [-32768, 32767]
    return torch.ge(lanes, -32768 + round(p * 65536), out=torch.empty_like(x))


def _drop_attention(alpha: Tensor, p: float) -> tuple[Tensor, float]:
    """Dropout of attention weights, the rescaling left to the caller: returns `alpha` with
    each weight zeroed with probability p, and the factor 1 / (1 - p) that the caller applies
    to the attended values (N x H x head_dim), which are much smaller than the H x N x N
    weights: F.dropout's result, one full pass fewer each way. The H x N x N masks were the
    largest single cost of an SREL step on Manhattan before they were drawn 16 bits at a time
    (:func:`_keep_mask`)."""
    if p <= 0.0:
        return alpha, 1.0
    if p >= 1.0:
        return torch.zeros_like(alpha), 1.0
    return alpha * _keep_mask(alpha, p), 1.0 / (1.0 - p)


class MaskDropout(nn.Module):
    """nn.Dropout with the mask of :func:`_keep_mask` on the CPU (F.dropout on a GPU, where it
    is one fused kernel). On the CPU F.dropout's bernoulli_ mask of a (180, 64) MLP output took
    ~0.15-0.2 ms, and an SREL step on Manhattan draws five of them. Same distribution, another
    random stream: a seed gives other masks than nn.Dropout's."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p <= 0.0:
            return x
        if x.device.type != "cpu" or self.p >= 1.0:
            return F.dropout(x, self.p, training=True)
        return x * _keep_mask(x, self.p).mul_(1.0 / (1.0 - self.p))


EDGE_CHUNK_VALUES = 1 << 18  # values per (chunk, heads, width) temporary on the CPU (1 MB)


def _edge_chunks(edges: int, width: int) -> list[slice]:
    """Slices of the edges for one ~1 MB temporary each (reused from the heap, kept in cache)."""
    step = max(1, EDGE_CHUNK_VALUES // max(width, 1))
    return [slice(s, min(s + step, edges)) for s in range(0, edges, step)]


def edge_dot(x: Tensor, y: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    r"""Per-edge, per-head dot products :math:`o_{eh} = x_{r_e h} \cdot y_{c_e h}`.

    On the CPU the gathered (E, H, D) operands are never kept: the products are taken in
    chunks, and the backward recomputes the chunks it needs. Keeping them (q[target] * k[source]
    through autograd) made each sparse attention call allocate and fault in several fresh
    E x H x D tensors, over half of a sparse SREL epoch at N = 5,000. On a GPU the products are
    taken whole, through autograd, as they were measured there.

    Shapes: x (N, H, D), y (M, H, D), rows and cols (E,) -> (E, H).
    """
    if x.device.type != "cpu":
        # index_select, not x[rows]: its backward is one index_add_, where advanced indexing's
        # backward is an accumulating index_put_.
        return (x.index_select(0, rows) * y.index_select(0, cols)).sum(-1)
    return _EdgeDot.apply(x, y, rows, cols)


def edge_sum(weight: Tensor, y: Tensor, rows: Tensor, cols: Tensor, n: int) -> Tensor:
    r"""Weighted sums over edges into their rows: :math:`o_{ih} = \sum_{e: r_e = i} w_{eh} y_{c_e h}`.

    Chunked on the CPU as :func:`edge_dot`; the backward is an `edge_dot` (for the weights)
    and an `edge_sum` the other way (for y). Whole, through autograd, on a GPU.

    Shapes: weight (E, H), y (M, H, D), rows and cols (E,) -> (n, H, D).
    """
    if y.device.type != "cpu":
        return scatter(weight.unsqueeze(-1) * y.index_select(0, cols), rows, dim=0, dim_size=n,
                       reduce="sum")
    return _EdgeSum.apply(weight, y, rows, cols, n)


def _dot_chunks(x: Tensor, y: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    out = x.new_empty(rows.shape[0], x.shape[1])  # (E, H)
    for part in _edge_chunks(rows.shape[0], x.shape[1] * x.shape[2]):
        torch.sum(x.index_select(0, rows[part]) * y.index_select(0, cols[part]), dim=-1,
                  out=out[part])
    return out


def _sum_chunks(weight: Tensor, y: Tensor, rows: Tensor, cols: Tensor, n: int) -> Tensor:
    out = y.new_zeros(n, y.shape[1], y.shape[2])  # (n, H, D)
    for part in _edge_chunks(rows.shape[0], y.shape[1] * y.shape[2]):
        out.index_add_(0, rows[part], weight[part].unsqueeze(-1) * y.index_select(0, cols[part]))
    return out


class _EdgeDot(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
        x, y = x.contiguous(), y.contiguous()
        ctx.save_for_backward(x, y, rows, cols)
        return _dot_chunks(x, y, rows, cols)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, y, rows, cols = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = _sum_chunks(grad, y, rows, cols, x.shape[0]) if ctx.needs_input_grad[0] else None
        grad_y = _sum_chunks(grad, x, cols, rows, y.shape[0]) if ctx.needs_input_grad[1] else None
        return grad_x, grad_y, None, None


class _EdgeSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight: Tensor, y: Tensor, rows: Tensor, cols: Tensor, n: int) -> Tensor:
        weight, y = weight.contiguous(), y.contiguous()
        ctx.save_for_backward(weight, y, rows, cols)
        return _sum_chunks(weight, y, rows, cols, n)

    @staticmethod
    def backward(ctx, grad: Tensor):
        weight, y, rows, cols = ctx.saved_tensors
        grad = grad.contiguous()
        grad_w = _dot_chunks(grad, y, rows, cols) if ctx.needs_input_grad[0] else None
        grad_y = (_sum_chunks(weight, grad, cols, rows, y.shape[0])
                  if ctx.needs_input_grad[1] else None)
        return grad_w, grad_y, None, None, None


class _BucketBias(torch.autograd.Function):
    """(H, N, N) bias of the N x N pairs from a (B, H) table, the pairs' (N * N,) buckets and
    their (B, N * N) one-hot: the forward a gather, the backward a matmul with the one-hot. A
    gather's own backward is a scatter over the pairs: 14% of an SREL step on Manhattan on the
    CPU (2 threads), where the matmul takes a third of its time. (The forward as a matmul too,
    with its inner width of B, is slower than the gather.)"""

    @staticmethod
    def forward(ctx, table: Tensor, bucket: Tensor, onehot: Tensor, n: int) -> Tensor:
        ctx.save_for_backward(onehot)
        # Shaped (H, N, N) here, not viewed after: the caller adds the logits in place, and
        # an in-place op on a view would make autograd copy the gradient back.
        bias = table.new_empty(table.shape[1], n, n)  # (H, N, N)
        torch.index_select(table.T.contiguous(), 1, bucket, out=bias.view(table.shape[1], -1))
        return bias

    @staticmethod
    def backward(ctx, grad: Tensor):
        (onehot,) = ctx.saved_tensors
        return onehot @ grad.reshape(grad.shape[0], -1).T, None, None, None  # (B, H)


class RegionAttention(nn.Module):
    r"""Multi-head self-attention over regions with a Graphormer distance bias.

    .. math::
        \alpha^h_{ij} = \mathrm{softmax}_{j \in \mathcal{N}(i)}\left(
            \frac{(W_Q x_i)^h \cdot (W_K x_j)^h}{\sqrt{d_h}} + b^h_{\phi(i, j)}\right),
        \qquad x'_i = W_O \big\Vert_h \sum_{j} \alpha^h_{ij} (W_V x_j)^h

    where :math:`\phi(i, j)` is the distance bucket of the pair and :math:`b^h` one learnable
    scalar per head and bucket. :math:`\mathcal{N}(i)` is every region (dense path) or the
    region's neighbours given by `edge_index` (sparse path); both give the same result when
    the neighbour set is complete.

    Args:
        hidden (int): token width.
        heads (int): number of heads.
        dropout (float, optional): dropout on the attention weights. (default: :obj:`0.1`)
        num_buckets (int, optional): distance buckets including the self bucket. (default: :obj:`17`)
        use_distance_bias (bool, optional): add :math:`b^h_{\phi(i,j)}`. (default: :obj:`True`)

    Shapes:
        - **input:** tokens :math:`(N, hidden)`; `distance_bucket` :math:`(N, N)` (dense) or
          `edge_index` :math:`(2, E)` and `edge_bucket` :math:`(E,)` (sparse)
        - **output:** :math:`(N, hidden)`
    """

    def __init__(self, hidden: int, heads: int, dropout: float = 0.1, num_buckets: int = 17,
                 use_distance_bias: bool = True) -> None:
        super().__init__()
        self.heads, self.head_dim, self.dropout = heads, hidden // heads, dropout
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.use_distance_bias = use_distance_bias
        self.distance_bias = nn.Embedding(num_buckets, heads)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.qkv.reset_parameters()
        self.out.reset_parameters()
        nn.init.zeros_(self.distance_bias.weight)

    def _bias(self, bucket: Tensor) -> Tensor:
        """(P, H) bias of P pairs from their (P,) buckets. The table lookup is an index_select:
        its backward is one index_add_ where nn.Embedding's, under deterministic algorithms,
        sorts the indices (4x slower on the CPU)."""
        return self.distance_bias.weight.index_select(0, bucket)

    def forward(self, x: Tensor, distance_bucket: Tensor | None = None,
                edge_index: Tensor | None = None, edge_bucket: Tensor | None = None,
                distance_onehot: Tensor | None = None) -> Tensor:
        n = x.shape[0]
        q, k, v = self.qkv(x).view(n, 3, self.heads, self.head_dim).unbind(1)  # (N, H, hd) each
        p = self.dropout if self.training else 0.0
        if edge_index is None:  # dense: exact attention over all pairs
            q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)  # (H, N, hd)
            scale = 1.0 / math.sqrt(self.head_dim)
            if not self.use_distance_bias:
                logits = torch.bmm(q, k.transpose(1, 2)) * scale  # (H, N, N)
            else:
                if distance_onehot is not None:
                    bias = _BucketBias.apply(self.distance_bias.weight, distance_bucket.reshape(-1),
                                             distance_onehot, n)  # (H, N, N)
                else:
                    bias = self._bias(distance_bucket.reshape(-1)).T.reshape(-1, n, n)
                # In place on the freshly gathered bias: baddbmm(bias, ...) would first copy
                # it into its output, one more pass over the H x N x N logits.
                logits = bias.baddbmm_(q, k.transpose(1, 2), alpha=scale)  # (H, N, N)
            # Written out rather than F.scaled_dot_product_attention: with a bias that needs
            # its gradient and dropout, the CPU has no fused kernel and SDPA's fallback adds a
            # guard against all-masked rows (which cannot occur here) at each call.
            alpha, factor = _drop_attention(torch.softmax(logits, dim=-1), p)
            out = torch.bmm(alpha, v)  # (H, N, hd)
            if factor != 1.0:
                out = out * factor
            out = out.transpose(0, 1).reshape(n, -1)  # (N, hidden)
        else:  # sparse: attention over each region's neighbours
            source, target = edge_index  # i = target attends to j = source
            logits = edge_dot(q, k, target, source) / math.sqrt(self.head_dim)  # (E, H)
            if self.use_distance_bias:
                logits = logits + self._bias(edge_bucket)  # (E, H)
            alpha = segment_softmax(logits, target, num_nodes=n)  # (E, H)
            alpha = F.dropout(alpha, p=p, training=self.training)
            out = edge_sum(alpha, v, target, source, n).reshape(n, -1)  # (N, hidden)
        return self.out(out)


class TransformerBlock(nn.Module):
    r"""Pre-norm transformer block over regions:
    :math:`x \leftarrow x + \mathrm{Attn}(\mathrm{LN}(x))`, :math:`x \leftarrow x + \mathrm{MLP}(\mathrm{LN}(x))`.

    Args:
        hidden (int), heads (int), dropout (float), num_buckets (int), use_distance_bias (bool):
            as in :class:`RegionAttention`.

    Shapes:
        - **input:** :math:`(N, hidden)` and the attention structure
        - **output:** :math:`(N, hidden)`
    """

    def __init__(self, hidden: int, heads: int, dropout: float, num_buckets: int,
                 use_distance_bias: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden)
        self.attention = RegionAttention(hidden, heads, dropout, num_buckets, use_distance_bias)
        self.norm2 = nn.LayerNorm(hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.GELU(),
                                 nn.Linear(2 * hidden, hidden), MaskDropout(dropout))

    def reset_parameters(self) -> None:
        self.norm1.reset_parameters()
        self.norm2.reset_parameters()
        self.attention.reset_parameters()
        self.mlp[0].reset_parameters()
        self.mlp[2].reset_parameters()

    def forward(self, x: Tensor, inputs: SRELInputs) -> Tensor:
        x = x + self.attention(self.norm1(x), inputs.distance_bucket, inputs.edge_index,
                               inputs.edge_bucket, inputs.distance_onehot)
        return x + self.mlp(self.norm2(x))


class ViewEncoder(nn.Module):
    r"""Tokens of a count, share or continuous view: :math:`h_i = W_2\,\mathrm{GELU}(W_1 x_i)`.

    Shapes:
        - **input:** :math:`(N, F)` preprocessed features (log1p counts and shares, z-scored)
        - **output:** :math:`(N, hidden)`
    """

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, hidden))

    def reset_parameters(self) -> None:
        self.mlp[0].reset_parameters()
        self.mlp[2].reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x)


def _propagate(rows: Tensor, cols: Tensor, prob: Tensor, x: Tensor, dense: Tensor | None) -> Tensor:
    """sum_j P[i, j] x_j: dense matmul on the dense path, scatter over the nonzeros otherwise."""
    if dense is not None:
        return dense @ x
    return torch.zeros_like(x).index_add_(0, rows, prob.unsqueeze(-1) * x.index_select(0, cols))


class FlowViewEncoder(nn.Module):
    r"""Tokens of a flow view, of a width that does not depend on N.

    .. math::
        h_i = \mathrm{MLP}(s_i) + W_{out} \sum_j P^{out}_{ij}\, b_j + W_{in} \sum_j P^{in}_{ij}\, b_j

    where :math:`s_i` are the fixed SVD features of log1p(trips) (source and destination
    factors, in/out strength), :math:`P^{out}` / :math:`P^{in}` the outgoing / incoming trip
    distributions and :math:`b` the mean token of the other views (zero if there is none).

    Shapes:
        - **input:** :math:`(N, 2 \cdot rank + 2)` features, :math:`(N, hidden)` base tokens
        - **output:** :math:`(N, hidden)`
    """

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.spectral = ViewEncoder(width, hidden)
        self.outgoing = nn.Linear(hidden, hidden, bias=False)
        self.incoming = nn.Linear(hidden, hidden, bias=False)

    def reset_parameters(self) -> None:
        self.spectral.reset_parameters()
        self.outgoing.reset_parameters()
        self.incoming.reset_parameters()

    def forward(self, x: Tensor, base: Tensor | None, flow: FlowInputs) -> Tensor:
        h = self.spectral(x)
        if base is not None:
            h = h + self.outgoing(_propagate(flow.out_rows, flow.out_cols, flow.out_prob, base, flow.out_dense))
            h = h + self.incoming(_propagate(flow.in_rows, flow.in_cols, flow.in_prob, base, flow.in_dense))
        return h


class ViewFusion(nn.Module):
    r"""HAFusion-style fusion of V view tokens per region.

    Inter-view attention among each region's V tokens, then a learned weighting of the views:

    .. math::
        \tilde h_{iv} = h_{iv} + \mathrm{MHA}(\mathrm{LN}(h_{i\cdot}))_v, \quad
        w_v = \mathrm{softmax}_v\Big(\tfrac1N \sum_i a^\top \tanh(W \tilde h_{iv})\Big), \quad
        z_i = \sum_v w_v \tilde h_{iv}

    Shapes:
        - **input:** :math:`(N, V, hidden)`
        - **output:** :math:`(N, hidden)` and the view weights :math:`(V,)`
    """

    REGION_CHUNK = 32768  # regions per fused-attention call (CUDA's limit is 65,535)

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.attention = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.score = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 1, bias=False))

    def reset_parameters(self) -> None:
        self.norm.reset_parameters()
        self.attention._reset_parameters()
        self.score[0].reset_parameters()
        self.score[2].reset_parameters()

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        y = self.norm(tokens)
        if y.device.type == "cpu":
            attended = self._attend_views(y)  # (N, V, hidden)
        else:
            # Regions are the batch here; CUDA's fused attention takes at most 65,535 of them
            # at once (with dropout), so large cities attend in chunks: exact, each region is
            # independent.
            attended = torch.cat([self.attention(chunk, chunk, chunk, need_weights=False)[0]
                                  for chunk in y.split(self.REGION_CHUNK)])  # (N, V, hidden)
        tokens = tokens + attended
        weights = torch.softmax(self.score(tokens).squeeze(-1).mean(0), dim=0)  # (V,)
        return (tokens * weights.view(1, -1, 1)).sum(1), weights  # (N, hidden), (V,)

    def _attend_views(self, y: Tensor) -> Tensor:
        """`self.attention` (its weights, its dropout) over each region's V tokens, written out
        for the CPU: nn.MultiheadAttention batches the N regions' V x V products into N x heads
        tiny matmuls, which on the CPU cost more than a region transformer block (Manhattan,
        V = 3: the fusion was 5.8 ms of a 37 ms step). Here they are broadcast products summed
        over the head width. Same function, and the dropout mask has the same shape at the
        same point of the random stream, so training draws the same masks."""
        attention = self.attention
        n, views, hidden = y.shape
        heads = attention.num_heads
        qkv = F.linear(y, attention.in_proj_weight, attention.in_proj_bias)  # (N, V, 3 * hidden)
        q, k, v = qkv.view(n, views, 3, heads, hidden // heads).permute(2, 0, 3, 1, 4).unbind(0)
        scale = 1.0 / math.sqrt(hidden // heads)  # q, k, v: (N, H, V, hd)
        logits = (q.unsqueeze(3) * k.unsqueeze(2)).sum(-1) * scale  # (N, H, V, V)
        weights = F.dropout(torch.softmax(logits, dim=-1), attention.dropout, self.training)
        out = (weights.unsqueeze(-1) * v.unsqueeze(2)).sum(3)  # (N, H, V, hd)
        return attention.out_proj(out.transpose(1, 2).reshape(n, views, hidden))


class CentralityEncoding(nn.Module):
    r"""Graphormer degree encoding: :math:`c_i = E_{deg}[\deg_i] + E_{out}[o_i] + E_{in}[\iota_i]`
    with bucketed adjacency degree and mobility out/in strength.

    Shapes:
        - **input:** three :math:`(N,)` bucket indices
        - **output:** :math:`(N, hidden)`
    """

    def __init__(self, buckets: int, hidden: int) -> None:
        super().__init__()
        self.degree = nn.Embedding(buckets, hidden)
        self.outgoing = nn.Embedding(buckets, hidden)
        self.incoming = nn.Embedding(buckets, hidden)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for emb in (self.degree, self.outgoing, self.incoming):
            nn.init.normal_(emb.weight, std=0.02)

    def forward(self, degree: Tensor, out_bucket: Tensor, in_bucket: Tensor) -> Tensor:
        return self.degree(degree) + self.outgoing(out_bucket) + self.incoming(in_bucket)


# ---------------------------------------------------------------------------------------------
# 4. The model and its self-supervised losses
# ---------------------------------------------------------------------------------------------


class SREL(nn.Module):
    r"""Spatial-aware region embedding learning.

    .. math::
        z = \mathrm{Fuse}\big(\{\mathrm{IntraView}_v(\mathrm{Enc}_v(X_v))\}_v\big) + c, \qquad
        e = W_e\,\mathrm{LN}(\mathrm{Graphormer}^{L}(z))

    Args:
        config (SRELConfig): hyperparameters.
        view_specs (list[ViewSpec]): the views, from :func:`prepare_srel_inputs`.

    Shapes:
        - **input:** :class:`SRELInputs` of N regions
        - **output:** :math:`(N, embedding\_size)`
    """

    def __init__(self, config: SRELConfig, view_specs: list[ViewSpec]) -> None:
        super().__init__()
        self.config = config
        self.view_specs = [s if isinstance(s, ViewSpec) else ViewSpec(**s) for s in view_specs]
        c = config
        buckets = c.distance_buckets + 1  # + the region itself
        self.encoders = nn.ModuleDict({
            s.name: FlowViewEncoder(s.width, c.hidden) if s.kind == "flow" else ViewEncoder(s.width, c.hidden)
            for s in self.view_specs})
        self.intra_view = nn.ModuleDict({
            s.name: nn.ModuleList([TransformerBlock(c.hidden, c.heads, c.dropout, buckets, c.use_distance_bias)
                                   for _ in range(c.intra_view_layers)])
            for s in self.view_specs})
        self.fusion = ViewFusion(c.hidden, c.heads, c.dropout)
        self.centrality = CentralityEncoding(c.centrality_buckets, c.hidden)
        self.blocks = nn.ModuleList([TransformerBlock(c.hidden, c.heads, c.dropout, buckets, c.use_distance_bias)
                                     for _ in range(c.layers)])
        self.norm = nn.LayerNorm(c.hidden)
        self.project = nn.Linear(c.hidden, c.embedding_size)
        d = c.embedding_size
        # Decoders of the self-supervised objectives.
        flows = [s.name for s in self.view_specs if s.kind == "flow"]
        others = [s.name for s in self.view_specs if s.kind != "flow"]
        self.source = nn.ModuleDict({name: nn.Linear(d, d) for name in flows})
        self.destination = nn.ModuleDict({name: nn.Linear(d, d) for name in flows})
        self.similarity = nn.ModuleDict({name: nn.Linear(d, d) for name in others})
        # Feature reconstruction: each view's (standardised) input features decoded linearly.
        self.reconstruct = nn.ModuleDict(
            {s.name: nn.Linear(d, s.width) for s in self.view_specs}
            if c.reconstruction_weight > 0 else {})

    def reset_parameters(self) -> None:
        for module in (*self.encoders.values(), self.fusion, self.centrality, *self.blocks,
                       *(b for blocks in self.intra_view.values() for b in blocks), self.norm,
                       self.project, *self.source.values(), *self.destination.values(),
                       *self.similarity.values(), *self.reconstruct.values()):
            module.reset_parameters()

    def constructor_arguments(self) -> dict:
        """JSON-able arguments that rebuild this model (with its config)."""
        return {"view_specs": [vars(s) for s in self.view_specs]}

    def forward(self, inputs: SRELInputs) -> Tensor:
        tokens: dict[str, Tensor] = {}
        for s in self.view_specs:
            if s.kind != "flow":
                tokens[s.name] = self.encoders[s.name](inputs.features[s.name])  # (N, hidden)
        base = torch.stack(list(tokens.values())).mean(0) if tokens else None  # (N, hidden)
        for s in self.view_specs:
            if s.kind == "flow":
                tokens[s.name] = self.encoders[s.name](inputs.features[s.name], base, inputs.flows[s.name])
        for s in self.view_specs:
            for block in self.intra_view[s.name]:
                tokens[s.name] = block(tokens[s.name], inputs)
        stacked = torch.stack([tokens[s.name] for s in self.view_specs], dim=1)  # (N, V, hidden)
        x, _ = self.fusion(stacked)  # (N, hidden)
        if self.config.use_centrality:
            x = x + self.centrality(inputs.degree_bucket, inputs.out_bucket, inputs.in_bucket)
        for block in self.blocks:
            x = block(x, inputs)
        return self.project(self.norm(x))  # (N, d)

    def loss(self, inputs: SRELInputs, embeddings: Tensor,
             generator: torch.Generator | None = None) -> dict[str, Tensor]:
        r"""Self-supervised losses (HAFusion's objectives); the sum is under "total".

        Mobility, per flow view: with :math:`s = W_s e`, :math:`t = W_t e`,
        :math:`-\sum_{ij} P^{out}_{ij} \log \mathrm{softmax}_j(s_i \cdot t_j)` averaged over
        regions with trips, and the same for incoming trips with :math:`t_i \cdot s_j`.
        Similarity, per other view: MSE between :math:`\cos(W_v e_i, W_v e_j)` and the cosine
        similarity of the regions' vectors. Dense path: all pairs. Sparse path: `loss_rows`
        sampled regions scored against all N (exact per row, never N x N) and
        `similarity_pairs` sampled pairs.
        """
        n = inputs.n_regions
        c = self.config
        parts: dict[str, Tensor] = {}
        device = embeddings.device
        for name, flow in inputs.flows.items():
            src = self.source[name](embeddings)  # (N, d)
            dst = self.destination[name](embeddings)  # (N, d)
            if inputs.dense:
                logits = src @ dst.T  # (N, N): row i = origin i over destinations j
                parts[f"{name}_out"] = _distribution_loss(logits, flow.out_dense, dim=1,
                                                          weight=flow.out_weight)
                # Incoming: destination j's distribution over origins i is column j, so the
                # softmax runs down the columns of the same logits (no transposed copy).
                parts[f"{name}_in"] = _distribution_loss(logits, flow.in_dense.T, dim=0,
                                                         weight=flow.in_weight)
            else:
                parts[f"{name}_out"] = _sampled_distribution_loss(src, dst, flow.out_ptr, flow.out_cols,
                                                                  flow.out_prob, c.loss_rows, generator,
                                                                  flow.out_weight)
                parts[f"{name}_in"] = _sampled_distribution_loss(dst, src, flow.in_ptr, flow.in_cols,
                                                                 flow.in_prob, c.loss_rows, generator,
                                                                 flow.in_weight)
        for name, unit in inputs.similarity_vectors.items():
            z = F.normalize(self.similarity[name](embeddings), dim=-1)  # (N, d)
            if inputs.dense:
                parts[f"{name}_similarity"] = F.mse_loss(z @ z.T, inputs.similarity_targets[name])
            else:
                i = torch.randint(n, (c.similarity_pairs,), generator=generator).to(device)
                j = torch.randint(n, (c.similarity_pairs,), generator=generator).to(device)
                target = edge_dot(unit.unsqueeze(1), unit.unsqueeze(1), i, j).squeeze(1)  # (P,)
                predicted = edge_dot(z.unsqueeze(1), z.unsqueeze(1), i, j).squeeze(1)  # (P,)
                parts[f"{name}_similarity"] = F.mse_loss(predicted, target)
        for name, decoder in self.reconstruct.items():
            target = inputs.features[name]  # (N, width), standardised
            parts[f"{name}_reconstruction"] = c.reconstruction_weight * F.mse_loss(
                decoder(embeddings), target)
        parts["total"] = torch.stack(list(parts.values())).sum() if parts else embeddings.sum() * 0
        return parts


def _volume_weights(volume) -> np.ndarray:
    """(N,) weights proportional to each region's trips, mean 1 over the regions with trips."""
    volume = np.asarray(volume, dtype=np.float64).ravel()
    total = volume.sum()
    if total <= 0:
        return np.ones_like(volume)
    return volume * (volume > 0).sum() / total


def _distribution_loss(logits: Tensor, target: Tensor, dim: int = 1,
                       weight: Tensor | None = None) -> Tensor:
    """Cross-entropy of the distributions `target` (N, N) along `dim` (1: rows, 0: columns)
    under softmax(logits) along the same dim, averaged over the distributions with mass, each
    counted `weight[k]` times when given (distribution k: row k for dim 1, column k for dim 0).

    A distribution without mass adds nothing to the sum nor to the gradient (its target is
    zero), so no row is selected out: only the count of those with mass is needed."""
    with_mass = int((target.sum(dim) > 0).sum())
    if with_mass == 0:
        return logits.sum() * 0
    if weight is not None:
        target = target * (weight.unsqueeze(1) if dim == 1 else weight.unsqueeze(0))
    return -(target * torch.log_softmax(logits, dim=dim)).sum() / with_mass


def _sampled_distribution_loss(query: Tensor, key: Tensor, ptr: Tensor, cols: Tensor, prob: Tensor,
                               rows: int, generator: torch.Generator | None,
                               weight: Tensor | None = None) -> Tensor:
    """The same cross-entropy over `rows` sampled regions with mass, each scored against all N
    (and counted `weight[i]` times when given)."""
    counts = ptr[1:] - ptr[:-1]  # (N,)
    with_mass = torch.nonzero(counts > 0).squeeze(1)
    if with_mass.numel() == 0:
        return query.sum() * 0
    if with_mass.numel() > rows:
        pick = torch.randperm(with_mass.numel(), generator=generator)[:rows].to(with_mass.device)
        with_mass = with_mass[pick]
    log_p = torch.log_softmax(query[with_mass] @ key.T, dim=1)  # (R, N)
    local = torch.repeat_interleave(torch.arange(len(with_mass), device=ptr.device), counts[with_mass])
    starts = torch.repeat_interleave(ptr[with_mass], counts[with_mass])  # (nnz_R,)
    offset = torch.arange(len(local), device=ptr.device) - torch.repeat_interleave(
        torch.cumsum(counts[with_mass], 0) - counts[with_mass], counts[with_mass])
    entry = starts + offset  # index into cols/prob
    mass = prob[entry] if weight is None else prob[entry] * weight[with_mass][local]
    return -(mass * log_p[local, cols[entry]]).sum() / len(with_mass)
