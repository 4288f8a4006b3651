"""Every reader on tiny layers whose aggregates are known by construction."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from engine.data.build import build_dataset, parse_source, prepare_summary_text
from engine.data.dataset import RegionDataset
from engine.data.layers import Report, id_keys
from engine.data.regions import read_regions

TINY_CRS = "EPSG:32618"
CELL, X0, Y0 = 500.0, 583_000.0, 4_505_000.0  # as tests/engine/conftest.py writes them


def test_parse_source_splits_layer_and_options():
    assert parse_source("city.gpkg") == ("city.gpkg", None, {})
    assert parse_source("/d/city.gpkg|layername=pois|category=type|view=shops") == (
        "/d/city.gpkg", "pois", {"category": "type", "view": "shops"})
    assert parse_source("trips.csv|origin=o|destination=d|weight=n")[2] == {
        "origin": "o", "destination": "d", "weight": "n"}


def test_id_keys_match_numbers_and_text():
    assert list(id_keys(pd.Series([3, 4]))) == ["3", "4"]
    assert list(id_keys(pd.Series([3.0, np.nan]))) == ["3", None]
    assert list(id_keys(pd.Series(["3", "R01", " 4.0"]))) == ["3", "R01", "4"]


def test_tiny_dataset_has_every_view_with_the_known_aggregates(tiny_dataset: RegionDataset,
                                                               tiny_expected):
    exp = tiny_expected
    d = tiny_dataset
    assert d.n_regions == 12
    assert list(d.region_ids) == list(exp["ids"])
    assert d.names[0] == "Block 1"
    assert d.crs == TINY_CRS and d.priors.crs == TINY_CRS
    assert d.views["fields"].columns == ["pop", "jobs"]
    np.testing.assert_array_equal(d.views["fields"].matrix[:, 0], np.arange(12) * 100.0)
    assert d.views["poi"].kind == "counts" and d.views["poi"].columns == ["food", "shop"]
    np.testing.assert_array_equal(d.views["poi"].matrix, exp["poi"])
    assert d.report["dropped"]["layers.gpkg|layername=pois"]["outside_regions"] == 2
    assert d.views["landuse"].kind == "shares"
    assert d.views["landuse"].columns == ["park", "residential"]
    np.testing.assert_allclose(d.views["landuse"].matrix, exp["landuse"], atol=1e-9)
    flow = d.views["mobility"].matrix
    assert d.views["mobility"].kind == "flow" and flow.format == "csr"
    np.testing.assert_array_equal(flow.toarray(), exp["flow"])
    np.testing.assert_array_equal(d.priors.mobility_out, exp["flow"].sum(axis=1))
    raster = d.views["raster"]
    assert raster.columns == ["band1_mean", "band1_sum", "band1_std",
                              "band2_mean", "band2_sum", "band2_std"]
    np.testing.assert_allclose(raster.matrix[:, 0], exp["column"])
    np.testing.assert_allclose(raster.matrix[:, 4], 100.0)  # 10 x 10 pixels of 1 per cell
    np.testing.assert_allclose(raster.matrix[:, 2], 0.0, atol=1e-6)
    np.testing.assert_array_equal(d.targets["crime"], exp["crime"])  # NaN where null
    assert d.targets["price"].dtype == np.float64
    assert sorted(np.unique(d.classes["zone"])) == ["north", "south"]
    text = prepare_summary_text(d)
    assert "12 regions" in text and "poi (counts): 2 columns" in text
    assert "2 outside regions" in text


@pytest.mark.parametrize("driver", ["ESRI Shapefile", "GeoJSON"])
def test_region_layer_from_shapefile_and_geojson(tmp_path, tiny_layer_writer, tiny_expected,
                                                 driver):
    job = tiny_layer_writer(tmp_path, driver=driver, region_crs="EPSG:4326")
    layer = read_regions(job["regions"]["path"], id_field="code", targets=["crime"])
    assert layer.n_regions == 12 and layer.frame.crs.to_epsg() == 4326
    np.testing.assert_array_equal(layer.targets["crime"], tiny_expected["crime"])


def test_feature_order_ids_and_geographic_layer_projected_to_utm(tmp_path, tiny_layer_writer,
                                                                 tiny_expected):
    job = tiny_layer_writer(tmp_path, region_crs="EPSG:4326")
    job["regions"].pop("id_field")
    job["trips"] = []  # its ids are codes, not feature numbers
    d = build_dataset(job)
    np.testing.assert_array_equal(d.region_ids, np.arange(12))
    assert d.crs == "EPSG:4326" and d.priors.crs == "EPSG:32618"
    np.testing.assert_allclose(d.priors.area, CELL * CELL, rtol=1e-3)
    np.testing.assert_array_equal(d.views["poi"].matrix, tiny_expected["poi"])
    # the POIs are in EPSG:32618 like the original cells, unlike the region layer: reported
    assert "layers.gpkg|layername=pois" in d.report["reprojected"]
    assert any("reprojected" in w for w in d.report["warnings"])


def test_points_without_category_make_one_count_column(tiny_layers, tiny_expected):
    tiny_layers["points"] = [{"path": tiny_layers["points"][0]["path"], "layer": "pois",
                              "view": "shops_and_food"}]
    d = build_dataset(tiny_layers)
    view = d.views["shops_and_food"]
    assert view.columns == ["count"]
    np.testing.assert_array_equal(view.matrix[:, 0], tiny_expected["poi"].sum(axis=1))


def test_landuse_points_give_counts(tmp_path):
    regions = gpd.GeoDataFrame({"id": [1, 2]}, geometry=[shapely.box(0, 0, 10, 10),
                                                        shapely.box(10, 0, 20, 10)], crs=TINY_CRS)
    regions.to_file(tmp_path / "r.gpkg", layer="r", engine="pyogrio")
    points = gpd.GeoDataFrame({"cls": [3, 3, 10, 3]},
                              geometry=gpd.points_from_xy([1, 2, 3, 15], [1, 1, 1, 5]), crs=TINY_CRS)
    points.to_file(tmp_path / "lu.gpkg", layer="lu", engine="pyogrio")
    d = build_dataset({"regions": {"path": str(tmp_path / "r.gpkg")},
                       "landuse": [{"path": f"{tmp_path / 'lu.gpkg'}|class=cls"}]})
    view = d.views["landuse"]
    assert view.kind == "counts" and view.columns == ["3", "10"]  # numbers in numeric order
    np.testing.assert_array_equal(view.matrix, [[2, 1], [1, 0]])


def test_trips_from_a_geopackage_table_and_from_lines(tiny_layers, tiny_expected):
    exp = tiny_expected
    gpkg = tiny_layers["points"][0]["path"]
    table = pd.read_csv(tiny_layers["trips"][0]["path"])
    import pyogrio

    pyogrio.write_dataframe(table, gpkg, layer="od", driver="GPKG")
    tiny_layers["trips"] = [{"path": f"{gpkg}|layername=od|origin=from|destination=to|weight=n"}]
    d = build_dataset(tiny_layers)
    np.testing.assert_array_equal(d.views["mobility"].matrix.toarray(), exp["flow"])

    centre = np.array([(X0 + (k % 4) * CELL + 250, Y0 + (k // 4) * CELL + 250) for k in range(12)])
    lines = [shapely.LineString([centre[0], centre[5], centre[2]]),
             shapely.MultiLineString([[centre[3], centre[4]], [centre[6], centre[7]]]),
             shapely.LineString([centre[1], (X0 - 500, Y0)])]  # ends outside: dropped
    gpd.GeoDataFrame(geometry=lines, crs=TINY_CRS).to_file(gpkg, layer="lines", engine="pyogrio")
    tiny_layers["trips"] = [{"path": gpkg, "layer": "lines"}]
    d = build_dataset(tiny_layers)
    flow = d.views["mobility"].matrix.toarray()
    assert flow[0, 2] == 1 and flow[3, 7] == 1 and flow.sum() == 2
    assert d.report["dropped"]["layers.gpkg|layername=lines"]["outside_regions"] == 1


def test_od_rows_with_unknown_ids_are_dropped_and_counted(tiny_layers, tiny_expected):
    path = tiny_layers["trips"][0]["path"]
    table = pd.read_csv(path)
    pd.concat([table, pd.DataFrame({"from": ["R99", "R01"], "to": ["R01", "nowhere"],
                                    "n": [5, 5]})]).to_csv(path, index=False)
    messages = []
    d = build_dataset(tiny_layers, log=messages.append)
    np.testing.assert_array_equal(d.views["mobility"].matrix.toarray(), tiny_expected["flow"])
    assert d.report["dropped"]["trips.csv"]["unknown_region_ids"] == 2
    assert any("trips.csv" in m and "2 of" in m for m in messages)


def test_raster_in_another_crs_and_regions_smaller_than_a_pixel(tmp_path):
    import rasterio
    from affine import Affine

    values = np.arange(16, dtype="float32").reshape(4, 4)  # 4 x 4 pixels of 100 m
    with rasterio.open(tmp_path / "r.tif", "w", driver="GTiff", width=4, height=4, count=1,
                       dtype="float32", crs=TINY_CRS,
                       transform=Affine(100, 0, X0, 0, -100, Y0 + 400)) as dst:
        dst.write(values[None])
    small = shapely.box(X0 + 110, Y0 + 310, X0 + 120, Y0 + 320)  # inside pixel (row 0, col 1)
    big = shapely.box(X0, Y0, X0 + 200, Y0 + 200)  # the 4 bottom-left pixels: 8, 9, 12, 13
    regions = gpd.GeoDataFrame({"id": [1, 2]}, geometry=[small, big], crs=TINY_CRS)
    regions.to_crs("EPSG:4326").to_file(tmp_path / "r.gpkg", engine="pyogrio")
    report = Report()
    from engine.data.rasters import raster_view

    layer = read_regions(str(tmp_path / "r.gpkg"))
    view = raster_view(str(tmp_path / "r.tif"), layer.frame.geometry.values, layer.frame.crs,
                       stats=["mean", "count"], report=report)
    np.testing.assert_allclose(view.matrix[:, 0], [1.0, 10.5], atol=1e-4)
    np.testing.assert_array_equal(view.matrix[:, 1], [1, 4])
    assert "r.tif" in report.data["reprojected"]
