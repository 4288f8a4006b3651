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
FUZZ = settings(max_examples=30, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _cell(draw, origin, size, i):
    """One region's geometry: mostly a grid cell, sometimes something a real layer holds."""
    from shapely.geometry import MultiPolygon, Point, Polygon, box

    x0, y0 = origin
    x, y = x0 + (i % 4) * size, y0 + (i // 4) * size
    shape = draw(st.sampled_from(["cell"] * 40 + ["overlap", "sliver", "bowtie", "multi",
                                                 "point", "empty", "none"]))
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
    return None


def _column(draw, n: int):
    """A field's values: numbers, integers, text, booleans or all-null, with nulls sprinkled."""
    kind = draw(st.sampled_from(["float", "int", "text", "numeric text", "bool", "all null"]))
    nulls = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    if kind == "all null":
        return [None] * n
    if kind == "float":
        values = draw(st.lists(st.floats(-1e6, 1e6) | st.just(math.nan), min_size=n, max_size=n))
    elif kind == "int":
        values = draw(st.lists(st.integers(-1000, 10**6), min_size=n, max_size=n))
        return values  # an integer column stays without nulls (GeoPackage would make it float)
    elif kind == "text":
        values = draw(st.lists(st.text(min_size=0, max_size=6), min_size=n, max_size=n))
    elif kind == "numeric text":
        values = [str(v) for v in draw(st.lists(st.integers(0, 99), min_size=n, max_size=n))]
    else:
        values = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return [None if null else value for value, null in zip(values, nulls, strict=True)]


@st.composite
def layers_and_spec(draw):
    import geopandas as gpd
    from shapely.geometry import Point

    n = draw(st.integers(1, 12))
    crs = draw(st.sampled_from([*CRS_FRAMES, *CRS_FRAMES, None]))
    origin, size = CRS_FRAMES[crs or "EPSG:32618"]
    geometry = [_cell(draw, origin, size, i) for i in range(n)]
    columns = {f"f{j}": _column(draw, n) for j in range(draw(st.integers(1, 3)))}
    id_kind = draw(st.sampled_from(["none", "unique int", "unique text"] * 2 + ["repeated", "with null"]))
    if id_kind == "unique int":
        columns["rid"] = list(range(100, 100 + n))
    elif id_kind == "unique text":
        columns["rid"] = [f"R-{i}" for i in range(n)]
    elif id_kind == "repeated":
        columns["rid"] = [i % max(n - 1, 1) for i in range(n)]
    elif id_kind == "with null":
        columns["rid"] = [None if i == 0 else f"R{i}" for i in range(n)]
    regions = gpd.GeoDataFrame(columns, geometry=geometry, crs=crs)

    fields = draw(st.lists(st.sampled_from([*[f"f{j}" for j in range(3)], "missing"]),
                           max_size=2, unique=True))
    target = draw(st.sampled_from([None, "f0", "f1", "missing"]))
    spec = {"regions": {"layer": "regions", "fields": fields,
                        "id_field": "rid" if id_kind != "none" else None},
            "targets": [target] if target else []}

    n_points = draw(st.sampled_from([0, 1, 25]))
    points = None
    if draw(st.booleans()):
        point_crs = draw(st.sampled_from([*CRS_FRAMES]))
        rng = np.random.default_rng(draw(st.integers(0, 2**16)))
        xy = rng.uniform(0, 1, size=(n_points, 2)) * 4 * size + np.asarray(origin)
        points = gpd.GeoDataFrame(
            {"cat": draw(st.lists(st.sampled_from(["shop", "park", None, "", "3"]),
                                  min_size=n_points, max_size=n_points))},
            geometry=[Point(x, y) for x, y in xy], crs=crs or "EPSG:32618")
        if point_crs != (crs or "EPSG:32618"):
            points = points.to_crs(point_crs)
        spec["points"] = [{"layer": "poi", "view": "poi",
                           "category_field": draw(st.sampled_from(["cat", None, "missing"]))}]
    fmt = draw(st.sampled_from(["gpkg", "geojson"]))
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


@FUZZ
@given(layers_and_spec())
def test_readers_give_a_dataset_or_an_input_error(case):
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
