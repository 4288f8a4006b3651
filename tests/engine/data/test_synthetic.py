"""The seeded synthetic city: deterministic, learnable, and readable back from its layers."""

from __future__ import annotations

import numpy as np
import pytest

from engine.data.build import build_dataset
from engine.data.synthetic import (
    make_synthetic_city,
    sample_points_in_polygons,
    write_synthetic_layers,
)


@pytest.mark.parametrize("kind", ["grid", "voronoi"])
def test_same_seed_same_city(kind):
    a, b = make_synthetic_city(60, seed=3, kind=kind), make_synthetic_city(60, seed=3, kind=kind)
    c = make_synthetic_city(60, seed=4, kind=kind)
    np.testing.assert_array_equal(a.views["poi"].matrix, b.views["poi"].matrix)
    assert (a.views["mobility"].matrix != b.views["mobility"].matrix).nnz == 0
    assert not np.array_equal(a.views["poi"].matrix, c.views["poi"].matrix)
    assert a.n_regions == 60 and a.priors.neighbours.shape == (60, 16)
    area = a.geometry.area.to_numpy()
    assert np.isclose(area.sum(), 60 * 400.0**2, rtol=0.3) and (area > 0).all()


def test_trips_are_sparse_and_local():
    city = make_synthetic_city(2000, seed=0, kind="voronoi", trips_per_origin=10)
    flow = city.views["mobility"].matrix
    assert flow.nnz <= 2000 * 10 and flow.nnz > 2000 * 5
    rows, cols = flow.nonzero()
    distance = city.priors.pair_distance(rows, cols)
    assert np.median(distance) < 1500  # gravity: most trips go to near regions


def test_targets_are_learnable_from_the_features():
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import cross_val_score

    city = make_synthetic_city(800, seed=1, kind="voronoi")
    flow = city.views["mobility"].matrix
    features = np.log1p(np.column_stack([
        city.views["poi"].matrix, city.views["landuse"].matrix,
        flow.sum(axis=1).A1, flow.sum(axis=0).A1]))
    for name in ("crime", "check_in"):
        y = np.log1p(city.targets[name])
        score = cross_val_score(RidgeCV(alphas=np.logspace(-2, 3, 6)), features, y, cv=5).mean()
        assert score > 0.5, (name, score)
    noise = np.random.default_rng(0).normal(size=800)
    assert cross_val_score(RidgeCV(), features, noise, cv=5).mean() < 0.05


def test_points_are_sampled_inside_their_polygons():
    import shapely

    city = make_synthetic_city(30, seed=2, kind="voronoi")
    polygons = np.asarray(city.geometry.values)
    counts = np.arange(30) % 4
    owner, x, y = sample_points_in_polygons(polygons, counts, np.random.default_rng(0))
    np.testing.assert_array_equal(np.bincount(owner, minlength=30), counts)
    assert shapely.contains_xy(polygons[owner], x, y).all()


def test_the_layers_read_back_to_the_same_city(tmp_path):
    city = make_synthetic_city(150, seed=5, kind="voronoi", crs="EPSG:4326")
    job = write_synthetic_layers(city, tmp_path)
    back = build_dataset(job)
    assert back.crs == "EPSG:4326" and back.priors.crs == "EPSG:32618"
    for name in ("poi", "landuse"):
        view = city.views[name]
        present = [j for j, c in enumerate(view.columns) if c in back.views[name].columns]
        assert back.views[name].columns == [view.columns[j] for j in present]
        np.testing.assert_array_equal(back.views[name].matrix, view.matrix[:, present])
    np.testing.assert_array_equal(back.views["mobility"].matrix.toarray(),
                                  city.views["mobility"].matrix.toarray())
    for name, values in city.targets.items():
        np.testing.assert_array_equal(back.targets[name], values)
    np.testing.assert_array_equal(back.classes["landuse_class"], city.classes["landuse_class"])
