"""Raw feature matrices built from a dataset's views, with no label involved.

Two recipes, both scaled with statistics over ALL regions (never per training fold: with
unshuffled folds, per-fold scaling makes sparse trip columns explode on the test fold):

- `literature_features`: [POI counts, land-use counts, trip-matrix rows, trip-matrix columns],
  each column z-scored. This is the raw-feature baseline of the region representation literature.
- `robust_features`: log1p counts, per-region shares of each count view, log1p trip rows and
  columns, log1p totals, continuous views as they are; each column z-scored.

A flow view is used as dense rows and columns only while N <= `FeatureConfig.dense_flow_limit`;
above that, rows and columns are summarised by a truncated SVD of log1p(trips) of fixed width.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from engine.data.dataset import RegionDataset, View
from engine.errors import InputError


@dataclass
class FeatureConfig:
    dense_flow_limit: int = 2000  # N above which trip rows/columns are summarised by SVD
    flow_svd_width: int = 64  # SVD components for trip rows and for trip columns (large N)
    seed: int = 0  # seed of the randomised SVD


def _views(source: RegionDataset | Mapping[str, View]) -> Mapping[str, View]:
    views = source.views if isinstance(source, RegionDataset) else source
    if not views:
        raise InputError("the dataset has no views to build features from",
                         hint="Add a point, land-use, trip, raster or numeric-field layer.")
    return views


def zscore(matrix: np.ndarray) -> np.ndarray:
    """Each column minus its mean over all regions, divided by its std (constant columns -> 0).

    NaN entries (continuous views) are ignored by the statistics and become 0 (the mean).
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    mean = np.nanmean(matrix, axis=0) if matrix.size else np.zeros(matrix.shape[1])
    std = np.nanstd(matrix, axis=0) if matrix.size else np.ones(matrix.shape[1])
    mean = np.nan_to_num(mean)
    std = np.where(np.isfinite(std) & (std > 1e-12), std, 1.0)
    out = (matrix - mean) / std
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def _flow_rows_columns(view: View, transform, config: FeatureConfig) -> list[np.ndarray]:
    """[trip rows, trip columns] of a flow view: dense for small N, SVD summaries above."""
    matrix = view.matrix
    n = matrix.shape[0]
    if n <= config.dense_flow_limit:
        dense = matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)
        dense = transform(dense.astype(np.float64))
        return [dense, dense.T]  # (N, N) outgoing, (N, N) incoming
    from sklearn.decomposition import TruncatedSVD

    logged = sp.csr_matrix(matrix, dtype=np.float64).log1p()
    width = min(config.flow_svd_width, n - 1)
    parts = []
    for m in (logged, logged.T.tocsr()):
        svd = TruncatedSVD(n_components=width, random_state=config.seed)
        parts.append(svd.fit_transform(m))  # (N, width)
    return parts


def _dense(view: View) -> np.ndarray:
    matrix = view.matrix
    return (matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)).astype(np.float64)


def literature_features(source: RegionDataset | Mapping[str, View],
                        config: FeatureConfig | None = None) -> np.ndarray:
    """(N, F) [counts/shares views, trip rows, trip columns], each column z-scored over all regions."""
    config = config or FeatureConfig()
    blocks = []
    for view in _views(source).values():
        if view.kind == "flow":
            blocks.extend(_flow_rows_columns(view, lambda m: m, config))
        else:
            blocks.append(_dense(view))
    return zscore(np.concatenate(blocks, axis=1))


def robust_features(source: RegionDataset | Mapping[str, View],
                    config: FeatureConfig | None = None) -> np.ndarray:
    """(N, F) log1p counts, shares, log1p trip rows/columns and totals, z-scored over all regions."""
    config = config or FeatureConfig()
    blocks = []
    for view in _views(source).values():
        if view.kind == "flow":
            blocks.extend(_flow_rows_columns(view, np.log1p, config))
            matrix = view.matrix
            out_total = np.asarray(matrix.sum(axis=1)).ravel()
            in_total = np.asarray(matrix.sum(axis=0)).ravel()
            blocks.append(np.log1p(np.stack([out_total, in_total], axis=1).astype(np.float64)))
        elif view.kind == "counts":
            counts = np.clip(_dense(view), 0, None)
            total = counts.sum(axis=1, keepdims=True)  # (N, 1)
            shares = np.divide(counts, total, out=np.zeros_like(counts), where=total > 0)
            blocks.extend([np.log1p(counts), shares, np.log1p(total)])
        else:  # shares and continuous views are used as they are
            blocks.append(_dense(view))
    return zscore(np.concatenate(blocks, axis=1))
