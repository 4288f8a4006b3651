"""The benchmark folder loader on the shared Manhattan-180 folder, and on broken folders."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from engine.data.benchmark import load_benchmark_folder
from engine.data.build import prepare_summary_text
from engine.errors import InputError


def test_manhattan_views_targets_and_classes(manhattan_benchmark, manhattan_dir):
    d = manhattan_benchmark
    assert d.n_regions == 180
    np.testing.assert_array_equal(d.views["poi"].matrix, np.load(manhattan_dir / "poi_dist.npy"))
    assert d.views["poi"].columns[0] == "poi_00" and d.views["poi"].width == 26
    assert d.views["landuse"].kind == "counts" and d.views["landuse"].width == 11
    flow = d.views["mobility"].matrix
    assert flow.format == "csr" and flow.sum() == 10_953_879
    np.testing.assert_array_equal(flow.toarray(), np.load(manhattan_dir / "mob_dist.npy"))
    assert sorted(d.targets) == ["carbon", "check_in", "crime", "income", "service_call"]
    assert all(t.shape == (180,) and t.dtype == np.float64 for t in d.targets.values())
    assert np.nansum(d.targets["check_in"]) == 106_902
    income = np.load(manhattan_dir / "income_counts.npy").ravel()
    assert np.isnan(d.targets["income"]).sum() == (income == 0).sum() == 6
    assert d.report["unknown_as_zero"] == {"income": 6}
    clusters = json.loads((manhattan_dir / "landuse_clusters.json").read_text())
    assert d.classes["landuse_class"][17] == clusters["17"]


def test_manhattan_priors_come_from_the_shapefile(manhattan_benchmark):
    p = manhattan_benchmark.priors
    assert p.crs == "EPSG:32618" and manhattan_benchmark.crs == "EPSG:4326"
    assert p.centroids.shape == (180, 2) and p.neighbours.shape == (180, 16)
    assert 4 < p.degree.mean() < 8 and p.degree.min() >= 1  # a tessellation: ~6 neighbours
    # Manhattan is about 3.5 km by 20 km: region areas and distances in metres
    assert 1e4 < np.median(p.area) < 1e6
    assert 500 < p.distance_quantiles[0] and p.distance_quantiles[-1] < 20_000
    np.testing.assert_allclose(p.mobility_out, manhattan_benchmark.views["mobility"].matrix.sum(1).A1)
    text = prepare_summary_text(manhattan_benchmark)
    assert "180 regions" in text and "EPSG:32618" in text and "income: 6 zero" in text


def test_a_folder_without_shapes_gets_priors_from_trips(tmp_path, manhattan_dir):
    for file in manhattan_dir.glob("*.npy"):
        shutil.copy(file, tmp_path)
    messages = []
    d = load_benchmark_folder(tmp_path, log=messages.append)
    assert d.priors.centroids is None and d.geometry is None
    assert d.priors.neighbours.shape == (180, 16) and (d.priors.neighbours >= 0).all()
    assert any("from the trips" in m for m in messages)
    assert "landuse_class" not in d.classes


def test_a_folder_with_centroids(tmp_path, manhattan_benchmark, manhattan_dir):
    shutil.copy(manhattan_dir / "poi_dist.npy", tmp_path)
    lonlat = manhattan_benchmark.geometry.to_crs("EPSG:32618").centroid.to_crs("EPSG:4326")
    np.save(tmp_path / "centroids.npy", np.column_stack([lonlat.x, lonlat.y]))
    d = load_benchmark_folder(tmp_path)
    assert d.priors.crs == "EPSG:32618"
    np.testing.assert_allclose(d.priors.centroids, manhattan_benchmark.priors.centroids, atol=0.01)


def test_broken_folders(tmp_path, manhattan_dir):
    with pytest.raises(InputError, match="does not exist"):
        load_benchmark_folder(tmp_path / "missing")
    with pytest.raises(InputError, match="none of poi_dist.npy"):
        load_benchmark_folder(tmp_path)
    shutil.copy(manhattan_dir / "poi_dist.npy", tmp_path)
    np.save(tmp_path / "crime_counts.npy", np.zeros(179))
    with pytest.raises(InputError, match="disagree on the number of regions") as info:
        load_benchmark_folder(tmp_path)
    assert "crime_counts.npy: 179" in info.value.message


# ---------------------------------------------------------------------------------------------
# Other cities: HAFusion's Chicago and San Francisco folders and their literature splits


@pytest.mark.parametrize("name, city, folds, shuffle", [
    ("data_Chi", "chicago", 25, True), ("chicago", "chicago", 25, True),
    ("data_SF", "san_francisco", 10, True), ("San-Francisco", "san_francisco", 10, True),
    ("data_NY", "manhattan", 10, False), ("manhattan", "manhattan", 10, False),
    ("my_city", "other", 10, True)])
def test_the_literature_split_is_recognised_from_the_folder_name(tmp_path, name, city, folds,
                                                                 shuffle):
    from engine.data.benchmark import benchmark_split

    split = benchmark_split(tmp_path / name)
    assert (split.city, split.folds, split.shuffle, split.fold_seed) == (city, folds, shuffle,
                                                                        2024)
    drops_check_ins = city in ("chicago", "san_francisco")
    assert ("check_in" in split.zero_is_unknown) == drops_check_ins
    assert "income" in split.zero_is_unknown


def test_a_named_city_wins_over_the_folder_name_and_an_unknown_one_is_an_error(tmp_path):
    from engine.data.benchmark import benchmark_split

    assert benchmark_split(tmp_path / "data_Chi", "san_francisco").folds == 10
    assert benchmark_split(tmp_path / "data_Chi", "other").city == "other"
    assert benchmark_split(tmp_path / "data_Chi", "auto").city == "chicago"
    with pytest.raises(InputError, match="unknown benchmark city 'paris'"):
        benchmark_split(tmp_path / "data_Chi", "paris")


def test_chicago_leaves_regions_without_check_ins_out_and_reads_the_trips_for_priors(
        tmp_path, hafusion_folder):
    chicago = load_benchmark_folder(hafusion_folder(tmp_path / "data_Chi"))
    check_in = chicago.targets["check_in"]
    assert np.isnan(check_in[:4]).all() and np.isfinite(check_in[4:]).all()
    assert chicago.report["unknown_as_zero"] == {"check_in": 4}
    assert chicago.source["split"]["city"] == "chicago"
    assert sorted(chicago.views) == ["landuse", "mobility", "poi"]  # the *_simi files unread
    assert chicago.geometry is None and chicago.priors.neighbours.shape[0] == 30
    assert sorted(chicago.targets) == ["check_in", "crime", "service_call"]
    # The same files in a folder of no known city, or read as Manhattan: the zeros are counts.
    other = load_benchmark_folder(hafusion_folder(tmp_path / "my_city"))
    assert np.isfinite(other.targets["check_in"]).all()
    named = load_benchmark_folder(tmp_path / "data_Chi", city="manhattan")
    assert np.isfinite(named.targets["check_in"]).all()


def test_targets_are_found_by_the_literature_task_names(tmp_path, hafusion_folder):
    from engine.data.benchmark import resolve_targets

    targets = load_benchmark_folder(hafusion_folder(tmp_path / "data_SF")).targets
    assert resolve_targets(["crime", "checkIn", "serviceCall", "check", "carbon"], targets) == (
        ["crime", "check_in", "service_call"], ["carbon"])
