"""Tiny RegionDatasets built directly from the dataclasses (5-12 regions), for model tests."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from engine.data.dataset import RegionDataset, SpatialPriors, View


def tiny_dataset(n: int = 10, seed: int = 0, *, k: int = 4, with_flow: bool = True,
                 buckets: int = 4) -> RegionDataset:
    """n regions on a jittered grid with POI counts, land-use shares and a sparse flow."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n)))
    grid = np.array([(i % side, i // side) for i in range(n)], dtype=np.float64)
    centroids = grid * 500.0 + rng.normal(0, 50, size=(n, 2))
    poi = rng.poisson(3.0, size=(n, 6)).astype(np.float64)
    landuse = rng.dirichlet(np.ones(4), size=n) * rng.uniform(0.5, 1.0, size=(n, 1))
    rows, cols = np.nonzero(np.abs(grid[:, None, :] - grid[None, :, :]).sum(-1) == 1)
    adjacency = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    k = min(k, n - 1)
    distance, neighbours = cKDTree(centroids).query(centroids, k=k + 1)
    views = {"poi": View("poi", "counts", poi, [f"poi_{i:02d}" for i in range(6)]),
             "landuse": View("landuse", "shares", landuse, ["a", "b", "c", "d"])}
    out_strength = np.zeros(n)
    in_strength = np.zeros(n)
    if with_flow:
        dense = rng.poisson(5.0, size=(n, n)) * (rng.random((n, n)) < 0.4)
        dense[0] = 0  # a region without outgoing trips
        flow = sp.csr_matrix(dense.astype(np.float64))
        views["mobility"] = View("mobility", "flow", flow, [str(i) for i in range(n)])
        out_strength = np.asarray(flow.sum(axis=1)).ravel()
        in_strength = np.asarray(flow.sum(axis=0)).ravel()
    pair = np.sqrt(((centroids[:, None] - centroids[None]) ** 2).sum(-1))[np.triu_indices(n, 1)]
    priors = SpatialPriors(
        centroids=centroids, crs="EPSG:32618", adjacency=adjacency,
        neighbours=neighbours[:, 1:].astype(np.int64), neighbour_distance=distance[:, 1:],
        degree=np.asarray(adjacency.sum(axis=1)).ravel().astype(np.int64),
        mobility_out=out_strength, mobility_in=in_strength,
        distance_quantiles=np.quantile(pair, np.linspace(0, 1, buckets + 1)[1:-1]),
    )
    targets = {"crime": rng.poisson(50, size=n).astype(np.float64)}
    return RegionDataset(region_ids=np.arange(n), views=views, priors=priors, targets=targets)


def large_city(n: int = 10_000, seed: int = 0, *, k: int = 16, trips_per_region: int = 20,
               buckets: int = 16) -> RegionDataset:
    """A big synthetic city without any N x N dense array (for scale tests and benchmarks)."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n)))
    grid = np.array([(i % side, i // side) for i in range(n)], dtype=np.float64)
    centroids = grid * 300.0 + rng.normal(0, 30, size=(n, 2))
    tree = cKDTree(centroids)
    distance, neighbours = tree.query(centroids, k=k + 1)
    adjacency = sp.csr_matrix(tree.sparse_distance_matrix(tree, 1.5 * 300.0, output_type="coo_matrix"))
    adjacency.data[:] = 1.0
    adjacency.setdiag(0)
    adjacency.eliminate_zeros()
    origins = np.repeat(np.arange(n), trips_per_region)
    destinations = np.where(rng.random(len(origins)) < 0.7,
                            neighbours[origins, rng.integers(1, k + 1, len(origins))],
                            rng.integers(0, n, len(origins)))
    flow = sp.csr_matrix((rng.poisson(4.0, len(origins)) + 1.0, (origins, destinations)), shape=(n, n))
    poi = rng.poisson(rng.gamma(2.0, 2.0, size=(n, 1)) * np.ones((1, 26))).astype(np.float64)
    landuse = rng.poisson(2.0, size=(n, 11)).astype(np.float64)
    a, b = rng.integers(0, n, 200_000), rng.integers(0, n, 200_000)
    pair = np.sqrt(((centroids[a] - centroids[b]) ** 2).sum(-1))
    priors = SpatialPriors(
        centroids=centroids, crs="EPSG:32618", adjacency=adjacency,
        neighbours=neighbours[:, 1:].astype(np.int64), neighbour_distance=distance[:, 1:],
        degree=np.asarray(adjacency.sum(axis=1)).ravel().astype(np.int64),
        mobility_out=np.asarray(flow.sum(axis=1)).ravel(),
        mobility_in=np.asarray(flow.sum(axis=0)).ravel(),
        distance_quantiles=np.quantile(pair, np.linspace(0, 1, buckets + 1)[1:-1]),
    )
    views = {"poi": View("poi", "counts", poi, [f"poi_{i:02d}" for i in range(26)]),
             "landuse": View("landuse", "counts", landuse, [f"lu_{i:02d}" for i in range(11)]),
             "mobility": View("mobility", "flow", flow, [str(i) for i in range(n)])}
    return RegionDataset(region_ids=np.arange(n), views=views, priors=priors)
