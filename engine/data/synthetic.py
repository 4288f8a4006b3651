"""A seeded synthetic city, from 10 to 100,000 regions, for end-to-end tests and benchmarks.

Regions are grid cells or Voronoi cells (400 m apart) in a projected CRS. Each region has hidden
traits (distance to the centre, density, commercial mix) that drive everything else:
- POIs in 12 categories (Poisson), land-use points in 6 classes;
- trips from a gravity model (homes at the origin, POIs at the destination, exp(-d / 1.5 km)),
  sparse: only the strongest `trips_per_origin` destinations among the nearest regions;
- targets that depend on the features nonlinearly, with noise: `crime`, `check_in`, `income`
  (5% unknown), and the class `landuse_class` (the dominant land-use class).

`write_synthetic_layers` writes the same city as the files a user would have (a GeoPackage with
regions, pois and landuse layers, and a trips CSV); reading them back with `build_dataset` gives
the same arrays.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp
import shapely

from engine.data.dataset import RegionDataset, View
from engine.data.priors import PriorsConfig, geometric_priors

POI_CATEGORIES = ["culture", "food", "health", "hotel", "nightlife", "office", "park", "school",
                  "service", "shop", "transit", "worship"]
COMMERCIAL = {"culture", "food", "hotel", "nightlife", "office", "shop", "transit"}
LANDUSE_CLASSES = ["commercial", "industrial", "institutional", "mixed", "park", "residential"]
SPACING = 400.0  # metres between region centres
ORIGIN = (583_000.0, 4_505_000.0)  # south-west corner, UTM zone 18N (New York)


def make_synthetic_city(n_regions: int = 200, seed: int = 0, kind: str = "voronoi",
                        crs: str = "EPSG:32618", *, mean_pois: float = 20.0,
                        trips_per_origin: int = 10,
                        priors_config: PriorsConfig | None = None) -> RegionDataset:
    """A RegionDataset of n_regions synthetic regions (views poi, landuse, mobility)."""
    import geopandas as gpd

    if n_regions < 2:
        raise ValueError("a synthetic city needs at least 2 regions")
    if kind not in ("voronoi", "grid"):
        raise ValueError("kind must be 'voronoi' or 'grid'")
    rng = np.random.default_rng(seed)
    polygons = _voronoi_cells(n_regions, rng) if kind == "voronoi" else _grid_cells(n_regions)
    geometry = gpd.GeoSeries(polygons, crs="EPSG:32618")
    centroids = shapely.get_coordinates(shapely.centroid(polygons))  # (N, 2)
    n = n_regions

    centre = centroids.mean(axis=0)
    radius = np.sqrt(((centroids - centre) ** 2).sum(axis=1))
    r = radius / max(radius.max(), 1.0)  # (N,) 0 at the centre, 1 at the edge
    density = np.exp(-1.5 * r) * rng.gamma(4.0, 0.25, n)  # (N,)
    commercial = 1.0 / (1.0 + np.exp(-(4.0 * (0.45 - r) + rng.normal(0, 0.8, n))))  # (N,)

    weight = np.array([[c if name in COMMERCIAL else 1.0 - c for name in POI_CATEGORIES]
                       for c in commercial])  # (N, 12)
    weight *= rng.gamma(3.0, 1 / 3.0, weight.shape)
    weight /= weight.sum(axis=1, keepdims=True)
    poi = rng.poisson(mean_pois * density[:, None] * weight * len(POI_CATEGORIES) / 3.0)

    alpha = np.column_stack([4 * commercial, 1 + 0 * r, 1 + 0 * r, 2 + 0 * r, 1 + r,
                             5 * (1 - commercial)])  # (N, 6)
    landuse_prob = np.array([rng.dirichlet(a) for a in alpha])  # (N, 6)
    landuse = np.array([rng.multinomial(m, p) for m, p in
                        zip(rng.poisson(12 + 10 * density), landuse_prob, strict=True)])

    homes = landuse[:, LANDUSE_CLASSES.index("residential")] + 1.0
    attraction = poi.sum(axis=1) + 1.0
    flow = _gravity_trips(centroids, homes, attraction, trips_per_origin, rng)

    food = poi[:, [POI_CATEGORIES.index(c) for c in ("food", "nightlife")]].sum(axis=1)
    leisure = poi[:, [POI_CATEGORIES.index(c) for c in ("culture", "food", "hotel", "shop")]]
    inflow = np.log1p(np.asarray(flow.sum(axis=0)).ravel())
    z = (inflow - inflow.mean()) / (inflow.std() + 1e-9)
    crime = np.round(np.exp(1.5 + 0.5 * np.log1p(food) + 0.4 * np.maximum(z, 0) * commercial
                            + rng.normal(0, 0.2, n)))
    check_in = np.round(np.exp(2.0 + 0.7 * np.log1p(leisure.sum(axis=1)) + 0.5 * np.tanh(z)
                               + rng.normal(0, 0.25, n)))
    residential_share = landuse[:, -1] / np.maximum(landuse.sum(axis=1), 1)
    income = 25_000 + 110_000 / (1 + np.exp(-(3 * residential_share - 2 * r + rng.normal(0, 0.3, n))))
    income = np.round(income, -2)
    income[rng.random(n) < 0.05] = np.nan  # unknown, as census gaps are
    landuse_class = np.argmax(landuse_prob, axis=1).astype(np.int64)

    if crs != "EPSG:32618":
        geometry = geometry.to_crs(crs)
    views = {
        "poi": View("poi", "counts", poi.astype(np.float64), list(POI_CATEGORIES)),
        "landuse": View("landuse", "counts", landuse.astype(np.float64), list(LANDUSE_CLASSES)),
        "mobility": View("mobility", "flow", flow, [str(i) for i in range(n)]),
    }
    priors = geometric_priors(geometry, [flow], priors_config)
    return RegionDataset(
        region_ids=np.arange(n, dtype=np.int64), views=views, priors=priors,
        targets={"crime": crime, "check_in": check_in, "income": income},
        classes={"landuse_class": landuse_class}, geometry=geometry, crs=geometry.crs.to_string(),
        source={"synthetic": f"n_regions={n}, seed={seed}, kind={kind}"},
        report={"warnings": []})


def _grid_cells(n: int) -> np.ndarray:
    side = int(np.ceil(np.sqrt(n)))
    i = np.arange(n)
    x0 = ORIGIN[0] + (i % side) * SPACING
    y0 = ORIGIN[1] + (i // side) * SPACING
    return shapely.box(x0, y0, x0 + SPACING, y0 + SPACING)


def _voronoi_cells(n: int, rng: np.random.Generator) -> np.ndarray:
    side = np.sqrt(n) * SPACING
    seeds = rng.uniform(0, side, size=(n, 2)) + np.array(ORIGIN)
    frame = shapely.box(ORIGIN[0], ORIGIN[1], ORIGIN[0] + side, ORIGIN[1] + side)
    cells = shapely.voronoi_polygons(shapely.multipoints(seeds), extend_to=frame, ordered=True)
    cells = np.asarray(shapely.get_parts(cells))  # (N,) in the order of the seeds
    return shapely.intersection(cells, frame)


def _gravity_trips(centroids: np.ndarray, homes: np.ndarray, attraction: np.ndarray,
                   per_origin: int, rng: np.random.Generator) -> sp.csr_matrix:
    """Sparse OD counts: T_ij ~ Poisson(homes_i * attraction_j * exp(-d_ij / 1.5 km)), top only."""
    from scipy.spatial import cKDTree

    n = len(centroids)
    k = min(n - 1, max(4 * per_origin, 16))
    distance, index = cKDTree(centroids).query(centroids, k=k + 1)  # (N, k + 1), self first
    expected = homes[:, None] * attraction[index] * np.exp(-distance / 1500.0)  # (N, k + 1)
    expected *= 30.0 / np.maximum(expected.sum(axis=1, keepdims=True), 1e-12) \
        * np.sqrt(homes)[:, None]
    keep = np.argsort(-expected, axis=1)[:, :per_origin]  # (N, m) strongest destinations
    rows = np.repeat(np.arange(n), keep.shape[1])
    cols = np.take_along_axis(index, keep, axis=1).ravel()
    counts = rng.poisson(np.take_along_axis(expected, keep, axis=1).ravel())
    matrix = sp.csr_matrix((counts.astype(np.float64), (rows, cols)), shape=(n, n))
    matrix.eliminate_zeros()
    return matrix


def sample_points_in_polygons(polygons, counts, rng: np.random.Generator,
                              max_rounds: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Uniform random points strictly inside polygons: counts[i] points in polygons[i].

    Vectorised rejection sampling in each polygon's bounding box. Returns (owner, x, y), the
    points grouped by polygon in order.
    """
    polygons = np.asarray(polygons)
    counts = np.asarray(counts, dtype=np.int64)
    shapely.prepare(polygons)
    bounds = shapely.bounds(polygons)  # (N, 4)
    box_area = np.maximum((bounds[:, 2] - bounds[:, 0]) * (bounds[:, 3] - bounds[:, 1]), 1e-300)
    fill = np.clip(shapely.area(polygons) / box_area, 0.02, 1.0)  # share of the box inside
    need = counts.copy()
    owners, xs, ys = [], [], []
    for _ in range(max_rounds):
        todo = np.flatnonzero(need > 0)
        if len(todo) == 0:
            break
        draws = np.ceil(need[todo] / fill[todo] * 1.3).astype(np.int64) + 2
        owner = np.repeat(todo, draws)  # (D,) grouped by polygon
        b = bounds[owner]
        x = b[:, 0] + rng.random(len(owner)) * (b[:, 2] - b[:, 0])
        y = b[:, 1] + rng.random(len(owner)) * (b[:, 3] - b[:, 1])
        inside = shapely.contains_xy(polygons[owner], x, y)
        owner, x, y = owner[inside], x[inside], y[inside]
        start = np.searchsorted(owner, owner, side="left")  # first accepted draw of each polygon
        rank = np.arange(len(owner)) - start
        take = rank < need[owner]
        owners.append(owner[take])
        xs.append(x[take])
        ys.append(y[take])
        need -= np.bincount(owner[take], minlength=len(polygons))
    if (need > 0).any():
        raise ValueError(f"{int((need > 0).sum())} polygon(s) are too thin to sample points in")
    owner = np.concatenate(owners) if owners else np.zeros(0, dtype=np.int64)
    order = np.argsort(owner, kind="stable")
    return owner[order], np.concatenate(xs)[order], np.concatenate(ys)[order]


def write_synthetic_layers(city: RegionDataset, folder: str | Path, seed: int = 0) -> dict:
    """Write the city as a user's files; returns the job dict that reads them back.

    `city.gpkg`: layers `regions` (region_id, crime, check_in, income, landuse_class), `pois`
    (category) and `landuse` (class), points placed uniformly inside their region; `trips.csv`
    (origin, destination, trips), only nonzero pairs.
    """
    import geopandas as gpd
    import pandas as pd

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    gpkg = folder / "city.gpkg"
    geometry = city.geometry.reset_index(drop=True)
    regions = gpd.GeoDataFrame({"region_id": city.region_ids, **city.targets,
                                **city.classes}, geometry=geometry, crs=geometry.crs)
    regions.to_file(gpkg, layer="regions", driver="GPKG", engine="pyogrio")
    for layer, view, field in (("pois", "poi", "category"), ("landuse", "landuse", "class")):
        points = points_from_counts(np.asarray(geometry.values), city.views[view].matrix,
                                    city.views[view].columns, rng)
        frame = gpd.GeoDataFrame({field: points[0]}, geometry=gpd.points_from_xy(*points[1:]),
                                 crs=geometry.crs)
        frame.to_file(gpkg, layer=layer, driver="GPKG", engine="pyogrio")
    flow = sp.coo_matrix(city.views["mobility"].matrix)
    trips = folder / "trips.csv"
    pd.DataFrame({"origin": city.region_ids[flow.row], "destination": city.region_ids[flow.col],
                  "trips": flow.data.astype(np.int64)}).to_csv(trips, index=False)
    return {
        "regions": {"path": str(gpkg), "layer": "regions", "id_field": "region_id"},
        "points": [{"path": str(gpkg), "layer": "pois", "category_field": "category"}],
        "landuse": [{"path": str(gpkg), "layer": "landuse", "class_field": "class"}],
        "trips": [{"path": str(trips), "origin_field": "origin",
                   "destination_field": "destination", "weight_field": "trips"}],
        "targets": sorted(city.targets), "classes": sorted(city.classes),
    }


def points_from_counts(polygons, counts: np.ndarray, columns: list[str],
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(category, x, y) of points placed at random inside the polygons, counts[i, c] of each."""
    counts = np.asarray(counts).astype(np.int64)  # (N, C)
    owner, x, y = sample_points_in_polygons(polygons, counts.sum(axis=1), rng)
    per_region = [np.repeat(np.arange(counts.shape[1]), row) for row in counts]
    category = np.concatenate(per_region) if per_region else np.zeros(0, dtype=np.int64)
    names = np.asarray(columns, dtype=object)[category]  # aligned: owner is grouped in order
    return names, x, y
