"""The region layer: polygons, ids, names, numeric fields, targets and classes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import shapely

from engine.data.dataset import View
from engine.data.layers import Report, numeric_field, read_vector, require_crs, require_field
from engine.errors import InputError

POLYGONAL = ("Polygon", "MultiPolygon")


@dataclass
class RegionLayer:
    """The regions as read: geometry in the layer's CRS and the per-region arrays."""

    frame: object  # GeoDataFrame, one row per region, in the layer's own CRS
    label: str  # how the layer is named in messages
    region_ids: np.ndarray  # (N,) ids from the id field, or 0..N-1
    id_field: str | None  # the id field, None for feature order
    names: np.ndarray | None = None  # (N,) str
    views: dict[str, View] = field(default_factory=dict)  # "fields" if numeric fields were asked
    targets: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (N,) float64, NaN = unknown
    classes: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (N,) labels
    # target -> (N,) float64 region weights (> 0 wherever the target is labelled)
    target_weights: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_regions(self) -> int:
        return int(len(self.region_ids))


def read_regions(path: str, layer: str | None = None, *, id_field: str | None = None,
                 name_field: str | None = None, fields: list[str] | None = None,
                 targets: list[str] | None = None, classes: list[str] | None = None,
                 target_weights: dict[str, str] | None = None,
                 report: Report | None = None) -> RegionLayer:
    """Read a polygon layer of regions (GeoPackage, Shapefile, GeoJSON).

    `target_weights`: target -> the numeric field holding its region weights (a rate's
    population...), which must be > 0 wherever the target has a value.

    Invalid polygons are repaired (make_valid) and counted in the report; non-polygon layers,
    empty layers, features without geometry, a missing CRS, null or duplicate ids, and missing,
    text or empty fields are InputErrors.
    """
    report = report or Report()
    frame, label = read_vector(path, layer, want=("polygon",))
    if not hasattr(frame, "geometry") or "geometry" not in getattr(frame, "columns", []):
        raise InputError("the region layer has no geometry (it is a table)", layer=label,
                         hint="Choose a polygon layer of regions.")
    if len(frame) == 0:
        raise InputError("the region layer is empty", layer=label,
                         hint="Choose a polygon layer that has features.")
    require_crs(frame, label)
    frame = frame.reset_index(drop=True)
    frame = _polygons_only(frame, label, report)

    ids, used_id = _region_ids(frame, id_field, label)
    names = None
    if name_field:
        column = require_field(frame, name_field, label, "region names")
        names = column.astype(object).where(column.notna(), "").astype(str).to_numpy()

    fields = list(fields or [])
    targets = list(targets or [])
    both = sorted(set(fields) & set(targets))
    if both:
        raise InputError(f"the field is both an input field and a target: {', '.join(both)}",
                         layer=label, field=both[0],
                         hint="A target must not be an input: remove it from the fields.")
    views = {}
    if fields:
        matrix = np.column_stack([numeric_field(frame, f, label, "input field") for f in fields])
        views["fields"] = View("fields", "continuous", matrix, list(fields))  # (N, F)
    target_arrays = {t: numeric_field(frame, t, label, "target") for t in targets}
    class_arrays = {c: _class_labels(frame, c, label, report) for c in (classes or [])}
    weights = {t: _target_weights(frame, t, weight_field, target_arrays, label)
               for t, weight_field in (target_weights or {}).items()}
    return RegionLayer(frame=frame, label=label, region_ids=ids, id_field=used_id, names=names,
                       views=views, targets=target_arrays, classes=class_arrays,
                       target_weights=weights)


def _target_weights(frame, target: str, weight_field: str, targets: dict[str, np.ndarray],
                    label: str) -> np.ndarray:
    """(N,) the region weights of `target` from `weight_field`, checked where it is labelled."""
    if target not in targets:
        raise InputError(f"a weight field is given for '{target}', which is not a target",
                         layer=label, field=weight_field,
                         hint=f"Choose '{target}' as a target too, or remove its weight field.")
    if weight_field == target:
        raise InputError(f"the target '{target}' cannot be its own weight", layer=label,
                         field=weight_field,
                         hint="Weight a rate by its population or a ratio by its expected count.")
    weights = numeric_field(frame, weight_field, label, "weight")
    labelled = np.isfinite(targets[target])
    bad = labelled & ~(np.isfinite(weights) & (weights > 0))
    if bad.any():
        rows = np.flatnonzero(bad)
        raise InputError(f"{len(rows)} region(s) with a value of '{target}' have no weight above "
                         f"0 (feature(s) {', '.join(map(str, rows[:5] + 1))})", layer=label,
                         field=weight_field,
                         hint="Fill in a weight > 0 for every region with a target value, or "
                         "run the target unweighted.")
    return weights


def _polygons_only(frame, label: str, report: Report):
    geometry = frame.geometry.values
    missing = shapely.is_missing(geometry) | shapely.is_empty(geometry)
    if missing.all():
        raise InputError("no feature of the region layer has a geometry", layer=label,
                         hint="Choose a polygon layer of regions.")
    if missing.any():
        rows = np.flatnonzero(missing)
        raise InputError(f"{len(rows)} region(s) have no geometry (feature(s) "
                         f"{', '.join(map(str, rows[:5] + 1))})", layer=label,
                         hint="Delete those features or draw their polygons.")
    types = set(shapely.get_type_id(geometry).tolist())
    polygonal = {3, 6}  # Polygon, MultiPolygon
    if not types <= polygonal:
        found = sorted(set(frame.geometry.geom_type.unique()) - set(POLYGONAL))
        raise InputError(f"the region layer must hold polygons, it holds {', '.join(found)}",
                         layer=label, hint="Choose a polygon layer, or buffer/convert it first.")
    invalid = ~shapely.is_valid(geometry)
    if invalid.any():
        repaired = geometry.copy()
        for i in np.flatnonzero(invalid):
            repaired[i] = _polygonal_part(shapely.make_valid(geometry[i]))
        frame = frame.set_geometry(type(frame.geometry.values)(repaired, crs=frame.crs))
        report.count("repaired", label, "invalid_geometries", int(invalid.sum()))
        report.warn(f"layer '{label}': {int(invalid.sum())} invalid polygon(s) were repaired "
                    "(make_valid); check them in QGIS (Vector > Geometry Tools > Check Validity)")
    return frame


def _polygonal_part(geom):
    """The polygons of a repaired geometry (make_valid may add lines or points)."""
    if geom.geom_type in POLYGONAL:
        return geom
    parts = [g for g in shapely.get_parts(geom) if g.geom_type in POLYGONAL]
    return shapely.union_all(parts) if parts else geom


def _region_ids(frame, id_field: str | None, label: str) -> tuple[np.ndarray, str | None]:
    if not id_field:
        return np.arange(len(frame), dtype=np.int64), None
    column = require_field(frame, id_field, label, "region id")
    if column.isna().any():
        rows = np.flatnonzero(column.isna().to_numpy())
        raise InputError(f"{len(rows)} region(s) have no id (feature(s) "
                         f"{', '.join(map(str, rows[:5] + 1))})", layer=label, field=id_field,
                         hint="Fill in every id, or leave the id field empty to use feature order.")
    duplicated = column[column.duplicated(keep=False)]
    if len(duplicated):
        examples = ", ".join(map(str, pd.unique(duplicated)[:5]))
        raise InputError(f"region ids are not unique ({examples} appear more than once)",
                         layer=label, field=id_field,
                         hint="Choose a field with one value per region (or none: feature order).")
    values = column.to_numpy()
    if pd.api.types.is_integer_dtype(column.dtype):
        return values.astype(np.int64), id_field
    if pd.api.types.is_float_dtype(column.dtype) and np.all(values == np.round(values)):
        return values.astype(np.int64), id_field
    return column.astype(str).to_numpy(dtype=object), id_field


def _class_labels(frame, name: str, label: str, report: Report) -> np.ndarray:
    column = require_field(frame, name, label, "class")
    if column.isna().all():
        raise InputError("the class field has no values", layer=label, field=name,
                         hint="Choose a field that is filled in.")
    if column.isna().any():
        report.warn(f"layer '{label}', field '{name}': {int(column.isna().sum())} region(s) have "
                    "no class; they count as the class 'none'")
        return column.astype(object).where(column.notna(), "none").astype(str).to_numpy()
    if pd.api.types.is_integer_dtype(column.dtype):
        return column.to_numpy().astype(np.int64)
    return column.astype(str).to_numpy()
