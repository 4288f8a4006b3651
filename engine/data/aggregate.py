"""Points and land-use polygons aggregated per region: counts per category, area shares per class.

Every layer is reprojected into the regions' projected CRS first; points outside every region
are dropped and counted, a point on a shared boundary counts once (for the first region found).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import shapely

from engine.data.dataset import View
from engine.data.layers import Report, layer_label, read_vector, require_field, to_crs
from engine.errors import InputError


class RegionIndex:
    """The regions' polygons in a projected CRS with a spatial index, to locate things in them."""

    def __init__(self, geometry, crs, layer_crs=None) -> None:
        self.geometry = np.asarray(geometry)  # (N,) shapely polygons, projected CRS
        self.crs = crs  # pyproj CRS of `geometry`
        self.layer_crs = crs if layer_crs is None else layer_crs  # the region layer's own CRS
        self.tree = shapely.STRtree(self.geometry)
        self.area = shapely.area(self.geometry)  # (N,) square metres

    @property
    def n_regions(self) -> int:
        return len(self.geometry)

    def locate(self, points) -> np.ndarray:
        """Region index of each point, -1 outside every region."""
        points = np.asarray(points)
        where = np.full(len(points), -1, dtype=np.int64)
        valid = ~(shapely.is_missing(points) | shapely.is_empty(points))
        point_idx, region_idx = self.tree.query(points[valid], predicate="intersects")
        order = np.lexsort((region_idx, point_idx))
        point_idx, region_idx = point_idx[order], region_idx[order]
        first = np.unique(point_idx, return_index=True)[1]  # boundary points: lowest region only
        where[np.flatnonzero(valid)[point_idx[first]]] = region_idx[first]
        return where


def _spatial(frame, label: str, kind: str):
    if "geometry" not in getattr(frame, "columns", []):
        raise InputError(f"the layer has no geometry, {kind} were expected", layer=label,
                         hint="Choose a spatial layer.")
    if len(frame) == 0:
        raise InputError("the layer is empty", layer=label, hint="Choose a layer with features.")


def _categories(column: pd.Series) -> tuple[np.ndarray, list[str]]:
    """(code per row, -1 for null; category names in natural order: numbers numerically)."""
    present = column.dropna()
    values = pd.unique(present)
    try:
        order = sorted(values)
    except TypeError:
        order = sorted(values, key=str)
    codes = pd.Categorical(column, categories=order).codes.astype(np.int64)
    return codes, [str(v) for v in order]


def point_counts(path: str, layer: str | None, regions: RegionIndex, *, category_field: str | None,
                 view: str, report: Report) -> View:
    """Counts per category per region (N, C) from a point layer; one column without a category."""
    frame, label = read_vector(path, layer, want=("point",),
                               columns=[category_field] if category_field else [])
    return _point_counts(frame, label, regions, category_field=category_field, view=view,
                         report=report)


def _point_counts(frame, label: str, regions: RegionIndex, *, category_field: str | None,
                  view: str, report: Report) -> View:
    _spatial(frame, label, "points")
    frame = to_crs(frame, regions.crs, label, report, regions.layer_crs)
    types = set(frame.geometry.geom_type.dropna().unique())
    if types - {"Point", "MultiPoint"}:
        raise InputError(f"the layer must hold points, it holds {', '.join(sorted(types))}",
                         layer=label, hint="Choose a point layer (or convert with Centroids).")
    points = frame.geometry.values
    if "MultiPoint" in types:  # a multipoint counts once, at its first point
        multi = shapely.get_type_id(points) == 4
        points = np.asarray(points).copy()
        points[multi] = shapely.get_geometry(points[multi], 0)
    if category_field:
        codes, columns = _categories(require_field(frame, category_field, label, "category"))
    else:
        codes, columns = np.zeros(len(frame), dtype=np.int64), ["count"]
    where = regions.locate(points)
    null = codes < 0
    outside = (where < 0) & ~null
    if null.any():
        report.count("dropped", label, "null_category", int(null.sum()))
        report.warn(f"layer '{label}': {int(null.sum())} point(s) without a value in "
                    f"'{category_field}' were left out")
    if outside.any():
        report.count("dropped", label, "outside_regions", int(outside.sum()))
        report.warn(f"layer '{label}': {int(outside.sum())} of {len(frame)} point(s) lie outside "
                    "every region and were left out")
    keep = (where >= 0) & ~null
    if not keep.any():
        raise InputError("no point of the layer lies inside a region", layer=label,
                         hint="Check that the points and the regions cover the same area.")
    c = len(columns)
    flat = np.bincount(where[keep] * c + codes[keep], minlength=regions.n_regions * c)
    matrix = flat.reshape(regions.n_regions, c).astype(np.float64)  # (N, C)
    return View(view, "counts", matrix, columns)


def landuse_view(path: str, layer: str | None, regions: RegionIndex, *, class_field: str | None,
                 view: str, report: Report) -> View:
    """Area share per class per region from polygons ("shares"), or counts from points."""
    if not class_field:
        raise InputError("a land-use layer needs a class field", layer=layer_label(path, layer),
                         hint="Write the source as PATH|class=FIELD (the land-use class).")
    frame, label = read_vector(path, layer, want=("polygon", "point"), columns=[class_field])
    _spatial(frame, label, "land-use polygons or points")
    require_field(frame, class_field, label, "land-use class")
    types = set(frame.geometry.geom_type.dropna().unique())
    if types <= {"Point", "MultiPoint"}:
        return _point_counts(frame, label, regions, category_field=class_field, view=view,
                             report=report)
    if not types <= {"Polygon", "MultiPolygon"}:
        raise InputError(f"the land-use layer must hold polygons or points, it holds "
                         f"{', '.join(sorted(types))}", layer=label,
                         hint="Choose a polygon or point layer.")
    frame = to_crs(frame, regions.crs, label, report, regions.layer_crs)
    codes, columns = _categories(frame[class_field])
    geometry = frame.geometry.values
    invalid = ~shapely.is_valid(geometry)
    if invalid.any():
        geometry = geometry.copy()
        geometry[invalid] = shapely.make_valid(geometry[invalid])
        report.count("repaired", label, "invalid_geometries", int(invalid.sum()))
        report.warn(f"layer '{label}': {int(invalid.sum())} invalid polygon(s) were repaired")
    keep = codes >= 0
    if (~keep).any():
        report.count("dropped", label, "null_class", int((~keep).sum()))
        report.warn(f"layer '{label}': {int((~keep).sum())} polygon(s) without a class were "
                    "left out")
    geometry, codes = np.asarray(geometry)[keep], codes[keep]
    part_idx, region_idx = regions.tree.query(geometry, predicate="intersects")
    if len(part_idx) == 0:
        raise InputError("no land-use polygon overlaps a region", layer=label,
                         hint="Check that the land use and the regions cover the same area.")
    overlap = shapely.area(shapely.intersection(geometry[part_idx], regions.geometry[region_idx]))
    c = len(columns)
    flat = np.bincount(region_idx * c + codes[part_idx], weights=overlap,
                       minlength=regions.n_regions * c)
    area = flat.reshape(regions.n_regions, c)  # (N, C) square metres
    shares = np.divide(area, regions.area[:, None], out=np.zeros_like(area),
                       where=regions.area[:, None] > 0)
    over = shares.sum(axis=1) > 1.0 + 1e-6
    if over.any():
        report.warn(f"layer '{label}': land-use polygons overlap in {int(over.sum())} region(s) "
                    "(shares sum above 1); shares were scaled to sum to 1 there")
        shares[over] /= shares[over].sum(axis=1, keepdims=True)
    return View(view, "shares", shares, columns)
