"""The benchmark's real places: PySAL's bundled datasets read as a user's region layers, and
their goal row."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("libpysal")

from bench.real_places import REAL_PLACES, place_dataset  # noqa: E402
from bench.report import real_places_goal_row, real_places_section  # noqa: E402

# Where each place lies (longitude and latitude ranges of its region centroids): a wrong CRS
# puts the centroids somewhere else (UTM 17N instead of 16N moves Georgia by 6 degrees).
BOUNDS = {"georgia": ((-85.7, -80.8), (30.3, 35.1)),
          "north_carolina": ((-84.4, -75.4), (33.8, 36.7)),
          "st_louis": ((-92.8, -87.8), (36.8, 40.4)),
          "tokyo": ((138.9, 140.6), (35.0, 36.4)),
          "us_counties": ((-124.8, -66.9), (24.5, 49.4))}


@pytest.mark.parametrize("place", REAL_PLACES, ids=lambda p: p.name)
def test_each_place_reads_as_a_region_layer_where_it_is(place, tmp_path):
    dataset = place_dataset(place, tmp_path)
    assert set(place.targets) <= set(dataset.targets)
    for target in place.targets:
        assert np.isfinite(dataset.targets[target]).sum() == dataset.n_regions
    assert dataset.n_regions == {"georgia": 159, "north_carolina": 100, "st_louis": 78,
                                 "tokyo": 262, "us_counties": 3085}[place.name]
    # The view holds the fields and never a target.
    columns = [c for view in dataset.views.values() for c in view.columns]
    assert set(columns) == set(place.fields)
    # A rate's weight is its denominator, read from the layer: > 0 in every region.
    assert set(dataset.target_weights) == {target for target, _ in place.weights}
    for target, weight_field in place.weights:
        assert (dataset.target_weights[target] > 0).all()
        if weight_field in place.fields:
            column = dataset.views["fields"].columns.index(weight_field)
            assert np.array_equal(dataset.views["fields"].matrix[:, column],
                                  dataset.target_weights[target])
    centroids = dataset.geometry.to_crs(dataset.geometry.estimate_utm_crs()).centroid
    lonlat = centroids.to_crs("EPSG:4326")
    (west, east), (south, north) = BOUNDS[place.name]
    assert west < lonlat.x.min() and lonlat.x.max() < east
    assert south < lonlat.y.min() and lonlat.y.max() < north


def _row(place, task, split, difference, low, high, comparison="default_vs_bar"):
    return {"place": place, "task": task, "split": split, "comparison": comparison,
            "model": "engine default", "other": "the bar (raw features -> RidgeCV)",
            "r2_model": 0.5 + difference, "r2_other": 0.5, "difference": difference,
            "low": low, "high": high, "share_above_zero": 0.5, "folds": 10, "folds_better": 5}


def _real(rows):
    return {"seeds": [0, 1, 2], "folds": 10, "language_model": "smollm2", "mode": "full",
            "environment": {"date": "2026-12-07T09:00:00+00:00", "git_commit": "abc"},
            "places": [{"name": "georgia", "about": "counties", "regions": 159,
                        "fields": ["PctPov"], "tasks": ["PctBach"]}], "rows": rows}


def test_the_goal_is_met_only_when_no_row_falls_below_the_bar():
    above = [_row("georgia", "PctBach", "shuffled", 0.05, 0.01, 0.09),
             _row("st_louis", "HR8893", "unshuffled", 0.0, -0.02, 0.03)]
    [line] = real_places_goal_row(_real(above))
    assert "**met** (none below)" in line and "2 of 2 task rows" in line
    below = above + [_row("st_louis", "HC8893", "unshuffled", -0.0125, -0.06, 0.4),
                     _row("st_louis", "HC8893", "shuffled", -0.2, -0.5, 0.2,
                          comparison="default_vs_features_only")]  # another comparison
    [line] = real_places_goal_row(_real(below))
    assert "**not met** (1 row(s) below)" in line
    assert "worst st_louis HC8893 (unshuffled) -0.013" in line and "clearly below" in line
    assert real_places_goal_row(None) == []


def test_with_an_unseen_place_the_goal_reads_that_place():
    """Places the default's rules were checked on cannot show it generalises; once a place that
    nothing was chosen on is in, its rows decide the verdict, and the row names them apart."""
    real = _real([_row("georgia", "PctBach", "shuffled", -0.01, -0.03, 0.01),
                  _row("us_counties", "HR90", "shuffled", 0.02, 0.0, 0.04)])
    real["places"] = [{"name": "georgia", "seen": True},
                      {"name": "us_counties", "seen": False}]
    [line] = real_places_goal_row(real)
    assert "1 of 2 task rows at or above the bar on 2 real place(s)" in line
    assert "1 of 1 task rows at or above the bar on 1 unseen real place(s) (us_counties)" in line
    assert "**met** (none below on the unseen place(s))" in line
    real["rows"].append(_row("us_counties", "HC90", "unshuffled", -0.02, -0.05, 0.01))
    [line] = real_places_goal_row(real)
    assert "**not met** (1 row(s) below on the unseen place(s))" in line


def test_the_section_lists_every_row_and_counts_them():
    rows = [_row("georgia", "PctBach", "shuffled", 0.05, 0.01, 0.09),
            _row("georgia", "PctBach", "unshuffled", -0.03, -0.05, -0.01)]
    text = "\n".join(real_places_section(_real(rows)))
    assert "| georgia | PctBach | shuffled |" in text and "+0.0500" in text
    assert "below on 1, clearly below on 1, clearly above on 1" in text
    assert real_places_section(None) == []


def test_tokyos_table_joins_each_municipality_to_its_own_row(tmp_path):
    """The mortality table travels beside the polygons; its centroid columns must be the
    polygons' own centroids (a join on the wrong key would move them by kilometres)."""
    import geopandas as gpd

    from bench.real_places import place_layer

    tokyo = next(p for p in REAL_PLACES if p.name == "tokyo")
    frame = gpd.read_file(place_layer(tokyo, tmp_path))
    centroids = frame.geometry.centroid
    assert np.hypot(centroids.x - frame["X_CENTROID"], centroids.y - frame["Y_CENTROID"]).max() < 1
    assert np.allclose(frame["SMR2564"], frame["db2564"] / frame["eb2564"])


def test_the_us_counties_rate_is_the_count_over_the_population(tmp_path):
    """PySAL 1.x's counties, fetched and unpacked from PyPI: the rate per 100,000 and the count
    of the same counties agree (a file from another release, or fields read out of line,
    would not)."""
    counties = next(p for p in REAL_PLACES if p.name == "us_counties")
    dataset = place_dataset(counties, tmp_path)
    rate = dataset.targets["HR90"]
    count_rate = dataset.targets["HC90"] / dataset.target_weights["HR90"] * 1e5
    assert np.allclose(rate, count_rate, rtol=1e-6, atol=1e-6)
