"""MAE / RMSE / R² by hand, and NMI / ARI of KMeans against classes."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import InputError
from engine.training.metrics import clustering_metrics, regression_metrics


def test_regression_metrics_match_hand_computation():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    p = np.array([2.0, 2.0, 2.0, 6.0])
    m = regression_metrics(y, p)
    assert m["mae"] == pytest.approx(1.0)
    assert m["rmse"] == pytest.approx(np.sqrt(6 / 4))
    assert m["r2"] == pytest.approx(1 - 6 / 5)
    assert regression_metrics(y, np.full(4, y.mean()))["r2"] == pytest.approx(0.0)
    assert regression_metrics(y, y)["r2"] == pytest.approx(1.0)


def test_regression_metrics_refuse_nan():
    with pytest.raises(ValueError):
        regression_metrics(np.array([1.0, np.nan]), np.array([1.0, 2.0]))


def test_clustering_metrics_find_separated_classes_and_skip_missing():
    rng = np.random.default_rng(0)
    classes = np.repeat([0, 1, 2], 20).astype(object)
    centres = np.array([[0, 0], [10, 0], [0, 10]], dtype=float)
    embeddings = centres[classes.astype(int)] + rng.normal(0, 0.5, (60, 2))
    classes[5] = None
    m = clustering_metrics(embeddings, classes)
    assert m["nmi"] == pytest.approx(1.0) and m["ari"] == pytest.approx(1.0)
    assert m["classes"] == 3 and m["regions"] == 59
    noise = clustering_metrics(rng.normal(size=(60, 2)), np.repeat([0, 1, 2], 20))
    assert noise["ari"] < 0.2


def test_clustering_needs_two_classes():
    with pytest.raises(InputError):
        clustering_metrics(np.zeros((5, 2)), np.zeros(5))


def test_clustering_at_a_given_k_merges_classes_when_k_is_smaller():
    """The published Manhattan figures use KMeans(12) on 13 classes: k = 2 on three separated
    classes must merge two of them (ARI below 1), k = None keeps one cluster per class."""
    rng = np.random.default_rng(1)
    classes = np.repeat([0, 1, 2], 20)
    centres = np.array([[0, 0], [10, 0], [0, 10]], dtype=float)
    embeddings = centres[classes] + rng.normal(0, 0.5, (60, 2))
    two = clustering_metrics(embeddings, classes, n_clusters=2)
    assert two["clusters"] == 2 and two["classes"] == 3
    assert two["ari"] < 0.9 and clustering_metrics(embeddings, classes)["ari"] == pytest.approx(1)
    with pytest.raises(InputError, match="k = 60"):
        clustering_metrics(embeddings, classes, n_clusters=60)


def test_a_rate_over_a_field_is_hinted_to_take_it_as_its_weight():
    """Rates observed as counts / population are noisier in small places: the hint names the
    population, not another positive field, and says nothing where the noise is the same in
    every region."""
    from engine.training.baselines import LeaveOneOutRidge
    from engine.training.metrics import weight_hint

    def bar_loo(y):  # the bar's leave-one-out predictions of the labelled regions
        labelled = np.isfinite(y)
        out = np.full(len(y), np.nan)
        out[labelled] = LeaveOneOutRidge().fit(X[labelled], y[labelled]).loo_predictions_
        return out

    rng = np.random.default_rng(0)
    X = rng.normal(size=(150, 5))
    rate = np.exp(0.5 * X[:, 0] - 0.3 * X[:, 1]) / 100
    population = np.exp(rng.uniform(np.log(50), np.log(50000), size=150))
    other = rng.uniform(1.0, 100.0, size=150)
    observed = rng.poisson(rate * population) / population
    observed[:5] = np.nan  # unlabelled regions are left out
    fields = {"population": population, "other": other}
    hint = weight_hint(observed, bar_loo(observed), fields)
    assert hint is not None and hint["field"] == "population" and hint["p_value"] < 1e-3
    even = rate + rng.normal(0, 0.005, size=150)
    assert weight_hint(even, bar_loo(even), fields) is None
