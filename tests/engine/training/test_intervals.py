"""Prediction intervals from the cross-validated errors: they hold about their level of the
regions, no region's own error sets its own interval, and they widen where errors are larger."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.training import intervals
from engine.training.intervals import conformal_quantile, cross_conformal, error_scale


def _folds(n: int, k: int = 10) -> np.ndarray:
    return np.arange(n) % k


def test_the_quantile_is_the_conformal_rank_and_infinite_when_too_few():
    scores = np.arange(1.0, 10.0)  # 9 scores: ceil(0.9 x 10) = 9th smallest
    assert conformal_quantile(scores, 0.9) == 9.0
    assert conformal_quantile(scores[:8], 0.9) == math.inf  # 8 cannot give 90%
    assert conformal_quantile(np.arange(1.0, 101.0), 0.5) == 51.0


def test_about_the_level_of_new_regions_fall_inside():
    """Labelled and unlabelled regions alike: the unlabelled ones (here with known values) are
    inside their final-model intervals about as often as the level says."""
    rng = np.random.default_rng(0)
    n = 3000
    truth = rng.normal(0, 2, n)
    predictions = truth + rng.standard_t(4, n)  # heavy-tailed errors
    fold = _folds(n)
    fold[2000:] = -1  # "unlabelled": predicted by the final model
    y = truth
    observed = y.copy()
    observed[2000:] = np.nan
    low, high, summary = cross_conformal(observed, predictions, fold, 0.9)
    unseen = (y[2000:] >= low[2000:]) & (y[2000:] <= high[2000:])
    assert summary["coverage"] == pytest.approx(0.9, abs=0.02)
    assert unseen.mean() == pytest.approx(0.9, abs=0.03)
    assert summary["level"] == 0.9 and summary["bins"] == 5


def test_a_regions_own_error_never_sets_its_own_interval():
    rng = np.random.default_rng(1)
    n = 200
    y = rng.normal(size=n)
    predictions = y + rng.normal(size=n)
    y[0] = predictions[0]  # region 0 (fold 0) is hit exactly...
    fold = _folds(n)
    low, high, _ = cross_conformal(y, predictions, fold, 0.9)
    worse = y.copy()
    worse[0] += 1e6  # ... then missed by a mile
    low2, high2, _ = cross_conformal(worse, predictions, fold, 0.9)
    same_fold = fold == 0
    assert np.array_equal(high[same_fold], high2[same_fold])  # its fold's intervals unmoved
    assert not low2[0] <= worse[0] <= high2[0]  # so it is plainly outside its own


def test_bins_of_the_predictions_widen_the_intervals_where_errors_grow():
    """Errors proportional to the prediction (counts): with one quantile for all, the largest
    predictions are covered far less often than the level; with bins, about as often."""
    rng = np.random.default_rng(2)
    n = 2000
    predictions = rng.uniform(1, 100, n)
    y = predictions * (1 + 0.3 * rng.normal(size=n))
    fold = _folds(n)
    top = predictions > np.quantile(predictions, 0.8)

    def top_coverage(low, high):
        return ((y >= low) & (y <= high))[top].mean()

    binned = cross_conformal(y, predictions, fold, 0.9)
    assert top_coverage(*binned[:2]) == pytest.approx(0.9, abs=0.04)
    # the summary says the same, fifth by fifth
    assert binned[2]["coverage_by_fifth"][4] == pytest.approx(top_coverage(*binned[:2]))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(intervals, "MAX_BINS", 1)
        single = cross_conformal(y, predictions, fold, 0.9)
    assert single[2]["bins"] == 1 and top_coverage(*single[:2]) < 0.8


def test_a_precision_scale_widens_small_places_intervals():
    """A rate over a population: with each fold's error scale, small places get wide intervals
    and still hold about the level, large places narrow ones."""
    rng = np.random.default_rng(3)
    n = 1000
    population = rng.uniform(100, 100_000, n)
    sd = np.sqrt(1.0 + 5e4 / population)
    predictions = rng.normal(10, 2, n)
    y = predictions + sd * rng.normal(size=n)
    fold = _folds(n)
    weighting = {"weighting": "precision", "between_region_variance": 1.0,
                 "sampling_variance_at_mean_weight": 5e4 / population.mean()}
    model = intervals.scale_model(weighting, "population", population, np.arange(n))
    scale = error_scale(model, population)
    assert np.allclose(scale, sd)
    low, high, summary = cross_conformal(y, predictions, fold, 0.9,
                                         {k: scale for k in [*range(10), -1]})
    small = population < np.quantile(population, 0.1)
    inside = (y >= low) & (y <= high)
    assert (high - low)[small].mean() > 2 * (high - low)[~small].mean()
    assert inside[small].mean() == pytest.approx(0.9, abs=0.06)
    assert summary["scaled"] and summary["coverage"] == pytest.approx(0.9, abs=0.03)
    assert intervals.scale_model(None, "population", population, np.arange(n)) is None


def test_too_few_regions_for_the_level_give_no_interval_rather_than_a_wrong_one():
    y = np.arange(12.0)
    predictions = y + 0.5
    low, high, summary = cross_conformal(y, predictions, _folds(12, 4), 0.95)
    assert np.isnan(low).all() and np.isnan(high).all()
    assert summary["coverage"] is None and summary["mean_width"] is None
    with pytest.raises(ValueError, match="between 0 and 1"):
        cross_conformal(y, predictions, _folds(12, 4), 1.0)


def test_a_counts_intervals_grow_with_its_prediction_where_its_errors_do():
    """180 regions (one bin): counts whose errors grow with their size. Plain intervals miss the
    largest regions' values half the time; intervals scaled by the prediction's size hold them
    far more often, and are narrower on average. Where errors do not grow, they are about as
    wide as the plain ones."""
    rng = np.random.default_rng(4)
    n = 180
    mean = np.exp(rng.uniform(0, 7, n))
    y = rng.negative_binomial(5, 5 / (5 + mean)).astype(float)
    predictions = mean * np.exp(rng.normal(0, 0.2, n))
    fold = _folds(n)
    top = predictions > np.quantile(predictions, 0.8)

    def held(low, high):
        return (y >= low) & (y <= high)

    low, high, plain = cross_conformal(y, predictions, fold, 0.9)
    plain_top = held(low, high)[top].mean()
    assert plain["size_power"] == 0 and plain_top < 0.7
    low, high, sized = cross_conformal(y, predictions, fold, 0.9, sized=True)
    sized_top = held(low, high)[top].mean()  # 36 regions: 0.78-0.89 over seeds 4-9
    assert sized["size_power"] > 0 and sized_top >= 0.75 and sized_top > plain_top + 0.15
    assert sized["coverage"] == pytest.approx(0.9, abs=0.04)
    assert sized["mean_width"] < 0.7 * plain["mean_width"]

    even = rng.uniform(10, 1000, n)  # errors alike at every size: nothing to gain or lose
    counts = np.maximum(even + rng.normal(0, 50, n), 0)
    alike = cross_conformal(counts, even, fold, 0.9)[2]
    flat = cross_conformal(counts, even, fold, 0.9, sized=True)[2]
    assert flat["mean_width"] == pytest.approx(alike["mean_width"], rel=0.1)
    assert flat["coverage"] == pytest.approx(0.9, abs=0.04)
