"""Spatial priors: where the regions are and how they connect, never as an N x N dense array.

- centroids in a projected CRS: the layer's own if projected, else the local UTM zone;
- adjacency: polygons that touch or share a boundary (closer than `touch_tolerance` metres, so
  digitising gaps do not cut neighbours apart);
- the k nearest regions by centroid (cKDTree), distance-quantile bucket edges estimated from a
  sample of pairs for large N, degree, and mobility in/out strength;
- without coordinates (benchmark folders without a shapefile) the same priors come from the trips:
  neighbours are the regions nearest on the trip graph (edge length 1 / log1p(trips both ways)),
  adjacency links mutual top trip partners.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import shapely
from scipy.sparse import csgraph
from scipy.spatial import cKDTree

from engine.data.dataset import SpatialPriors


@dataclass
class PriorsConfig:
    """How the spatial priors are built."""

    neighbours: int = 16  # k nearest regions kept per region (capped at N - 1)
    distance_buckets: int = 16  # B distance buckets, i.e. B - 1 quantile edges
    sample_pairs: int = 200_000  # region pairs sampled to estimate the quantiles when N is large
    exact_pairs_below: int = 1_000  # below this N every pair is used for the quantiles
    touch_tolerance: float = 1.0  # metres: polygons closer than this count as adjacent
    trip_partners: int = 8  # without coordinates: adjacency = mutual top trip partners
    graph_exact_below: int = 20_000  # without coordinates: exact graph kNN (Dijkstra) below this N
    seed: int = 0  # seed of the pair sample


def projected_crs(geometry) -> object:
    """The CRS to measure in: the layer's own if projected, else its local UTM zone (pyproj CRS)."""
    import geopandas as gpd

    series = geometry if isinstance(geometry, gpd.GeoSeries) else gpd.GeoSeries(geometry)
    if series.crs is None:
        raise ValueError("the geometry has no CRS")
    if series.crs.is_projected:
        return series.crs
    minx, miny, maxx, maxy = series.total_bounds
    if not (-180.5 <= minx <= maxx <= 180.5 and -90.5 <= miny <= maxy <= 90.5):
        from engine.errors import InputError

        raise InputError(
            f"the layer's CRS is geographic ({series.crs.to_string()}) but its coordinates "
            f"({minx:.0f}, {miny:.0f} .. {maxx:.0f}, {maxy:.0f}) are not longitudes and latitudes",
            hint="The file probably lost its CRS (GeoJSON is read as EPSG:4326): set the layer's "
                 "real CRS in QGIS (Layer Properties > Source) and save it again.")
    return series.estimate_utm_crs()


def geometric_priors(geometry, flows: list[sp.csr_matrix] | None = None,
                     config: PriorsConfig | None = None) -> SpatialPriors:
    """Priors of polygons (a GeoSeries in any CRS): projected first, then measured."""
    config = config or PriorsConfig()
    crs = projected_crs(geometry)
    projected = geometry.to_crs(crs) if geometry.crs != crs else geometry
    polygons = np.asarray(projected.values)
    centroids = shapely.get_coordinates(shapely.centroid(polygons))  # (N, 2)
    adjacency = polygon_adjacency(polygons, config.touch_tolerance)
    return centroid_priors(centroids, crs.to_string(), adjacency=adjacency, flows=flows,
                           config=config, area=shapely.area(polygons))


def centroid_priors(centroids: np.ndarray, crs: str | None, *,
                    adjacency: sp.csr_matrix | None = None,
                    flows: list[sp.csr_matrix] | None = None, config: PriorsConfig | None = None,
                    area: np.ndarray | None = None) -> SpatialPriors:
    """Priors from projected centroids; adjacency from Delaunay neighbours when not given."""
    config = config or PriorsConfig()
    centroids = np.asarray(centroids, dtype=np.float64)
    n = len(centroids)
    if adjacency is None:
        adjacency = delaunay_adjacency(centroids)
    neighbours, distance = nearest_regions(centroids, config.neighbours)
    out_strength, in_strength = mobility_strength(flows, n)
    return SpatialPriors(
        centroids=centroids, crs=crs, adjacency=adjacency, neighbours=neighbours,
        neighbour_distance=distance, degree=_degree(adjacency),
        mobility_out=out_strength, mobility_in=in_strength,
        distance_quantiles=distance_quantiles(centroids, config), area=area)


def polygon_adjacency(polygons: np.ndarray, tolerance: float = 1.0) -> sp.csr_matrix:
    """(N, N) 0/1 symmetric: polygons that touch, overlap or lie within `tolerance` metres."""
    n = len(polygons)
    tree = shapely.STRtree(polygons)
    if tolerance > 0:
        rows, cols = tree.query(polygons, predicate="dwithin", distance=tolerance)
    else:
        rows, cols = tree.query(polygons, predicate="intersects")
    return _symmetric(rows, cols, n)


def delaunay_adjacency(centroids: np.ndarray) -> sp.csr_matrix:
    """(N, N) 0/1: Delaunay neighbours of the centroids (a stand-in for polygon contiguity)."""
    n = len(centroids)
    if n < 4:
        rows, cols = np.nonzero(~np.eye(n, dtype=bool))
        return _symmetric(rows, cols, n)
    from scipy.spatial import Delaunay

    triangles = Delaunay(centroids).simplices  # (T, 3)
    rows = triangles[:, [0, 1, 2, 1, 2, 0]].ravel()
    cols = triangles[:, [1, 2, 0, 0, 1, 2]].ravel()
    return _symmetric(rows, cols, n)


def _symmetric(rows: np.ndarray, cols: np.ndarray, n: int) -> sp.csr_matrix:
    off = rows != cols
    rows, cols = np.concatenate([rows[off], cols[off]]), np.concatenate([cols[off], rows[off]])
    matrix = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    matrix.data[:] = 1.0  # duplicates were summed
    return matrix


def _degree(adjacency: sp.csr_matrix) -> np.ndarray:
    return np.diff(sp.csr_matrix(adjacency).indptr).astype(np.int64)


def nearest_regions(centroids: np.ndarray, k: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(N, k) indices and distances of the k nearest other regions (k capped at N - 1)."""
    n = len(centroids)
    k = max(0, min(k, n - 1))
    if k == 0:
        return np.zeros((n, 0), dtype=np.int64), np.zeros((n, 0))
    distance, index = cKDTree(centroids).query(centroids, k=k + 1)
    # the region itself is normally first; with duplicate centroids it may not be: drop it anyway
    own = index == np.arange(n)[:, None]
    drop = np.where(own.any(axis=1), own.argmax(axis=1), k)  # (N,) column to remove
    keep = np.ones_like(own)
    keep[np.arange(n), drop] = False
    index = index[keep].reshape(n, k)  # (N, k)
    distance = distance[keep].reshape(n, k)
    return index.astype(np.int64), distance.astype(np.float64)


def distance_quantiles(centroids: np.ndarray, config: PriorsConfig | None = None) -> np.ndarray:
    """(B-1,) edges of B equal-count buckets of centroid distance over region pairs i != j."""
    config = config or PriorsConfig()
    n = len(centroids)
    if n < 2:
        return np.zeros(0)
    if n <= config.exact_pairs_below:
        from scipy.spatial.distance import pdist

        pairs = pdist(centroids)  # (N (N - 1) / 2,)
    else:
        rng = np.random.default_rng(config.seed)
        a = rng.integers(0, n, config.sample_pairs)
        b = (a + rng.integers(1, n, config.sample_pairs)) % n  # never a itself
        diff = centroids[a] - centroids[b]
        pairs = np.sqrt((diff * diff).sum(axis=1))
    return _edges(pairs, config.distance_buckets)


def _edges(values: np.ndarray, buckets: int) -> np.ndarray:
    if len(values) == 0 or buckets < 2:
        return np.zeros(0)
    return np.quantile(values, np.linspace(0, 1, buckets + 1)[1:-1])


def mobility_strength(flows: list[sp.csr_matrix] | None, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(N,) outgoing and (N,) incoming trips summed over the flow views."""
    out_strength, in_strength = np.zeros(n), np.zeros(n)
    for flow in flows or []:
        out_strength += np.asarray(flow.sum(axis=1)).ravel()
        in_strength += np.asarray(flow.sum(axis=0)).ravel()
    return out_strength, in_strength


def mobility_priors(flows: list[sp.csr_matrix], config: PriorsConfig | None = None) -> SpatialPriors:
    """Priors without coordinates, from the trips (benchmark folders without geometry).

    Trip graph: edge (i, j) of length 1 / log1p(t_ij + t_ji), so strong partners are near.
    neighbours: the k regions nearest on that graph (exact Dijkstra below `graph_exact_below`
    regions, else the k strongest direct partners); unreachable slots are filled with the most
    travelled regions at twice the largest distance seen. adjacency: mutual top-m partners plus
    each region's strongest partner (no region with trips is left alone).
    """
    config = config or PriorsConfig()
    n = flows[0].shape[0]
    both = sp.csr_matrix((n, n))
    for flow in flows:
        both = both + flow + flow.T
    both = sp.csr_matrix(both)
    both.setdiag(0)
    both.eliminate_zeros()
    length = both.copy()
    length.data = 1.0 / np.log1p(length.data)
    k = max(0, min(config.neighbours, n - 1))
    if n <= config.graph_exact_below:
        neighbours, distance, sample = _graph_knn(length, k, config)
    else:
        neighbours, distance = _top_partners(both, length, k)
        sample = length.data
    finite = distance[np.isfinite(distance)]
    far = 2.0 * float(finite.max()) if finite.size else 1.0
    _fill_unreached(neighbours, distance, np.asarray(both.sum(axis=1)).ravel(), far)
    out_strength, in_strength = mobility_strength(flows, n)
    adjacency = _mutual_partners(both, config.trip_partners)
    return SpatialPriors(
        centroids=None, crs=None, adjacency=adjacency, neighbours=neighbours,
        neighbour_distance=distance, degree=_degree(adjacency), mobility_out=out_strength,
        mobility_in=in_strength, distance_quantiles=_edges(sample, config.distance_buckets))


def _graph_knn(length: sp.csr_matrix, k: int, config: PriorsConfig):
    """(N, k) nearest on the trip graph, and a sample of pair distances (rows in chunks)."""
    n = length.shape[0]
    rng = np.random.default_rng(config.seed)
    neighbours = np.full((n, k), -1, dtype=np.int64)
    distance = np.full((n, k), np.inf)
    chunk = max(1, min(n, 4_000_000 // max(n, 1)))
    per_row = max(1, config.sample_pairs // max(n, 1))
    samples = []
    for start in range(0, n, chunk):
        rows = np.arange(start, min(n, start + chunk))
        d = csgraph.dijkstra(length, directed=False, indices=rows)  # (chunk, N)
        d[np.arange(len(rows)), rows] = np.inf  # not itself
        if k:
            part = np.argpartition(d, k - 1, axis=1)[:, :k] if k < n else np.argsort(d, axis=1)
            order = np.argsort(np.take_along_axis(d, part, axis=1), axis=1, kind="stable")
            idx = np.take_along_axis(part, order, axis=1)
            neighbours[rows] = idx
            distance[rows] = np.take_along_axis(d, idx, axis=1)
        cols = rng.integers(0, n, size=(len(rows), per_row))
        picked = d[np.arange(len(rows))[:, None], cols]
        samples.append(picked[np.isfinite(picked)])
    neighbours[~np.isfinite(distance)] = -1
    return neighbours, distance, np.concatenate(samples) if samples else np.zeros(0)


def _top_partners(both: sp.csr_matrix, length: sp.csr_matrix, k: int):
    n = both.shape[0]
    neighbours = np.full((n, k), -1, dtype=np.int64)
    distance = np.full((n, k), np.inf)
    for i in range(n):
        lo, hi = both.indptr[i], both.indptr[i + 1]
        order = np.argsort(-both.data[lo:hi], kind="stable")[:k]
        neighbours[i, :len(order)] = both.indices[lo:hi][order]
        distance[i, :len(order)] = length.data[lo:hi][order]
    return neighbours, distance


def _fill_unreached(neighbours: np.ndarray, distance: np.ndarray, strength: np.ndarray,
                    far: float) -> None:
    """Empty neighbour slots get the most travelled regions not yet there, at distance `far`."""
    n, k = neighbours.shape
    if k == 0:
        return
    popular = np.argsort(-strength, kind="stable")[: 2 * k + 1]
    for i in np.flatnonzero((neighbours < 0).any(axis=1)):
        taken = set(neighbours[i][neighbours[i] >= 0].tolist()) | {i}
        fill = [j for j in popular.tolist() if j not in taken]
        if len(fill) < k:
            fill += [j for j in range(n) if j not in taken and j not in fill][: 2 * k]
        slots = np.flatnonzero(neighbours[i] < 0)
        neighbours[i, slots] = fill[: len(slots)]
        distance[i, slots] = far


def _mutual_partners(both: sp.csr_matrix, m: int) -> sp.csr_matrix:
    n = both.shape[0]
    rows, cols, best = [], [], []
    for i in range(n):
        lo, hi = both.indptr[i], both.indptr[i + 1]
        if hi == lo:
            continue
        order = np.argsort(-both.data[lo:hi], kind="stable")
        top = both.indices[lo:hi][order[:m]]
        rows.append(np.full(len(top), i))
        cols.append(top)
        best.append((i, both.indices[lo:hi][order[0]]))
    if not rows:
        return sp.csr_matrix((n, n))
    top = sp.csr_matrix((np.ones(sum(map(len, rows))), (np.concatenate(rows),
                         np.concatenate(cols))), shape=(n, n))
    mutual = top.multiply(top.T)
    b = np.array(best)
    strongest = sp.csr_matrix((np.ones(len(b)), (b[:, 0], b[:, 1])), shape=(n, n))
    coo = sp.coo_matrix(mutual + strongest)
    return _symmetric(coo.row, coo.col, n)


def hop_distances(adjacency: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray,
                  max_hops: int = 16) -> np.ndarray:
    """Shortest-path hops on the adjacency graph of the pairs (rows[e], cols[e]).

    Returns (E,) float64: 0 for a region with itself, inf beyond `max_hops` or unreachable.
    Small graphs use scipy.sparse.csgraph (breadth first, limited to max_hops) from the distinct
    source regions in chunks; large graphs expand a sparse frontier hop by hop, so the memory is
    bounded by the regions reached within max_hops, never N x N.
    """
    adjacency = sp.csr_matrix(adjacency)
    n = adjacency.shape[0]
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    result = np.full(len(rows), np.inf)
    if len(rows) == 0:
        return result
    sources, local = np.unique(rows, return_inverse=True)
    chunk = max(1, min(len(sources), 2_000_000 // max(n, 1)))
    if n <= 4096:
        for start in range(0, len(sources), chunk):
            block = sources[start:start + chunk]
            hops = csgraph.dijkstra(adjacency, directed=False, unweighted=True,
                                    indices=block, limit=max_hops + 0.5)  # (chunk, N)
            mine = (local >= start) & (local < start + len(block))
            result[mine] = hops[local[mine] - start, cols[mine]]
        return result
    binary = adjacency.copy()
    binary.data[:] = 1.0
    binary = sp.csr_matrix(binary + binary.T)
    chunk = 1024
    for start in range(0, len(sources), chunk):
        block = sources[start:start + chunk]
        mine = np.flatnonzero((local >= start) & (local < start + len(block)))
        pair_rows, pair_cols = local[mine] - start, cols[mine]
        result[mine[pair_cols == block[pair_rows]]] = 0.0
        reached = sp.csr_matrix((np.ones(len(block)), (np.arange(len(block)), block)),
                                shape=(len(block), n))
        frontier = reached
        for hop in range(1, max_hops + 1):
            frontier = sp.csr_matrix(frontier @ binary)
            frontier.data[:] = 1.0
            frontier = sp.csr_matrix(frontier - frontier.multiply(reached))
            frontier.eliminate_zeros()
            if frontier.nnz == 0:
                break
            reached = sp.csr_matrix(reached + frontier)
            open_pairs = np.isinf(result[mine])
            if not open_pairs.any():
                break
            hit = np.asarray(frontier[pair_rows[open_pairs], pair_cols[open_pairs]]).ravel() > 0
            result[mine[open_pairs][hit]] = float(hop)
    return result
