"""Build resources/demo/manhattan.gpkg from the Manhattan-180 benchmark folder.

Run with the engine's Python from the project root:

    .venv/bin/python resources/demo/build_demo.py [--source ../shared/data/manhattan]

Layers (EPSG:4326, as the source shapefile):
- `regions`: the 180 polygons; region_id, crime, check_in, service_call, carbon, income
  (0 = unknown in the source, written as NULL), landuse_class;
- `pois`: one point per counted POI, `category` poi_00..poi_25;
- `landuse`: one point per counted land-use parcel, `class` lu_00..lu_10;
- `trips`: attribute table origin, destination, trips (only nonzero pairs).
Every count is real; the point positions are not published, so each point is placed uniformly
at random inside its region (fixed seed). Reading the layers back with the engine gives exactly
the benchmark's arrays (tests/engine/data/test_demo.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import geopandas as gpd  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyogrio  # noqa: E402
import shapely  # noqa: E402

from engine.data.synthetic import points_from_counts  # noqa: E402

SOURCE = ROOT.parent / "shared" / "data" / "manhattan"
OUTPUT = ROOT / "resources" / "demo" / "manhattan.gpkg"
SEED = 20240517
TARGETS = {"crime": "crime_counts.npy", "check_in": "check_counts.npy",
           "service_call": "serviceCall_counts.npy", "carbon": "carbon_counts.npy",
           "income": "income_counts.npy"}


def exclusive_parts(polygons: np.ndarray) -> np.ndarray:
    """Each polygon minus its overlaps with the others, so a point inside it is in it alone."""
    tree = shapely.STRtree(polygons)
    a, b = tree.query(polygons, predicate="overlaps")
    out = polygons.copy()
    for i in np.unique(a):
        others = shapely.union_all(polygons[b[a == i]])
        out[i] = shapely.difference(polygons[i], others)
    return out


def build(source: Path, output: Path) -> None:
    shapes = gpd.read_file(source / "mh-180.shp", engine="pyogrio")
    shapes = shapes.sort_values("region_id").reset_index(drop=True)
    n = len(shapes)
    assert (shapes["region_id"].to_numpy() == np.arange(n)).all(), "region_id must be 0..N-1"
    regions = gpd.GeoDataFrame({"region_id": shapes["region_id"].astype(np.int64)},
                               geometry=shapes.geometry, crs=shapes.crs)
    for name, file in TARGETS.items():
        values = np.load(source / file).ravel()
        if name == "income":  # 0 = no estimate: NULL, so that nobody trains on it
            regions[name] = pd.Series(np.where(values == 0, np.nan, values), dtype="float64")
        elif np.issubdtype(values.dtype, np.integer):
            regions[name] = values.astype(np.int64)
        else:
            regions[name] = values.astype(np.float64)
    clusters = json.loads((source / "landuse_clusters.json").read_text(encoding="utf-8"))
    regions["landuse_class"] = np.array([int(clusters[str(i)]) for i in range(n)], dtype=np.int64)

    output.parent.mkdir(parents=True, exist_ok=True)
    if output.exists():
        output.unlink()
    regions.to_file(output, layer="regions", driver="GPKG", engine="pyogrio")

    rng = np.random.default_rng(SEED)
    inside = exclusive_parts(np.asarray(regions.geometry.values))
    for layer, file, prefix, field in (("pois", "poi_dist.npy", "poi", "category"),
                                       ("landuse", "landUse_dist.npy", "lu", "class")):
        counts = np.load(source / file)  # (N, C)
        columns = [f"{prefix}_{i:02d}" for i in range(counts.shape[1])]
        names, x, y = points_from_counts(inside, counts, columns, rng)
        points = gpd.GeoDataFrame({field: names.astype(str)}, geometry=gpd.points_from_xy(x, y),
                                  crs=regions.crs)
        points.to_file(output, layer=layer, driver="GPKG", engine="pyogrio")

    flow = np.load(source / "mob_dist.npy")  # (N, N), row = origin
    origin, destination = np.nonzero(flow)
    trips = pd.DataFrame({"origin": origin.astype(np.int64),
                          "destination": destination.astype(np.int64),
                          "trips": flow[origin, destination].astype(np.int64)})
    pyogrio.write_dataframe(trips, output, layer="trips", driver="GPKG")
    size = output.stat().st_size / 1024**2
    print(f"wrote {output} ({size:.1f} MB): {n} regions, {int(np.load(source / 'poi_dist.npy').sum())}"
          f" POIs, {int(np.load(source / 'landUse_dist.npy').sum())} land-use points, "
          f"{len(trips)} OD pairs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    build(args.source, args.output)


if __name__ == "__main__":
    main()
