"""Spatial priors: adjacency, nearest regions, UTM choice, hops, and no N x N for large N."""

from __future__ import annotations

import tracemalloc

import geopandas as gpd
import numpy as np
import scipy.sparse as sp
import shapely

from engine.data.priors import (
    PriorsConfig,
    distance_quantiles,
    geometric_priors,
    hop_distances,
    mobility_priors,
    projected_crs,
)


def grid(side: int, cell: float = 100.0, crs: str = "EPSG:32618") -> gpd.GeoSeries:
    i = np.arange(side * side)
    x, y = 500_000 + (i % side) * cell, 4_500_000 + (i // side) * cell
    return gpd.GeoSeries(shapely.box(x, y, x + cell, y + cell), crs=crs)


def test_adjacency_on_a_3x3_grid_shares_edges_and_corners():
    priors = geometric_priors(grid(3))
    a = priors.adjacency
    assert sp.issparse(a) and (a != a.T).nnz == 0 and a.diagonal().sum() == 0
    assert priors.degree.tolist() == [3, 5, 3, 5, 8, 5, 3, 5, 3]
    assert sorted(a[0].indices.tolist()) == [1, 3, 4]


def test_a_digitising_gap_below_the_tolerance_keeps_neighbours():
    left, right = shapely.box(0, 0, 10, 10), shapely.box(10.4, 0, 20, 10)  # 0.4 m gap
    geometry = gpd.GeoSeries([left, right], crs="EPSG:32618")
    assert geometric_priors(geometry).degree.tolist() == [1, 1]
    assert geometric_priors(geometry, config=PriorsConfig(touch_tolerance=0.1)).degree.tolist() \
        == [0, 0]


def test_nearest_regions_exclude_self_and_are_sorted():
    priors = geometric_priors(grid(3), config=PriorsConfig(neighbours=4))
    assert priors.neighbours.shape == (9, 4)
    assert sorted(priors.neighbours[4].tolist()) == [1, 3, 5, 7]  # the centre's rook neighbours
    np.testing.assert_allclose(priors.neighbour_distance[4], 100.0)
    assert (priors.neighbours != np.arange(9)[:, None]).all()
    assert (np.diff(priors.neighbour_distance, axis=1) >= 0).all()
    capped = geometric_priors(grid(2), config=PriorsConfig(neighbours=16))
    assert capped.neighbours.shape == (4, 3)  # k capped at N - 1
    np.testing.assert_allclose(capped.area, 100.0 * 100.0)


def test_geographic_layers_are_measured_in_their_utm_zone():
    new_york = gpd.GeoSeries([shapely.box(-74.0, 40.7, -73.99, 40.71)], crs="EPSG:4326")
    sydney = gpd.GeoSeries([shapely.box(151.2, -33.9, 151.21, -33.89)], crs="EPSG:4326")
    assert projected_crs(new_york).to_epsg() == 32618
    assert projected_crs(sydney).to_epsg() == 32756
    assert projected_crs(grid(2, crs="EPSG:3857")).to_epsg() == 3857  # projected: its own
    priors = geometric_priors(grid(3).to_crs("EPSG:4326"))
    assert priors.crs == "EPSG:32618"
    np.testing.assert_allclose(priors.neighbour_distance[4, :4], 100.0, rtol=1e-3)


def test_distance_quantiles_are_equal_count_edges():
    centroids = np.column_stack([np.arange(50) * 10.0, np.zeros(50)])
    edges = distance_quantiles(centroids, PriorsConfig(distance_buckets=4))
    pairs = np.abs(np.arange(50)[:, None] - np.arange(50)[None]) * 10.0
    pairs = pairs[np.triu_indices(50, 1)]
    assert len(edges) == 3
    counts = np.bincount(np.searchsorted(edges, pairs, side="right"), minlength=4)
    assert counts.min() > 0.2 * len(pairs)  # four buckets of about a quarter each
    sampled = distance_quantiles(centroids, PriorsConfig(distance_buckets=4, exact_pairs_below=10,
                                                         sample_pairs=50_000))
    np.testing.assert_allclose(sampled, edges, rtol=0.05)


def test_hop_distances_on_a_grid_are_chebyshev_distances():
    side = 8
    priors = geometric_priors(grid(side))
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, side * side, 300), rng.integers(0, side * side, 300)
    expected = np.maximum(np.abs(rows % side - cols % side), np.abs(rows // side - cols // side))
    np.testing.assert_array_equal(hop_distances(priors.adjacency, rows, cols), expected)
    limited = hop_distances(priors.adjacency, rows, cols, max_hops=3)
    np.testing.assert_array_equal(limited, np.where(expected <= 3, expected, np.inf))


def test_hop_distances_for_large_graphs_use_a_sparse_frontier():
    side = 70  # 4,900 regions: above the csgraph path's limit
    a = geometric_priors(grid(side), config=PriorsConfig(neighbours=4)).adjacency
    rng = np.random.default_rng(1)
    rows, cols = rng.integers(0, side * side, 500), rng.integers(0, side * side, 500)
    cols[:100] = np.minimum(rows[:100] + 1, side * side - 1)  # some near pairs
    expected = np.maximum(np.abs(rows % side - cols % side), np.abs(rows // side - cols // side))
    got = hop_distances(a, rows, cols, max_hops=6)
    np.testing.assert_array_equal(got, np.where(expected <= 6, expected, np.inf))


def test_no_dense_n_by_n_array_for_5000_regions():
    geometry = grid(71)[:5000]  # 5,000 regions; an N x N float64 array would take 200 MB
    flow = sp.random(5000, 5000, density=2e-3, format="csr", random_state=0)
    tracemalloc.start()
    priors = geometric_priors(geometry, [flow])
    rows = np.repeat(np.arange(5000), priors.neighbours.shape[1])
    hops = hop_distances(priors.adjacency, rows, priors.neighbours.ravel(), max_hops=4)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 60 * 1024**2, f"peak {peak / 1024**2:.0f} MB"
    assert priors.neighbours.shape == (5000, 16) and np.isfinite(hops).all()
    assert len(priors.distance_quantiles) == 15
    np.testing.assert_allclose(priors.mobility_out, np.asarray(flow.sum(axis=1)).ravel())


def test_mobility_priors_without_coordinates():
    n = 6  # two groups that travel among themselves: 0-1-2 and 3-4-5, one weak link 2-3
    dense = np.zeros((n, n))
    for a, b, t in [(0, 1, 100), (1, 2, 80), (0, 2, 50), (3, 4, 100), (4, 5, 90), (3, 5, 40),
                    (2, 3, 1)]:
        dense[a, b] = t
        dense[b, a] = t // 2
    priors = mobility_priors([sp.csr_matrix(dense)], PriorsConfig(neighbours=2, trip_partners=1))
    assert priors.centroids is None
    assert sorted(priors.neighbours[0].tolist()) == [1, 2]
    assert sorted(priors.neighbours[4].tolist()) == [3, 5]
    assert priors.neighbour_distance[0, 0] == 1.0 / np.log1p(150)  # 100 + 50 trips both ways
    a = priors.adjacency
    assert (a != a.T).nnz == 0 and a[0, 1] == 1 and a[3, 4] == 1 and a[2, 3] == 0
    np.testing.assert_allclose(priors.mobility_out, dense.sum(axis=1))
    np.testing.assert_allclose(priors.mobility_in, dense.sum(axis=0))
