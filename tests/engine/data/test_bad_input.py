"""Bad input: an InputError naming the layer, the field and the fix, or a repair that is reported."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from engine.data.build import build_dataset
from engine.errors import InputError

CRS = "EPSG:32618"


def regions_file(folder, geometries, crs=CRS, **fields):
    frame = gpd.GeoDataFrame(fields or {"id": np.arange(len(geometries))}, geometry=geometries,
                             crs=crs)
    path = folder / "regions.gpkg"
    frame.to_file(path, layer="regions", engine="pyogrio")
    return str(path)


def two_squares():
    return [shapely.box(0, 0, 10, 10), shapely.box(10, 0, 20, 10)]


def error_of(job) -> InputError:
    with pytest.raises(InputError) as info:
        build_dataset(job)
    return info.value


def test_a_point_layer_is_not_a_region_layer(tmp_path):
    path = regions_file(tmp_path, [shapely.Point(0, 0), shapely.Point(1, 1)])
    err = error_of({"regions": {"path": path}, "targets": ["id"]})
    assert "must hold polygons" in err.message and "Point" in err.message
    assert err.layer == "regions.gpkg" and "polygon" in err.hint


def test_an_empty_region_layer(tmp_path):
    frame = gpd.GeoDataFrame({"id": pd.Series([], dtype="int64")},
                             geometry=gpd.GeoSeries([], crs=CRS), crs=CRS)
    frame.to_file(tmp_path / "empty.gpkg", layer="regions", engine="pyogrio")
    err = error_of({"regions": {"path": str(tmp_path / "empty.gpkg")}})
    assert "empty" in err.message and err.layer == "empty.gpkg"


@pytest.mark.filterwarnings("ignore:'crs' was not provided")
def test_a_layer_without_crs(tmp_path):
    path = regions_file(tmp_path, two_squares(), crs=None)
    err = error_of({"regions": {"path": path, "fields": ["id"]}})
    assert "coordinate reference system" in err.message and "Set its CRS" in err.hint


def test_invalid_polygons_are_repaired_and_reported(tmp_path):
    bowtie = shapely.Polygon([(20, 0), (30, 10), (30, 0), (20, 10)])  # self-intersecting
    path = regions_file(tmp_path, [*two_squares(), bowtie], v=[1.0, 2.0, 3.0])
    messages = []
    d = build_dataset({"regions": {"path": path, "fields": ["v"]}}, log=messages.append)
    assert d.report["repaired"]["regions.gpkg"]["invalid_geometries"] == 1
    assert any("repaired" in m for m in messages)
    assert shapely.is_valid(np.asarray(d.geometry.values)).all()
    assert d.geometry.iloc[2].area == pytest.approx(50.0)  # two triangles of 25


@pytest.mark.parametrize("ids,words", [([1, 1], "not unique"), ([1.0, None], "have no id")])
def test_duplicate_or_missing_region_ids(tmp_path, ids, words):
    path = regions_file(tmp_path, two_squares(), code=ids)
    err = error_of({"regions": {"path": path, "id_field": "code"}})
    assert words in err.message and err.field == "code"


def test_a_missing_field_lists_the_available_ones(tmp_path):
    path = regions_file(tmp_path, two_squares(), id=[1, 2], crime=[3.0, 4.0])
    err = error_of({"regions": {"path": path, "fields": ["id"]}, "targets": ["crimes"]})
    assert err.field == "crimes" and "crime" in err.hint and "id" in err.hint
    assert "geometry" not in err.hint


def test_text_and_all_null_targets(tmp_path):
    path = regions_file(tmp_path, two_squares(), id=[1, 2], kind=["a", "b"],
                        empty=[None, None], num_text=["1.5", "2"])
    err = error_of({"regions": {"path": path, "fields": ["id"]}, "targets": ["kind"]})
    assert "text" in err.message and err.field == "kind" and "to_real" in err.hint
    err = error_of({"regions": {"path": path, "fields": ["id"]}, "targets": ["empty"]})
    assert "null" in err.message and err.field == "empty"
    d = build_dataset({"regions": {"path": path, "fields": ["id"]}, "targets": ["num_text"]})
    np.testing.assert_array_equal(d.targets["num_text"], [1.5, 2.0])  # numbers stored as text


def test_a_target_used_as_input_field_is_refused(tmp_path):
    path = regions_file(tmp_path, two_squares(), id=[1, 2], crime=[3.0, 4.0])
    err = error_of({"regions": {"path": path, "fields": ["crime"]}, "targets": ["crime"]})
    assert err.field == "crime" and "must not be an input" in err.hint


def test_no_view_at_all(tmp_path):
    path = regions_file(tmp_path, two_squares(), id=[1, 2], crime=[3.0, 4.0])
    err = error_of({"regions": {"path": path}, "targets": ["crime"]})
    assert "no view" in err.message


def test_missing_file_and_unknown_layer(tmp_path, tiny_layers):
    tiny_layers["points"][0]["path"] = str(tmp_path / "nope.gpkg")
    err = error_of(tiny_layers)
    assert "does not exist" in err.message and err.layer.endswith("nope.gpkg")
    tiny_layers["points"][0].update(path=tiny_layers["landuse"][0]["path"], layer="poi")
    err = error_of(tiny_layers)
    assert "no layer named 'poi'" in err.message and "pois" in err.hint


def test_a_file_with_several_layers_needs_a_name(tmp_path, tiny_layers):
    tiny_layers["points"][0]["layer"] = None  # layers.gpkg holds pois (points), landuse (polygons)
    d = build_dataset(tiny_layers)  # only one point layer: it is the one meant
    assert d.views["poi"].columns == ["food", "shop"]
    path = regions_file(tmp_path, two_squares(), v=[1.0, 2.0])
    gpd.read_file(path).to_file(path, layer="copy", engine="pyogrio")
    err = error_of({"regions": {"path": path, "fields": ["v"]}})
    assert "several layers" in err.message and "regions, copy" in err.hint
    assert "layername=" in err.hint


def test_points_outside_every_region(tmp_path, tiny_layers, tiny_grid):
    far = gpd.GeoDataFrame({"type": ["a", "b"]}, geometry=[shapely.Point(0, 0),
                                                          shapely.Point(1, 1)], crs=CRS)
    far.to_file(tmp_path / "far.gpkg", engine="pyogrio")
    tiny_layers["points"] = [{"path": str(tmp_path / "far.gpkg"), "category_field": "type"}]
    err = error_of(tiny_layers)
    assert "no point" in err.message and err.layer == "far.gpkg"


def test_od_ids_that_match_no_region(tiny_layers):
    path = tiny_layers["trips"][0]["path"]
    pd.DataFrame({"from": [1, 2], "to": [2, 3], "n": [5, 6]}).to_csv(path, index=False)
    err = error_of(tiny_layers)
    assert "match a region id" in err.message and "R01" in err.message
    assert err.field == "from" and err.layer == "trips.csv"


def test_od_table_without_origin_field(tiny_layers):
    tiny_layers["trips"][0]["origin_field"] = "origin"
    err = error_of(tiny_layers)
    assert err.field == "origin" and "from" in err.hint and "to" in err.hint


def test_a_raster_that_does_not_overlap(tmp_path, tiny_layers):
    import rasterio
    from affine import Affine

    with rasterio.open(tmp_path / "far.tif", "w", driver="GTiff", width=2, height=2, count=1,
                       dtype="float32", crs=CRS, transform=Affine(10, 0, 0, 0, -10, 100)) as dst:
        dst.write(np.ones((1, 2, 2), dtype="float32"))
    tiny_layers["rasters"] = [{"path": str(tmp_path / "far.tif")}]
    err = error_of(tiny_layers)
    assert "does not overlap" in err.message and err.layer == "far.tif"


def test_a_raster_without_crs(tmp_path, tiny_layers):
    import rasterio
    from affine import Affine

    with rasterio.open(tmp_path / "nocrs.tif", "w", driver="GTiff", width=2, height=2, count=1,
                       dtype="float32", transform=Affine(10, 0, 0, 0, -10, 100)) as dst:
        dst.write(np.ones((1, 2, 2), dtype="float32"))
    tiny_layers["rasters"] = [{"path": str(tmp_path / "nocrs.tif"), "stats": ["median"]}]
    err = error_of(tiny_layers)
    assert "unknown raster statistic median" in err.message
    tiny_layers["rasters"] = [{"path": str(tmp_path / "nocrs.tif")}]
    err = error_of(tiny_layers)
    assert "coordinate reference system" in err.message


def test_landuse_without_class_field(tiny_layers):
    tiny_layers["landuse"][0]["class_field"] = None
    err = error_of(tiny_layers)
    assert "class field" in err.message and "|class=FIELD" in err.hint
