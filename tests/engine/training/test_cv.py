"""Pooled K-fold: folds as the literature's, no held-out label ever visible, NaN targets."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import KFold

from engine.errors import InputError
from engine.training.cv import cross_val_predict_pooled, kfold_splits


def test_unshuffled_folds_are_sklearn_kfold_blocks():
    splits = kfold_splits(np.arange(180), 10)
    expected = list(KFold(10).split(np.arange(180)))
    assert len(splits) == 10
    for (train, test), (e_train, e_test) in zip(splits, expected, strict=True):
        assert np.array_equal(test, e_test) and np.array_equal(train, e_train)
    assert np.array_equal(splits[0][1], np.arange(18))  # Manhattan: first 18 regions


def test_shuffled_folds_use_seed_2024_and_partition_the_regions():
    index = np.arange(5, 105)
    splits = kfold_splits(index, 25, shuffle=True)
    expected = list(KFold(25, shuffle=True, random_state=2024).split(index))
    assert all(np.array_equal(t, index[e]) for (_, t), (_, e) in zip(splits, expected, strict=True))
    held = np.concatenate([test for _, test in splits])
    assert np.array_equal(np.sort(held), index)


def test_too_few_regions_for_the_folds_is_an_input_error():
    with pytest.raises(InputError, match="folds"):
        kfold_splits(np.arange(5), 10)


def _recording_fit_predict(calls):
    def fit_predict(X, y, train, predict, *, selection_index=None):
        calls.append({"train": train.copy(), "predict": predict.copy(), "y": y.copy(),
                      "selection": selection_index})
        return np.full(len(predict), np.nanmean(y[train]) - 50.0)

    return fit_predict


def test_clean_protocol_never_shows_a_held_out_label():
    rng = np.random.default_rng(0)
    y = rng.uniform(0, 100, 60)
    y[[3, 17, 40]] = np.nan  # unlabelled regions
    calls = []
    result = cross_val_predict_pooled(_recording_fit_predict(calls), None, y, folds=5)
    folds, final = calls[:5], calls[5]
    for call in folds:
        assert not set(call["train"]) & set(call["predict"])
        hidden = np.setdiff1d(np.arange(60), call["train"])
        assert np.isnan(call["y"][hidden]).all()  # only the training labels are visible
        assert call["selection"] is None
    # unlabelled regions: predicted by one model fitted on all labelled regions
    assert np.array_equal(np.sort(final["predict"]), [3, 17, 40])
    assert len(final["train"]) == 57
    assert (result.fold[[3, 17, 40]] == -1).all()
    assert np.isfinite(result.predictions).all()
    assert not result.optimistic and "clean" in result.label


def test_negative_predictions_of_counts_are_clipped_and_metrics_pooled():
    y = np.arange(40, dtype=float)  # counts >= 0; the stand-in predicts mean - 50 < 0 mostly
    result = cross_val_predict_pooled(_recording_fit_predict([]), None, y, folds=4)
    assert result.clipped and (result.predictions >= 0).all()
    expected_mae = np.abs(result.predictions - y).mean()
    assert result.metrics["mae"] == pytest.approx(expected_mae)
    signed = cross_val_predict_pooled(_recording_fit_predict([]), None, y - 100, folds=4)
    assert not signed.clipped and (signed.predictions < 0).any()


def test_paper_protocol_shows_the_test_fold_and_is_flagged_optimistic():
    y = np.arange(30, dtype=float)
    calls = []
    result = cross_val_predict_pooled(_recording_fit_predict(calls), None, y, folds=3,
                                      protocol="paper")
    assert result.optimistic and "OPTIMISTIC" in result.label
    assert result.to_dict()["optimistic"] is True
    for call in calls:
        assert np.array_equal(call["selection"], call["predict"])


def test_unknown_protocol_is_an_input_error():
    with pytest.raises(InputError, match="protocol"):
        cross_val_predict_pooled(_recording_fit_predict([]), None, np.arange(20.0),
                                 folds=2, protocol="best-case")
