"""Shared fixtures for engine tests: tiny layers on disk, the dataset built from them, Manhattan.

- `write_tiny_layers(folder, **changes)` (fixture `tiny_layer_writer`) writes a 3 x 4 grid of
  500 m regions with POIs, land-use polygons, trips and a raster whose aggregates are known by
  construction (see `TINY_EXPECTED`), and returns the job dict that reads them;
- `tiny_layers`: that job for a fresh tmp folder; `tiny_dataset`: the RegionDataset built from it
  (12 regions, views fields/poi/landuse/mobility/raster, targets crime and price, class zone);
- `tiny_expected`, `tiny_grid`: the known aggregates and the grid's geometry;
- `manhattan_benchmark`: the Manhattan-180 benchmark folder loaded (skipped where absent).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
MANHATTAN = SHARED_DATA / "manhattan"

ROWS, COLS, CELL = 3, 4, 500.0  # the tiny grid: 3 rows x 4 columns of 500 m squares
X0, Y0 = 583_000.0, 4_505_000.0  # south-west corner, EPSG:32618
TINY_CRS = "EPSG:32618"


def _cells():
    import shapely

    i = np.arange(ROWS * COLS)
    x = X0 + (i % COLS) * CELL
    y = Y0 + (i // COLS) * CELL
    return shapely.box(x, y, x + CELL, y + CELL), x, y


def tiny_expected() -> dict:
    """What the tiny layers aggregate to, by construction (region i = feature i)."""
    n = ROWS * COLS
    i = np.arange(n)
    food = (i % 3) + 1  # (N,) food POIs per region
    shop = (i % 2 == 0).astype(float)  # one shop in even regions
    flow = np.zeros((n, n))
    for o in range(n):
        flow[o, (o + 1) % n] += 10 + o
        flow[o, (o + 5) % n] += 2
    return {
        "ids": np.array([f"R{k:02d}" for k in range(1, n + 1)], dtype=object),
        "poi": np.column_stack([food, shop]).astype(float),  # columns food, shop
        "landuse": np.column_stack([np.full(n, 0.25), np.full(n, 0.5)]),  # park, residential
        "flow": flow,
        "column": (i % COLS).astype(float),  # raster band 1 = the cell's column
        "crime": np.where(i == 3, np.nan, 10.0 + 2 * i),
        "price": (100 + 10 * i).astype(float),
    }


def write_tiny_layers(folder: Path, *, region_crs: str = TINY_CRS, points_crs: str | None = None,
                      driver: str = "GPKG") -> dict:
    """Write the tiny layers into `folder`; returns the job dict reading all of them.

    region_crs / points_crs: reproject the regions / the POIs (to test CRS handling).
    driver: "GPKG", "ESRI Shapefile" or "GeoJSON" for the region layer.
    """
    import geopandas as gpd
    import pandas as pd
    import rasterio
    import shapely
    from affine import Affine

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    exp = tiny_expected()
    n = ROWS * COLS
    cells, x, y = _cells()
    regions = gpd.GeoDataFrame({
        "code": exp["ids"].astype(str), "name": [f"Block {k}" for k in range(1, n + 1)],
        "pop": np.arange(n) * 100.0, "jobs": np.arange(n) % 5,
        "crime": exp["crime"], "price": exp["price"].astype(np.int64),
        "zone": np.where(np.arange(n) < 6, "south", "north"),
    }, geometry=cells, crs=TINY_CRS).to_crs(region_crs)
    suffix = {"GPKG": ".gpkg", "ESRI Shapefile": ".shp", "GeoJSON": ".geojson"}[driver]
    region_path = folder / f"regions{suffix}"
    layer = "blocks" if driver == "GPKG" else None
    regions.to_file(region_path, layer=layer, driver=driver, engine="pyogrio")

    # POIs: region i gets (i % 3) + 1 food points and, if i is even, one shop; 2 points outside
    px, py, category = [], [], []
    for k in range(n):
        for j in range(int(exp["poi"][k, 0])):
            px.append(x[k] + 60 + 100 * j)
            py.append(y[k] + 250)
            category.append("food")
        if exp["poi"][k, 1]:
            px.append(x[k] + 250)
            py.append(y[k] + 400)
            category.append("shop")
    px += [X0 - 1000, X0 + 10 * CELL]
    py += [Y0 - 1000, Y0 + 10 * CELL]
    category += ["food", "shop"]
    pois = gpd.GeoDataFrame({"type": category}, geometry=gpd.points_from_xy(px, py), crs=TINY_CRS)
    if points_crs:
        pois = pois.to_crs(points_crs)
    layers = folder / "layers.gpkg"
    pois.to_file(layers, layer="pois", driver="GPKG", engine="pyogrio")

    # land use: the left half of each cell residential, the top-right quarter park
    left = shapely.box(x, y, x + CELL / 2, y + CELL)
    park = shapely.box(x + CELL / 2, y + CELL / 2, x + CELL, y + CELL)
    landuse = gpd.GeoDataFrame({"lu": ["residential"] * n + ["park"] * n},
                               geometry=np.concatenate([left, park]), crs=TINY_CRS)
    landuse.to_file(layers, layer="landuse", driver="GPKG", engine="pyogrio")

    origin, destination = np.nonzero(exp["flow"])
    pd.DataFrame({"from": exp["ids"][origin], "to": exp["ids"][destination],
                  "n": exp["flow"][origin, destination]}).to_csv(folder / "trips.csv", index=False)

    pixel = 50.0
    width, height = int(COLS * CELL / pixel), int(ROWS * CELL / pixel)
    column = np.floor(np.arange(width) * pixel / CELL)
    band1 = np.tile(column, (height, 1)).astype("float32")  # (rows, cols)
    band2 = np.ones_like(band1)
    raster = folder / "raster.tif"
    with rasterio.open(raster, "w", driver="GTiff", width=width, height=height, count=2,
                       dtype="float32", crs=TINY_CRS, nodata=-9999.0,
                       transform=Affine(pixel, 0, X0, 0, -pixel, Y0 + ROWS * CELL)) as dst:
        dst.write(np.stack([band1, band2]))

    return {
        "regions": {"path": str(region_path), "layer": layer, "id_field": "code",
                    "name_field": "name", "fields": ["pop", "jobs"]},
        "points": [{"path": str(layers), "layer": "pois", "category_field": "type"}],
        "landuse": [{"path": str(layers), "layer": "landuse", "class_field": "lu"}],
        "trips": [{"path": str(folder / "trips.csv"), "origin_field": "from",
                   "destination_field": "to", "weight_field": "n"}],
        "rasters": [{"path": str(raster), "stats": ["mean", "sum", "std"]}],
        "targets": ["crime", "price"],
        "classes": ["zone"],
    }


@pytest.fixture
def tiny_grid() -> dict:
    """The tiny grid's geometry: rows, cols, cell size (m), south-west corner, CRS."""
    return {"rows": ROWS, "cols": COLS, "cell": CELL, "x0": X0, "y0": Y0, "crs": TINY_CRS}


@pytest.fixture(name="tiny_expected")
def tiny_expected_fixture() -> dict:
    """What the tiny layers aggregate to (ids, poi, landuse, flow, raster column, targets)."""
    return tiny_expected()


@pytest.fixture
def tiny_layer_writer():
    """The function `write_tiny_layers(folder, **changes) -> job dict`."""
    return write_tiny_layers


@pytest.fixture
def tiny_layers(tmp_path) -> dict:
    """A job dict reading the tiny layers written to a fresh tmp folder."""
    return write_tiny_layers(tmp_path / "tiny")


@pytest.fixture
def tiny_dataset(tiny_layers):
    """The 12-region RegionDataset built from the tiny layers by the engine's readers."""
    from engine.data.build import build_dataset

    return build_dataset(tiny_layers)


@pytest.fixture(scope="session")
def manhattan_dir() -> Path:
    if not (MANHATTAN / "poi_dist.npy").exists():
        pytest.skip(f"the Manhattan benchmark folder is not at {MANHATTAN}")
    return MANHATTAN


@pytest.fixture(scope="session")
def manhattan_benchmark(manhattan_dir):
    """Manhattan-180 loaded with the benchmark loader (geometry from mh-180.shp)."""
    from engine.data.benchmark import load_benchmark_folder

    return load_benchmark_folder(manhattan_dir)


def write_hafusion_folder(folder: Path, n: int = 30, seed: int = 0) -> Path:
    """A folder as HAFusion ships data_Chi / data_SF: the three views, the targets, its
    precomputed similarity and adjacency files, and no shapefile or centroids."""
    rng = np.random.default_rng(seed)
    folder.mkdir()
    poi = rng.poisson(3.0, (n, 26)).astype(np.int32)
    np.save(folder / "poi_dist.npy", poi)
    np.save(folder / "landUse_dist.npy", rng.poisson(2.0, (n, 12)).astype(np.int32))
    trips = rng.poisson(4.0, (n, n)).astype(np.int64)
    np.save(folder / "mob_dist.npy", trips)
    np.save(folder / "mob-adj.npy", trips.astype(np.float64))
    np.save(folder / "poi_simi.npy", np.corrcoef(poi))
    np.save(folder / "landUse_simi.npy", np.eye(n))
    np.save(folder / "crime_counts.npy", rng.poisson(50.0, n).astype(np.float64))
    check_in = rng.poisson(80.0, n).astype(np.int64)
    check_in[:4] = 0  # regions without check-ins
    np.save(folder / "check_counts.npy", check_in)
    np.save(folder / "serviceCall_counts.npy", rng.poisson(200.0, n).astype(np.int32))
    return folder


@pytest.fixture(name="hafusion_folder")
def hafusion_folder_fixture():
    """`write_hafusion_folder(folder, n=30, seed=0)`: a benchmark folder as HAFusion ships its
    Chicago and San Francisco data; the folder's name decides its city."""
    return write_hafusion_folder
