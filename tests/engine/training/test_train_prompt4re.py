"""Prompt4RE training: clean model selection, label isolation, protocols."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge

from engine.errors import InputError
from engine.models.modeling_prompt4re import Prompt4REConfig
from engine.training.baselines import LeaveOneOutRidge
from engine.training.train_prompt4re import fit_prompt4re

torch.set_num_threads(1)
CONFIG = Prompt4REConfig(hidden=16, heads=4)


def data(n=40, d=8, h=12, seed=0):
    rng = np.random.default_rng(seed)
    region = rng.normal(size=(n, d)).astype(np.float32)
    semantic = rng.normal(size=(n, h)).astype(np.float32)
    y = 50 + 10 * (region[:, 0] + np.tanh(semantic[:, 0] * region[:, 1])) + rng.normal(size=n)
    return region, semantic, y


def test_labels_outside_train_index_are_never_read():
    region, semantic, y = data()
    train, test = np.arange(30), np.arange(30, 40)
    poisoned = y.copy()
    poisoned[test] = np.nan
    other = y.copy()
    other[test] = 1e9
    kw = dict(config=CONFIG, epochs=40, lr=1e-2, seed=3)
    a = fit_prompt4re(region, semantic, poisoned, train, **kw)
    b = fit_prompt4re(region, semantic, other, train, **kw)
    assert a.protocol == "clean"
    assert a.chosen_epoch == b.chosen_epoch
    np.testing.assert_array_equal(a.predict(None), b.predict(None))
    assert np.isfinite(a.predict(test)).all()


def test_clean_selection_then_refit():
    region, semantic, y = data()
    result = fit_prompt4re(region, semantic, y, np.arange(30), config=CONFIG, epochs=60, lr=1e-2)
    assert result.validation_epochs[0] == 0 and result.validation_epochs[-1] == 60
    best = result.validation_epochs[int(np.argmin(result.validation_curve))]
    assert result.chosen_epoch == best
    assert len(result.train_curve) == result.chosen_epoch  # refit for the chosen epochs
    assert result.predict(np.arange(30, 40)).shape == (10,)


def test_training_loss_decreases_and_starts_at_ridge():
    region, semantic, y = data()
    train = np.arange(30)
    result = fit_prompt4re(region, semantic, y, train, config=Prompt4REConfig(hidden=16, heads=4, dropout=0.0),
                           epochs=50, lr=1e-2, validation_fraction=0)
    assert result.protocol == "fixed" and result.chosen_epoch == 50
    assert result.train_curve[-1] < result.train_curve[0]
    # Zero epochs: exactly the Ridge fit on standardised embeddings (all-region statistics),
    # with the authors' penalty when asked for it...
    zero = fit_prompt4re(region, semantic, y, train, config=CONFIG, epochs=0, validation_fraction=0,
                         head_alpha=1.0)
    z = (region - region.mean(0)) / region.std(0)
    scaled = (y[train] - y[train].mean()) / y[train].std()
    ridge = Ridge(alpha=1.0).fit(z[train], scaled)
    expected = ridge.predict(z) * y[train].std() + y[train].mean()
    np.testing.assert_allclose(zero.predict(None), expected, rtol=1e-4, atol=1e-3)
    # ...and by default with the penalty leave-one-out chooses on the training rows.
    chosen = fit_prompt4re(region, semantic, y, train, config=CONFIG, epochs=0,
                           validation_fraction=0)
    loo = LeaveOneOutRidge().fit(z[train], scaled)
    expected = loo.predict(z) * y[train].std() + y[train].mean()
    np.testing.assert_allclose(chosen.predict(None), expected, rtol=1e-4, atol=1e-3)


def test_the_head_starts_from_a_penalty_chosen_without_held_out_labels():
    # Many embedding dimensions for few regions: least squares overfits, Ridge(1) nearly does.
    rng = np.random.default_rng(1)
    n, d = 60, 40
    region = rng.normal(size=(n, d)).astype(np.float32)
    semantic = rng.normal(size=(n, 6)).astype(np.float32)
    y = 100 + 5 * region[:, :3].sum(1) + 8 * rng.normal(size=n)
    train, test = np.arange(45), np.arange(45, 60)
    kw = dict(config=CONFIG, epochs=0, validation_fraction=0)
    released = fit_prompt4re(region, semantic, y, train, head_alpha=1.0, **kw)
    chosen = fit_prompt4re(region, semantic, y, train, **kw)

    def held_out_mse(result):
        return float(((result.predict(test) - y[test]) ** 2).mean())

    assert held_out_mse(chosen) < held_out_mse(released)
    # The choice reads the training labels only.
    hidden = y.copy()
    hidden[test] = np.nan
    np.testing.assert_array_equal(
        fit_prompt4re(region, semantic, hidden, train, **kw).predict(None), chosen.predict(None))


def test_same_seed_same_predictions():
    region, semantic, y = data()
    kw = dict(config=CONFIG, epochs=30, lr=1e-2, seed=5)
    a = fit_prompt4re(region, semantic, y, np.arange(30), **kw)
    b = fit_prompt4re(region, semantic, y, np.arange(30), **kw)
    np.testing.assert_array_equal(a.predict(None), b.predict(None))


def test_paper_protocol_is_labelled_optimistic():
    region, semantic, y = data()
    result = fit_prompt4re(region, semantic, y, np.arange(30), config=CONFIG, epochs=60, lr=1e-2,
                           select_on=(np.arange(30, 40), y[30:]), target_transform="log1p")
    assert result.protocol == "paper-optimistic"
    assert result.validation_epochs == [0, 20, 40, 60]
    assert result.chosen_epoch in result.validation_epochs


def test_bad_input():
    region, semantic, y = data()
    with pytest.raises(InputError, match="labelled"):
        fit_prompt4re(region, semantic, np.full(40, np.nan), np.arange(30), config=CONFIG, epochs=1)
    with pytest.raises(InputError, match="log1p"):
        fit_prompt4re(region, semantic, y - 1000, np.arange(30), config=CONFIG, epochs=1,
                      target_transform="log1p")
    with pytest.raises(InputError):
        fit_prompt4re(region, semantic[:5], y, np.arange(30), config=CONFIG, epochs=1)
    for bad in (-1.0, float("nan"), "best", True):
        with pytest.raises(InputError, match="head_alpha"):
            fit_prompt4re(region, semantic, y, np.arange(30), config=CONFIG, epochs=1,
                          head_alpha=bad)


def test_patience_stops_the_clean_inner_run_early():
    region, semantic, y = data()
    kw = dict(config=CONFIG, epochs=400, lr=3e-3, seed=3, head_alpha=1.0)
    full = fit_prompt4re(region, semantic, y, np.arange(30), patience=None, **kw)
    early = fit_prompt4re(region, semantic, y, np.arange(30), patience=50, **kw)
    assert full.validation_epochs[-1] == 400
    # Here the validation loss is lowest at epoch 50: the inner run stops 50 epochs later.
    assert early.chosen_epoch == 50
    assert early.validation_epochs[-1] == 100
    # Until it stops, the run is the full run: same epochs scored, same validation losses.
    k = len(early.validation_epochs)
    assert early.validation_epochs == full.validation_epochs[:k]
    np.testing.assert_array_equal(early.validation_curve, full.validation_curve[:k])
    assert len(early.train_curve) == early.chosen_epoch  # the refit trains the chosen epochs


def test_patience_never_reads_held_out_labels():
    region, semantic, y = data()
    train, test = np.arange(30), np.arange(30, 40)
    poisoned, other = y.copy(), y.copy()
    poisoned[test], other[test] = np.nan, 1e9
    kw = dict(config=CONFIG, epochs=400, lr=3e-3, seed=3, patience=50)
    a = fit_prompt4re(region, semantic, poisoned, train, **kw)
    b = fit_prompt4re(region, semantic, other, train, **kw)
    assert a.validation_epochs[-1] < 400  # it did stop early
    assert a.validation_epochs == b.validation_epochs and a.chosen_epoch == b.chosen_epoch
    np.testing.assert_array_equal(a.predict(None), b.predict(None))


def test_paper_protocol_ignores_patience():
    region, semantic, y = data()
    result = fit_prompt4re(region, semantic, y, np.arange(30), config=CONFIG, epochs=200, lr=3e-3,
                           seed=3, patience=20, select_on=(np.arange(30, 40), y[30:]))
    assert result.validation_epochs == list(range(0, 201, 20))  # the full schedule, every 20
    assert len(result.train_curve) == 200


def test_patience_same_seed_same_numbers():
    region, semantic, y = data()
    kw = dict(config=CONFIG, epochs=400, lr=3e-3, seed=3, patience=50)
    a = fit_prompt4re(region, semantic, y, np.arange(30), **kw)
    b = fit_prompt4re(region, semantic, y, np.arange(30), **kw)
    assert a.validation_curve == b.validation_curve and a.train_curve == b.train_curve
    np.testing.assert_array_equal(a.predict(None), b.predict(None))


@pytest.mark.parametrize("patience", [0, -5, 2.5, True])
def test_bad_patience(patience):
    region, semantic, y = data()
    with pytest.raises(InputError, match="patience"):
        fit_prompt4re(region, semantic, y, np.arange(30), config=CONFIG, epochs=1,
                      patience=patience)
