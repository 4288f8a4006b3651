"""Fuzzing the readers: whatever layers a user points at, `build_dataset` gives a valid
RegionDataset or an InputError that names the problem, never another exception.

Hypothesis draws region layers (rectangles, overlapping, degenerate, self-intersecting, empty or
missing geometries, points among the polygons), CRSs (EPSG:4326, EPSG:3857, UTM 18N, none),
fields of every type with nulls, ids that repeat or are missing, and point layers in another
CRS or empty; each drawn case is written to a GeoPackage or GeoJSON file and read back.
Bounded (30 examples, no deadline) so the suite stays fast.
"""

from __future__ import annotations

import math
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from engine.data.dataset import RegionDataset
from engine.errors import InputError

build = pytest.importorskip("engine.data.build", reason="engine/data/build.py does not exist yet")

# Where each CRS's sample city lies, and a typical region size, in the CRS's own units.
CRS_FRAMES = {
    "EPSG:4326": ((-74.02, 40.70), 0.004),
    "EPSG:3857": ((-8238000.0, 4970000.0), 400.0),
    "EPSG:32618": ((583000.0, 4507000.0), 400.0),
}
FUZZ = settings(max_examples=3, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])


GEOMETRY_FAULTS = ("overlap", "sliver", "bowtie", "multi", "point", "empty", "null geometry")
FIELD_FAULTS = ("text", "numeric text", "bool", "all null", "mostly null")
OTHER_FAULTS = ("no crs", "repeated id", "null id", "missing field", "missing target",
                "target is a field", "empty points", "no category field", "odd categories",
                "one region", "no view")
FAULTS = (*GEOMETRY_FAULTS, *FIELD_FAULTS, *OTHER_FAULTS)


def _geometry(shape: str, x: float, y: float, size: float):
    """One region's geometry: a grid cell, or something a real layer holds."""
    from shapely.geometry import MultiPolygon, Point, Polygon, box

    if shape == "cell":
        return box(x, y, x + size, y + size)
    if shape == "overlap":
        return box(x - size / 2, y - size / 2, x + size, y + size)
    if shape == "sliver":
        return Polygon([(x, y), (x + size, y), (x + 2 * size, y)])  # zero area
    if shape == "bowtie":  # self-intersecting: invalid, to be repaired
        return Polygon([(x, y), (x + size, y + size), (x + size, y), (x, y + size)])
    if shape == "multi":
        return MultiPolygon([box(x, y, x + size / 3, y + size / 3),
                             box(x + size / 2, y + size / 2, x + size, y + size)])
    if shape == "point":
        return Point(x + size / 2, y + size / 2)
    if shape == "empty":
        return Polygon()
    assert shape == "null geometry", shape
    return None


def _column(draw, n: int, kind: str) -> list:
    """A field's values of one kind; numbers carry a few nulls."""
    nulls = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    if kind == "all null":
        return [None] * n
    if kind == "int":
        return draw(st.lists(st.integers(-1000, 10**6), min_size=n, max_size=n))
    if kind == "float":
        values = draw(st.lists(st.floats(-1e6, 1e6) | st.just(math.nan), min_size=n, max_size=n))
        nulls = [False] * n if not any(nulls) else [i == nulls.index(True) for i in range(n)]
    elif kind == "mostly null":
        values = draw(st.lists(st.floats(0, 100), min_size=n, max_size=n))
        nulls = [i != 0 for i in range(n)]
    elif kind == "text":
        values = draw(st.lists(st.text(min_size=0, max_size=6), min_size=n, max_size=n))
    elif kind == "numeric text":
        values = [str(v) for v in draw(st.lists(st.integers(0, 99), min_size=n, max_size=n))]
    else:
        values = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return [None if null else value for value, null in zip(values, nulls, strict=True)]


@st.composite
def layers_and_spec(draw, fault: str):
    """A grid of regions with numeric fields and points, with one fault (or "none") applied."""
    import geopandas as gpd
    from shapely.geometry import Point

    n = 1 if fault == "one region" else draw(st.integers(3, 12))
    crs = draw(st.sampled_from([*CRS_FRAMES]))
    (x0, y0), size = CRS_FRAMES[crs]
    shapes = ["cell"] * n
    if fault in GEOMETRY_FAULTS:
        shapes[draw(st.integers(0, n - 1))] = fault
    geometry = [_geometry(shape, x0 + (i % 4) * size, y0 + (i // 4) * size, size)
                for i, shape in enumerate(shapes)]
    columns = {"f0": _column(draw, n, draw(st.sampled_from(["float", "int"]))),
               "f1": _column(draw, n, fault if fault in FIELD_FAULTS else "float"),
               "t": _column(draw, n, "float")}
    id_kind = draw(st.sampled_from(["feature order", "int", "text"]))
    if fault == "repeated id":
        id_kind, columns["rid"] = "repeated", [i % max(n - 1, 1) for i in range(n)]
    elif fault == "null id":
        id_kind, columns["rid"] = "null", [None if i == 0 else f"R{i}" for i in range(n)]
    elif id_kind == "int":
        columns["rid"] = list(range(100, 100 + n))
    elif id_kind == "text":
        columns["rid"] = [f"R-{i}" for i in range(n)]
    regions = gpd.GeoDataFrame(columns, geometry=geometry,
                               crs=None if fault == "no crs" else crs)

    fields = ["f0", "f1"] if draw(st.booleans()) or fault in FIELD_FAULTS else []
    if fault == "missing field":
        fields = ["f0", "missing"]
    targets = {"missing target": ["missing"], "target is a field": ["f0"]}.get(
        fault, ["t"] if draw(st.booleans()) else [])
    if fault == "target is a field":
        fields = ["f0"]
    spec = {"regions": {"layer": "regions", "fields": fields,
                        "id_field": None if id_kind == "feature order" else "rid"},
            "targets": targets}

    points = None
    if fault != "no view" and (not fields or draw(st.booleans())):
        n_points = 0 if fault == "empty points" else draw(st.integers(1, 40))
        rng = np.random.default_rng(draw(st.integers(0, 2**16)))
        xy = rng.uniform(0, 1, size=(n_points, 2)) * [4 * size, 3 * size] + [x0, y0]
        pool = ["shop", "park", None, "", "3"] if fault == "odd categories" else ["shop", "park"]
        points = gpd.GeoDataFrame(
            {"cat": draw(st.lists(st.sampled_from(pool), min_size=n_points, max_size=n_points))},
            geometry=[Point(x, y) for x, y in xy], crs=crs)
        point_crs = draw(st.sampled_from([*CRS_FRAMES]))
        if point_crs != crs:
            points = points.to_crs(point_crs)  # the reader must bring it to the regions' CRS
        spec["points"] = [{"layer": "poi", "view": "poi",
                           "category_field": None if fault == "no category field" else "cat"}]
    if fault == "no view":
        spec["regions"]["fields"] = []
    fmt = draw(st.sampled_from(["gpkg", "geojson"]))
    # A GeoJSON file without a CRS is read as EPSG:4326; metre coordinates in it are the known
    # failure test_metre_coordinates_read_as_lon_lat_are_an_input_error shows. Drop this line
    # when that test passes.
    assume(not (fault == "no crs" and fmt == "geojson" and crs != "EPSG:4326"))
    return regions, points, spec, fmt


def _write(frame, path: Path, layer: str, fmt: str) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "crs was not provided": a layer without CRS is a case
            if fmt == "gpkg":
                frame.to_file(path, layer=layer, driver="GPKG", engine="pyogrio")
            else:
                frame.to_file(path, driver="GeoJSON", engine="pyogrio")
    except Exception:  # the fuzzer drew something GDAL itself cannot write: not a reader case
        assume(False)


def _check_valid(dataset: RegionDataset, n_features: int) -> None:
    n = dataset.n_regions
    assert 1 <= n <= n_features
    assert len(dataset.region_ids) == n
    assert len(set(map(str, dataset.region_ids))) == n, "region ids are not unique"
    for name, view in dataset.views.items():
        assert view.matrix.shape[0] == n, name
        if view.kind == "flow":
            assert sp.issparse(view.matrix) and view.matrix.shape == (n, n)
            continue
        matrix = np.asarray(view.matrix, dtype=float)
        assert len(view.columns) == view.width, name
        if view.kind in ("counts", "shares"):
            assert np.isfinite(matrix).all() and (matrix >= 0).all(), name
        if view.kind == "shares":
            assert (matrix.sum(axis=1) <= 1 + 1e-6).all(), name
        assert not np.isinf(matrix).any(), name
    priors = dataset.priors
    if priors.centroids is not None:
        assert priors.centroids.shape == (n, 2) and np.isfinite(priors.centroids).all()
    assert priors.adjacency.shape == (n, n)
    assert priors.neighbours.shape[0] == n and priors.neighbour_distance.shape[0] == n
    if priors.neighbours.size:
        assert priors.neighbours.min() >= 0 and priors.neighbours.max() < n
        assert not (priors.neighbours == np.arange(n)[:, None]).any(), "a region is its own neighbour"
    assert priors.degree.shape == (n,)
    for name, values in dataset.targets.items():
        assert values.shape == (n,) and values.dtype == np.float64, name
        assert not np.isinf(values).any(), name
    summary = dataset.summary()  # what `prepare` writes must be plain JSON numbers
    assert summary["regions"] == n
    for view in summary["views"].values():
        assert math.isfinite(view["total"])


@pytest.mark.parametrize("fault", ["none", *FAULTS])
def test_readers_give_a_dataset_or_an_input_error(fault):
    """3 drawn cases per fault (10 without one): about 80 layers, a few seconds."""
    runs = FUZZ if fault != "none" else settings(FUZZ, max_examples=10)
    runs(given(layers_and_spec(fault))(_read_case))()


def _read_case(case):
    regions, points, spec, fmt = case
    suffix = ".gpkg" if fmt == "gpkg" else ".geojson"
    with tempfile.TemporaryDirectory() as folder:
        region_path = Path(folder) / f"regions{suffix}"
        _write(regions, region_path, "regions", fmt)
        spec["regions"]["path"] = str(region_path)
        if fmt == "geojson":
            spec["regions"]["layer"] = None
        if points is not None:
            point_path = Path(folder) / f"poi{suffix}"
            _write(points, point_path, "poi", fmt)
            spec["points"][0]["path"] = str(point_path)
            if fmt == "geojson":
                spec["points"][0]["layer"] = None
        before = {p.name: p.read_bytes() for p in Path(folder).iterdir()}
        messages: list[str] = []
        try:
            dataset = build.build_dataset(spec, log=messages.append)
        except InputError as error:
            event("input error")
            assert error.message.strip(), "an InputError without a message"
            assert "Traceback" not in error.describe()
        else:
            event("dataset")
            assert isinstance(dataset, RegionDataset)
            _check_valid(dataset, len(regions))
        assert all(isinstance(m, str) and m for m in messages)
        after = {p.name: p.read_bytes() for p in Path(folder).iterdir()}
        assert after == before, "the reader changed or added files beside the user's layers"


def test_a_clean_layer_gives_a_dataset(tmp_path):
    """The fuzz test above would pass with a reader that refuses everything: this one would not."""
    import geopandas as gpd
    from shapely.geometry import Point, box

    regions = gpd.GeoDataFrame(
        {"rid": [f"R{i}" for i in range(6)], "f0": np.arange(6.0), "t": [1.0, None, 3, 4, 5, 6]},
        geometry=[box(i * 400.0, 0, (i + 1) * 400.0, 400.0) for i in range(6)], crs="EPSG:32618")
    regions.to_file(tmp_path / "r.gpkg", layer="regions", driver="GPKG", engine="pyogrio")
    points = gpd.GeoDataFrame({"cat": ["shop", "park", "shop"]}, crs="EPSG:32618",
                              geometry=[Point(100, 100), Point(900, 200), Point(2300, 50)])
    points.to_crs("EPSG:4326").to_file(tmp_path / "p.gpkg", layer="poi", driver="GPKG",
                                       engine="pyogrio")
    spec = {"regions": {"path": str(tmp_path / "r.gpkg"), "layer": "regions", "id_field": "rid",
                        "fields": ["f0"]},
            "points": [{"path": str(tmp_path / "p.gpkg"), "layer": "poi", "category_field": "cat",
                        "view": "poi"}],
            "targets": ["t"]}
    dataset = build.build_dataset(spec, log=lambda message: None)
    _check_valid(dataset, 6)
    assert dataset.n_regions == 6
    assert list(dataset.region_ids) == [f"R{i}" for i in range(6)]
    assert np.isnan(dataset.targets["t"][1]) and dataset.targets["t"][5] == 6.0
    poi = np.asarray(dataset.views["poi"].matrix)
    assert poi.sum() == 3  # every point counted once, after reprojection from EPSG:4326


def test_metre_coordinates_read_as_lon_lat_are_an_input_error(tmp_path):
    """A GeoJSON exported without its CRS: readers take EPSG:4326, the numbers are metres."""
    import geopandas as gpd
    from shapely.geometry import box

    (x0, y0), size = CRS_FRAMES["EPSG:3857"]
    regions = gpd.GeoDataFrame({"f0": np.arange(4.0)}, crs=None, geometry=[
        box(x0 + i * size, y0, x0 + (i + 1) * size, y0 + size) for i in range(4)])
    _write(regions, tmp_path / "r.geojson", "regions", "geojson")
    spec = {"regions": {"path": str(tmp_path / "r.geojson"), "layer": None, "fields": ["f0"]}}
    with pytest.raises(InputError) as caught:
        build.build_dataset(spec, log=lambda message: None)
    assert "CRS" in caught.value.describe()
