"""Raw feature matrices: the literature's layout, all-region scaling, the large-N SVD path."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from engine.data.dataset import View
from engine.training.features import FeatureConfig, literature_features, robust_features


def _views(n=30, seed=0):
    rng = np.random.default_rng(seed)
    poi = rng.poisson(3, (n, 4)).astype(float)
    poi[:, 3] = 0  # an empty category: constant column
    flow = sp.csr_matrix(rng.poisson(0.3, (n, n)).astype(float))
    return {"poi": View("poi", "counts", poi, list("abcd")),
            "mobility": View("mobility", "flow", flow, [str(i) for i in range(n)])}


def test_literature_layout_is_counts_then_trip_rows_then_columns_zscored():
    views = _views()
    X = literature_features(views)
    assert X.shape == (30, 4 + 30 + 30)
    flow = views["mobility"].matrix.toarray()
    column = flow[:, 7]  # trip row feature 7 = trips to region 7
    expected = (column - column.mean()) / column.std() if column.std() > 0 else 0 * column
    assert np.allclose(X[:, 4 + 7], expected)
    incoming = flow[7, :]  # trip column feature 7 = trips from region 7
    if incoming.std() > 0:
        assert np.allclose(X[:, 34 + 7], (incoming - incoming.mean()) / incoming.std())
    assert np.isfinite(X).all() and np.allclose(X[:, 3], 0)  # constant column -> 0, not NaN
    assert np.allclose(X.mean(axis=0), 0, atol=1e-12)


def test_robust_features_are_log_shares_and_totals():
    X = robust_features(_views())
    assert X.shape == (30, 4 + 4 + 1 + 30 + 30 + 2)
    assert np.isfinite(X).all()
    assert np.abs(X).max() < 30


def test_large_n_summarises_flows_by_svd_of_fixed_width():
    config = FeatureConfig(dense_flow_limit=20, flow_svd_width=6)
    X = literature_features(_views(n=40), config)
    assert X.shape == (40, 4 + 6 + 6)
    R = robust_features(_views(n=40), config)
    assert R.shape == (40, 4 + 4 + 1 + 6 + 6 + 2)


def test_manhattan_literature_features(manhattan_benchmark):
    X = literature_features(manhattan_benchmark)
    assert X.shape == (180, 26 + 11 + 180 + 180)
