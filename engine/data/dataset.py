"""The region dataset: what every reader builds and every model reads.

Data flows one way: layers -> RegionDataset (views + spatial priors) -> SREL -> Prompt4RE ->
predictions and embeddings -> files. Row i of every array is region i, in the order of
`region_ids`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import scipy.sparse as sp

ViewKind = Literal["counts", "shares", "flow", "continuous"]


@dataclass
class View:
    """One view of the regions.

    kind:
      - "counts": non-negative counts per category (POIs per category, land-use points per class);
      - "shares": area shares per class (land-use polygons), rows sum to <= 1;
      - "flow": an N x N origin-destination matrix (row = origin), `matrix` is scipy.sparse CSR;
      - "continuous": any numbers (raster statistics, numeric fields); may hold NaN.
    """

    name: str  # "poi", "landuse", "mobility", "raster", "fields", ...
    kind: ViewKind
    matrix: np.ndarray | sp.csr_matrix  # (N, C) dense, or (N, N) sparse for "flow"
    columns: list[str]  # C column names ("poi_00", "residential", "band1_mean"...); flow: region ids

    @property
    def width(self) -> int:
        return int(self.matrix.shape[1])


@dataclass
class SpatialPriors:
    """Where the regions are and how they connect, without any N x N dense array.

    centroids are in a projected CRS (metres); `neighbours`/`neighbour_distance` hold the k
    nearest regions of each region (by centroid distance, or by mobility when there are no
    coordinates); `adjacency` holds polygon contiguity (shared boundary or corner).
    """

    centroids: np.ndarray | None  # (N, 2) float64, metres; None where no geometry exists
    crs: str | None  # the projected CRS of `centroids`, e.g. "EPSG:32618"
    adjacency: sp.csr_matrix  # (N, N) 0/1 symmetric, zero diagonal
    neighbours: np.ndarray  # (N, k) int64 indices of the k nearest regions, self excluded
    neighbour_distance: np.ndarray  # (N, k) float64 metres (or graph distance without coords)
    degree: np.ndarray  # (N,) int64 adjacency degree
    mobility_out: np.ndarray  # (N,) float64 outgoing trips (0 without a flow view)
    mobility_in: np.ndarray  # (N,) float64 incoming trips
    distance_quantiles: np.ndarray  # (B-1,) edges of the distance buckets, metres
    area: np.ndarray | None = None  # (N,) float64 square metres

    def pair_distance(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Centroid distances of the pairs (rows[i], cols[i]), in metres. No N x N array."""
        if self.centroids is None:
            raise ValueError("no centroids: use hop distances instead")
        d = self.centroids[rows] - self.centroids[cols]
        return np.sqrt((d * d).sum(axis=1))

    def distance_bucket(self, distance: np.ndarray) -> np.ndarray:
        """Bucket index 0..B-1 of each distance (quantile buckets over all region pairs)."""
        return np.searchsorted(self.distance_quantiles, distance, side="right")


@dataclass
class RegionDataset:
    """N regions with their views, targets and spatial priors."""

    region_ids: np.ndarray  # (N,) the ids from the id field, or 0..N-1 (feature order)
    views: dict[str, View]
    priors: SpatialPriors
    targets: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (N,) float64, NaN = unknown
    classes: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (N,) labels for NMI/ARI
    # target -> (N,) region weights (a rate's population...); targets without one are unweighted
    target_weights: dict[str, np.ndarray] = field(default_factory=dict)
    weight_fields: dict[str, str] = field(default_factory=dict)  # target -> its weight field
    names: np.ndarray | None = None  # (N,) str, a name or address per region, if the layer has one
    geometry: object | None = None  # geopandas GeoSeries in `crs` (None for benchmark folders)
    crs: str | None = None  # CRS of `geometry` (the region layer's own)
    source: dict = field(default_factory=dict)  # where it came from: {"regions": path, ...}
    report: dict = field(default_factory=dict)  # what was dropped, repaired, reprojected

    @property
    def n_regions(self) -> int:
        return int(len(self.region_ids))

    def summary(self) -> dict:
        """A JSON-able summary: regions, views and their widths, CRS, what was repaired."""
        return {
            "regions": self.n_regions,
            "views": {
                name: {"kind": v.kind, "width": v.width,
                       "nonzero": int(v.matrix.nnz if sp.issparse(v.matrix) else np.count_nonzero(np.nan_to_num(v.matrix))),
                       "total": float(v.matrix.sum() if sp.issparse(v.matrix) else np.nansum(v.matrix))}
                for name, v in self.views.items()
            },
            "targets": {
                name: {"labelled": int(np.isfinite(t).sum()),
                       "min": float(np.nanmin(t)) if np.isfinite(t).any() else None,
                       "max": float(np.nanmax(t)) if np.isfinite(t).any() else None,
                       **({"weight_field": self.weight_fields[name]}
                          if name in self.weight_fields else {})}
                for name, t in self.targets.items()
            },
            "classes": {name: int(len(np.unique(c))) for name, c in self.classes.items()},
            "crs": self.crs,
            "projected_crs": self.priors.crs,
            "source": self.source,
            "report": self.report,
        }
